"""Exact resume: a run killed with SIGKILL mid-epoch and resumed with `--resume` ends
with the same weights and metrics as an uninterrupted run with the same seed.

Three real `python -m seglab train` processes on CPU: an uninterrupted run, a run that
is SIGKILLed right after its 6th checkpoint (mid-epoch: 4 steps per epoch), and its
resume. The model has dropout, so the saved random state matters too.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from seglab.data.synth.coco import make_coco_dataset

ROOT = Path(__file__).resolve().parents[1]
KILL_AT_STEP = 6  # epoch 1, second of its four batches
STEPS_PER_EPOCH = 4

OVERRIDES = [
    "data.batch_size=2", "data.num_workers=0", "model.arch=deeplabv1", "model.params={width: 0.0625}",
    "trainer.max_epochs=3", "trainer.deterministic=true", "trainer.checkpoint_every_n_steps=1",
    "trainer.progress_bar=false", "logging.viz_every_n_epochs=0", "logging.loggers=[]",
    "schedule.warmup_epochs=1", "optim.lr=0.01",
]

# The run to be killed: identical to `python -m seglab`, except that it stops dead
# (sleeps) right after writing its KILL_AT_STEP-th checkpoint, so the test's SIGKILL
# always lands at the same point mid-epoch.
HANGING_RUN = f"""
import sys, time
from seglab import cli
from seglab.training import ExactResume

save = ExactResume.on_train_batch_end

def save_then_hang(self, trainer, *args):
    save(self, trainer, *args)
    if trainer.global_step == {KILL_AT_STEP} and self._saved_step == {KILL_AT_STEP}:
        print("checkpoint written, hanging", flush=True)
        time.sleep(600)

ExactResume.on_train_batch_end = save_then_hang
sys.exit(cli.main(sys.argv[1:]))
"""


def seglab(*args, script: str | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "seglab", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    data = tmp_path / "data"
    make_coco_dataset(data, n_train=8, n_val=2, n_test=1, size=32, seed=0)
    config = [str(ROOT / "configs" / "demo.yaml"), f"data.root={data}", f"data.cache_dir={tmp_path / 'cache'}", *OVERRIDES]

    full, killed = tmp_path / "full", tmp_path / "killed"
    finish(seglab("train", *config, "--out", str(full)))

    proc = seglab("train", *config, "--out", str(killed), script=HANGING_RUN)
    deadline = time.time() + 300
    for line in proc.stdout:  # wait for the hang marker, then kill hard
        if "checkpoint written, hanging" in line or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    last = killed / "checkpoints" / "last.ckpt"
    at_kill = tensors(last)
    assert at_kill["global_step"] == KILL_AT_STEP and KILL_AT_STEP % STEPS_PER_EPOCH != 0  # mid-epoch
    # A kill during a checkpoint write leaves a temporary file beside it: resume must not care.
    (last.parent / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")

    finish(seglab("train", "--resume", str(killed)))

    a, b = tensors(full / "checkpoints" / "last.ckpt"), tensors(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 3 * STEPS_PER_EPOCH
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for name in sa:
            assert torch.equal(torch.as_tensor(sa[name]), torch.as_tensor(sb[name])), name
    best_a, best_b = tensors(full / "checkpoints" / "best.ckpt"), tensors(killed / "checkpoints" / "best.ckpt")
    assert all(torch.equal(best_a["state_dict"][k], best_b["state_dict"][k]) for k in best_a["state_dict"])
    assert json.loads((full / "metrics.json").read_text()) == json.loads((killed / "metrics.json").read_text())
    assert (full / "history.jsonl").read_text() == (killed / "history.jsonl").read_text()
