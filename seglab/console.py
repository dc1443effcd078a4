"""The console, one clean line per event, and RUN/train.log keeping it.

- Lightning installs its own handler on the `lightning` logger *and* lets records reach
  the root logger: every line was printed twice. Its handler is removed, so its lines go
  through the root handler like ours.
- Lines that tell a seglab user nothing are dropped: the cloud-logger advert, and
  "`weights_only` was not set, defaulting to `False`" at every save (it is about what a
  checkpoint *stores*: the full training state, needed by --resume; seglab always *loads*
  weights-only). Lightning's deprecation warnings are about its own internals.
- `run_log(run_dir)` copies every console line of a training run into RUN/train.log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator

NOISE = (
    "💡 Tip:",                                  # the cloud-logger advert
    "`weights_only` was not set",              # at every save; see above
    "was configured so 100% of the batches",    # limit_*_batches=1.0: the default, nothing to say
    "to estimate number of stepping batches",
)


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in NOISE)


def setup_console(level: int = logging.INFO) -> None:
    """Root logging to stderr as bare lines, noise dropped (Lightning's handler is removed by
    `quiet_lightning` where training starts: importing Lightning here would slow `--help`)."""
    logging.basicConfig(level=level, format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, DropNoise) for f in handler.filters):
            handler.addFilter(DropNoise())
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*(is deprecated|will be removed).*")


def quiet_lightning() -> None:
    """Lightning's records reach the root handler once (its own handler removed)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


@contextlib.contextmanager
def run_log(run_dir: str | Path, name: str = "train.log") -> Iterator[Path]:
    """Every log line while the block runs is appended to RUN/name with a timestamp (a
    resumed run adds to the same file)."""
    path = Path(run_dir) / name
    if any(os.environ.get(key, "0") != "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        yield path  # one writer per run: the other processes of a multi-GPU run keep their console only
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(DropNoise())
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield path
    except BaseException as e:  # what stopped the run is kept beside its log (the console shows it once, from the CLI)
        handler.emit(logging.makeLogRecord({"msg": f"stopped: {type(e).__name__}: {e}", "levelno": logging.ERROR,
                                            "levelname": "ERROR"}))
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
