"""The dataset-level metric under DDP equals the single-process one exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.data.synth.coco import make_coco_dataset

HERE = Path(__file__).resolve().parent


def validate(root: Path, out: Path, devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HERE / "ddp_validate.py"), str(root), str(out), str(devices)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_gloo_processes_give_the_single_process_metric(tmp_path):
    # 5 validation images: not a multiple of 2, so a padding sampler would count one twice
    root = tmp_path / "data"
    make_coco_dataset(root, n_train=4, n_val=5, n_test=1, size=64, seed=3)
    single = validate(root, tmp_path / "one.json", 1)
    double = validate(root, tmp_path / "two.json", 2)
    assert double["world_size"] == 2 and single["world_size"] == 1
    assert sum(map(sum, single["confusion_matrix"])) == 5 * 64 * 64
    assert double["confusion_matrix"] == single["confusion_matrix"]
    assert double["mIoU"] == single["mIoU"]
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
