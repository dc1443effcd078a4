"""The README's quickstart on the built-in data, run as written: the slow test runs every
line in a fresh process exactly as printed; the fast one runs the same lines in-process
on a smaller data set and a 2-epoch run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.cli import main
from tests.workflow_helpers import ROOT

# Only what makes the fast variant fast: smaller images, fewer of them, one short epoch
# without validation pictures (the report's pictures have their own tests).
FAST = {
    "data synth": ["--n-train", "8", "--n-val", "3", "--n-test", "2", "--size", "32"],
    "train": ["trainer.max_epochs=1", "schedule.warmup_epochs=0", "trainer.limit_train_batches=1", "data.batch_size=4",
              "logging.viz_every_n_epochs=0"],
}


def quickstart_commands() -> list[list[str]]:
    """The argument lists of the README block between the quickstart markers."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart:begin -->\s*```bash\n(.*?)```\s*<!-- quickstart:end -->", readme, re.S)
    assert block, "README: the quickstart block (between its markers) is missing"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == ".venv/bin/seglab", line
            commands.append(words[1:])
    return commands


def workdir(tmp_path: Path) -> Path:
    """A folder like a fresh clone's root: configs/ there, nothing else."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    return tmp_path


def check_outputs(root: Path) -> None:
    run = root / "runs" / "demo"
    for path in ("config.yaml", "labels.json", "metrics.json", "train.log", "checkpoints/best.ckpt",
                 "submission.csv", "submission.inputs.json", "report/index.html"):
        assert (run / path).is_file(), path
    assert list((run / "pred_png").rglob("*.png")) and list((run / "viz" / "pred_val").glob("pred_*.png"))
    assert 0 <= json.loads((run / "metrics.json").read_text())["mIoU"] <= 1


def test_quickstart_fast(tmp_path, monkeypatch, capsys):
    root = workdir(tmp_path)
    monkeypatch.chdir(root)
    for words in quickstart_commands():
        extra = next((v for k, v in FAST.items() if " ".join(words).startswith(k)), [])
        rc = main(words + extra)
        assert rc == 0, (words, capsys.readouterr().err[-2000:])
    check_outputs(root)


@pytest.mark.slow
def test_quickstart_as_written(tmp_path):
    root = workdir(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for words in quickstart_commands():
        proc = subprocess.run([sys.executable, "-m", "seglab", *words], cwd=root, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, (words, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr
    check_outputs(root)
