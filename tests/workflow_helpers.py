"""Shared by the workflow tests: tiny configs and *constructed* runs (a run folder whose
checkpoint holds a freshly built model, no training), so equalities can be checked in
seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from seglab.config import load_config, to_yaml
from seglab.core.module import LabModule
from seglab.data import resolve_labels
from seglab.data.synth.coco import make_coco_dataset
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from seglab.data.synth.polygons import make_polygon_dataset
from seglab.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]

# The tests train and checkpoint dozens of segmentation models. timm's test_resnet (2.3M
# parameters as a Unet, against resnet18's 14.3M) makes each checkpoint 6x smaller and each
# step about 3x faster; what the tests check does not depend on the encoder's size.
TEST_ENCODER = "tu-test_resnet"


def tiny_config(synth_root, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={synth_root}", "data.batch_size=4", f"model.encoder={TEST_ENCODER}",
        "trainer.max_epochs=1", "trainer.progress_bar=false", "logging.viz_every_n_epochs=0",
        "logging.loggers=[]", "optim.lr=0.003", "schedule.warmup_epochs=0", *extra,
    ])


def constructed_run(run_dir: Path, cfg, seed: int = 0) -> Path:
    """A run folder (config.yaml, labels.json, checkpoints/best.ckpt) holding an untrained model."""
    labels = resolve_labels(cfg)
    torch.manual_seed(seed)
    module = LabModule(cfg, labels)
    write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_json(run_dir / "labels.json", labels.to_json())
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    meta = {"classes": list(labels.classes), "task": cfg.task, "arch": cfg.model.arch, "encoder": cfg.model.encoder}
    torch.save({"state_dict": module.state_dict(), "seglab": meta}, run_dir / "checkpoints" / "best.ckpt")
    return run_dir


TASKS = ("multiclass", "multilabel", "classification")


def task_data(task: str, root: Path) -> tuple[Path, list[str]]:
    """The task's tiny data set, written under root, and (config, overrides) that train on it:
    multiclass on COCO shapes, multilabel on hand-bone-layout polygons, classification on
    mask-status faces."""
    if task == "multiclass":
        make_coco_dataset(root, n_train=8, n_val=3, n_test=2, size=32, seed=0)
        return ROOT / "configs" / "demo.yaml", [f"data.root={root}", "data.batch_size=2", f"model.encoder={TEST_ENCODER}",
                                                "logging.viz_every_n_epochs=2"]
    if task == "multilabel":
        make_polygon_dataset(root, n_train_ids=4, n_val_ids=2, n_test_ids=1, size=32, seed=0)
        return ROOT / "configs" / "demo_multilabel.yaml", [f"data.root={root / 'train'}", "data.batch_size=2",
                                                          f"model.encoder={TEST_ENCODER}", "logging.viz_every_n_epochs=0"]
    make_maskstatus_dataset(root, n_train=8, n_eval=2, size=32, seed=0)
    return ROOT / "configs" / "demo_cls.yaml", [f"data.root={root}", "data.image_size=[32, 32]", "data.batch_size=8",
                                                "kfold.folds=2", "logging.viz_every_n_epochs=2"]


# ------------------------------------------------------------------ real processes, killed for real

# A run identical to `python -m seglab`, except that it stops dead (sleeps) right after
# writing its KILL_AT_STEP-th checkpoint, so the test's SIGKILL always lands at that point.
HANGING_RUN = """
import sys, time
from seglab import cli
from seglab.core.checkpoints import ExactResume

save = ExactResume.on_train_batch_end

def save_then_hang(self, trainer, *args):
    save(self, trainer, *args)
    if trainer.global_step == KILL_AT_STEP and self._saved_step == KILL_AT_STEP:
        print("checkpoint written, hanging", flush=True)
        time.sleep(600)

ExactResume.on_train_batch_end = save_then_hang
sys.exit(cli.main(sys.argv[1:]))
"""


def seglab_process(*args: str, script: str | None = None) -> subprocess.Popen:
    """`python -m seglab ...` in a fresh process with one thread: runs compared bit for bit
    must compute alike."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "seglab", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def train_and_kill(config_args: list[str], out: Path, kill_at: int) -> None:
    """`seglab train CONFIG_ARGS --out OUT`, SIGKILLed right after its `kill_at`-th checkpoint."""
    proc = seglab_process("train", *config_args, "--out", str(out), script=HANGING_RUN.replace("KILL_AT_STEP", str(kill_at)))
    deadline = time.time() + 300
    for line in proc.stdout:  # wait for the hang marker, then kill hard
        if "checkpoint written, hanging" in line or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
