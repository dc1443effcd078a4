"""`seglab train --resume RUN key=value`: what may change when a run continues, and the
record of it. The run's config.yaml always describes what the run is now
(`seglab train RUN/config.yaml` repeats it; `runs diff` sees the change); every resume
is one line of RUN/resumes.jsonl (when, from which epoch, which overrides)."""

from __future__ import annotations

import time
from pathlib import Path

from seglab.config import load_config
from seglab.errors import ConfigError, SeglabError

RESUMES_FILE = "resumes.jsonl"

# Keys the checkpoint fixes: its weights were built for this network, task and class list.
FIXED_KEYS = {
    "task": "the task",
    "model": "the network the checkpoint's weights were built for",
    "data.classes": "the class list (the output channels)",
    "data.coco.category_map": "the category -> class map (what each output channel means)",
    "data.labelmap.mask_value_map": "the pixel value -> class map (what each output channel means)",
    "data.remap": "the class list after merging (the output channels)",
    "data.format": "the data format (the label space)",
}


def fixed_override(text: str) -> tuple[str, str] | None:
    """(key, why) when the override `key=value` changes something the checkpoint fixes."""
    key = text.split("=", 1)[0].strip()
    for fixed, why in FIXED_KEYS.items():
        if key == fixed or key.startswith(fixed + ".") or fixed.startswith(key + "."):
            return key, why
    return None


def epochs_done(checkpoint: dict) -> int:
    """Training epochs completed in a Lightning checkpoint."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(checkpoint.get("epoch", -1)) + 1


def resume_config(run_dir: str | Path, overrides: list[str]):
    """The run's config with the overrides, after refusing what cannot change and a run that
    has nothing left to train."""
    from seglab.core.checkpoints import load_checkpoint_file

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SeglabError(f"--resume {run_dir}: not a run folder (no config.yaml); give the folder `seglab train --out` wrote")
    for text in overrides:
        fixed = fixed_override(text)
        if fixed:
            raise ConfigError(f"--resume {run_dir}: {fixed[0]} cannot change in a resumed run ({fixed[1]}); "
                              f"start a new run instead: seglab train {run_dir / 'config.yaml'} --out NEW_RUN {text}")
    cfg = load_config(run_dir / "config.yaml", overrides, saved=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise SeglabError(f"--resume {run_dir}: nothing to resume (no checkpoints/last.ckpt); start it again with "
                          f"seglab train {run_dir / 'config.yaml'} --out NEW_RUN")
    done = epochs_done(load_checkpoint_file(last))
    if done >= cfg.trainer.max_epochs:
        raise SeglabError(f"--resume {run_dir}: the run is finished ({done} of trainer.max_epochs={cfg.trainer.max_epochs} epochs); "
                          f"to train it longer: seglab train --resume {run_dir} trainer.max_epochs={done + max(done, 1)}")
    return cfg, done


def record_resume(run_dir: Path, overrides: list[str], from_epoch: int) -> None:
    from seglab.io import append_jsonl

    append_jsonl(Path(run_dir) / RESUMES_FILE, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_epoch": from_epoch,
                                                "overrides": list(overrides)})
