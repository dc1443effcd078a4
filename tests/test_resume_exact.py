"""Exact resume: a run killed with SIGKILL mid-epoch and resumed with `--resume` ends
with the same weights, optimiser state, best checkpoint, metrics and history as an
uninterrupted run with the same seed.

Three real `python -m seglab train` processes on CPU per task: an uninterrupted run, a run
that is SIGKILLed right after its 6th checkpoint (mid-epoch: 4 steps per epoch), and its
resume. Segmentation: a DeepLab with dropout, so the saved random state matters too.
Classification goes through the same loaders and ExactResume; its run also has dropout,
mixup/cutmix (drawn from the global NumPy state) and a UDA loader of unlabelled images
beside the labelled one, whose positions must come back too.
"""

import json
from pathlib import Path

import pytest
import torch

from seglab.data.synth.coco import make_coco_dataset
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from tests.workflow_helpers import ROOT, finish, seglab_process, tensors, train_and_kill

KILL_AT_STEP = 6  # epoch 1, second of its four batches
STEPS_PER_EPOCH = 4

COMMON = [
    "data.num_workers=0", "trainer.max_epochs=3", "trainer.deterministic=true", "trainer.checkpoint_every_n_steps=1",
    "trainer.progress_bar=false", "logging.viz_every_n_epochs=0", "logging.loggers=[]",
    "schedule.warmup_epochs=1", "optim.lr=0.01",
]


def segmentation_data(root: Path) -> list[str]:
    make_coco_dataset(root, n_train=8, n_val=2, n_test=1, size=32, seed=0)  # 8 images, batches of 2
    return [str(ROOT / "configs" / "demo.yaml"), f"data.root={root}", "data.batch_size=2", "model.arch=deeplabv1",
            "model.params={width: 0.0625}"]


def classification_data(root: Path) -> list[str]:
    # 5 persons x 7 images; fold 0 of 5 (one person) validates, 28 images train in batches of 7
    make_maskstatus_dataset(root, n_train=5, n_eval=1, size=32, seed=0)
    return [str(ROOT / "configs" / "demo_cls.yaml"), f"data.root={root}", "data.image_size=[32, 32]", "data.batch_size=7",
            "kfold.folds=5", "data.fold=0", "model.encoder=test_resnet", "classification.drop_rate=0.3",
            "classification.mixup_alpha=0.4", "classification.cutmix_alpha=1.0",
            "classification.uda.weight=1.0", "classification.uda.threshold=0.0", "classification.uda.batch_size=3"]


DATA = {"multiclass": segmentation_data, "classification": classification_data}

@pytest.mark.parametrize("task", list(DATA))
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(task, tmp_path):
    config = [*DATA[task](tmp_path / "data"), f"data.cache_dir={tmp_path / 'cache'}", *COMMON]

    full, killed = tmp_path / "full", tmp_path / "killed"
    finish(seglab_process("train", *config, "--out", str(full)))
    train_and_kill(config, killed, KILL_AT_STEP)
    last = killed / "checkpoints" / "last.ckpt"
    at_kill = tensors(last)
    assert at_kill["global_step"] == KILL_AT_STEP and KILL_AT_STEP % STEPS_PER_EPOCH != 0  # mid-epoch
    # A kill during a checkpoint write leaves a temporary file beside it: resume must not care.
    (last.parent / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")

    finish(seglab_process("train", "--resume", str(killed)))

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
