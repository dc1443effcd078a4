"""The dataset-level metric under DDP equals the single-process one exactly, for every task."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_helpers import TASKS, task_data

HERE = Path(__file__).resolve().parent
PLAIN_LOSS = {"multiclass": "loss=[{name: ce}]", "multilabel": "loss=[{name: bce}]", "classification": "loss=[{name: ce}]"}


def validate(config: Path, overrides: list[str], out: Path, devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HERE / "ddp_validate.py"), str(config), str(out), str(devices), *overrides],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("task", TASKS)
def test_two_gloo_processes_give_the_single_process_metric(task, tmp_path):
    config, overrides = task_data(task, tmp_path / "data")
    # An odd number of validation samples: a padding sampler would count one twice.
    overrides += [PLAIN_LOSS[task], f"data.cache_dir={tmp_path / 'cache'}", "data.val_batch_size=1"]
    single = validate(config, overrides, tmp_path / "one.json", 1)
    double = validate(config, overrides, tmp_path / "two.json", 2)
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert double["state"] == single["state"]  # the summed confusion matrix / Dice sums, exactly
    for key, value in single["scores"].items():
        assert double["scores"][key] == pytest.approx(value, rel=1e-5 if key == "loss" else 0), key
