"""To add a task: subclass Task, register it; no other module changes.

A fourth task, registered here at runtime and nowhere else: a second image-classification
task under another name, with its own options section (`image_classes:`) and a metric whose
state is *gathered* (every image's decision and class, as COCO mAP gathers detections), not
summed. The schema accepts it, it trains one tiny epoch and evaluates to the score
validation gave, k-fold pools its folds' gathered states into the out-of-fold score, and two
DDP processes gather the single process's state."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from pydantic import Field

from seglab.config import load_config
from seglab.core.run import load_run
from seglab.core.training import train
from seglab.errors import ConfigError
from seglab.inference.ensemble import Member
from seglab.inference.predict import evaluate
from seglab.kfold import run_kfold
from seglab.task import TASKS
from seglab.tasks.classification.options import ClassificationOptions
from seglab.tasks.classification.task import ClassificationTask
from tests.workflow_helpers import ROOT, task_data


class GatheredAccuracy:
    """Accuracy from every image's (decision, class), gathered across processes."""

    def __init__(self, num_classes: int):
        self.num_classes, self.pairs = num_classes, []

    def reset(self) -> None:
        self.pairs = []

    def to(self, device) -> "GatheredAccuracy":
        return self

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.pairs += zip(pred.tolist(), target.tolist())

    def reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, self.pairs)
            self.pairs = [pair for part in parts for pair in part]

    def state(self) -> dict:
        return {"pairs": sorted(list(p) for p in self.pairs)}

    def add_state(self, state: dict) -> None:
        self.pairs += [tuple(p) for p in state["pairs"]]

    def compute(self, class_names=None) -> dict:
        names = list(class_names or range(self.num_classes))
        hits = {c: [p == t for p, t in self.pairs if t == c] for c in range(self.num_classes)}
        per_class = {str(names[c]): (sum(h) / len(h) if h else None) for c, h in hits.items()}
        accuracy = sum(p == t for p, t in self.pairs) / len(self.pairs) if self.pairs else math.nan
        return {"accuracy": accuracy, "per_class_accuracy": per_class, "images": len(self.pairs)}


class ImageClassesOptions(ClassificationOptions):
    val_loss: bool = Field(True, description="report the validation loss; false: the task has none")


class ImageClassesTask(ClassificationTask):
    name = "image_classes"
    options = ImageClassesOptions
    scalar_metrics = ("accuracy",)
    per_class_key = "per_class_accuracy"
    per_class_log = "val_acc"
    default_monitor = "accuracy"

    def defaults(self, cfg):
        return {**super().defaults(cfg), "eval.monitor": self.default_monitor}

    def metric(self, labels, device=None):
        return GatheredAccuracy(labels.num_classes)

    def metric_names(self, labels):
        return self.scalar_metrics

    def format_table(self, scores, title=""):
        return f"{title}\naccuracy {scores['accuracy']:.4f} over {scores['images']} images"

    def history_extra(self, metric) -> dict:
        return {}

    def validation_loss(self, module, logits, target):
        return super().validation_loss(module, logits, target) if self.options_in(module.cfg).val_loss else None


@pytest.fixture
def fourth_task(monkeypatch):
    """ImageClassesTask registered for one test (the registry as it was afterwards)."""
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))
    TASKS.register("image_classes")(ImageClassesTask)


def image_classes_config(tmp_path, *extra):
    config, overrides = task_data("classification", tmp_path / "data")
    return load_config(config, overrides + [
        "task=image_classes", "classification=null", "image_classes.val_loss=false", "trainer.max_epochs=1",
        "trainer.progress_bar=false", "trainer.deterministic=true", "logging.loggers=[]", "logging.viz_every_n_epochs=0",
        "schedule.warmup_epochs=0", "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_the_schema_takes_the_registered_task_and_its_own_options(fourth_task, tmp_path):
    cfg = image_classes_config(tmp_path)
    assert cfg.task == "image_classes" and cfg.eval.monitor == "accuracy" and cfg.model.arch == "classifier"
    assert cfg.image_classes.val_loss is False and cfg.task_options.head == "linear"
    with pytest.raises(ConfigError, match=r"image_classes.val_loss: Input should be a valid boolean"):
        image_classes_config(tmp_path, "image_classes.val_loss=maybe")
    with pytest.raises(ConfigError, match=r"classification: options of the task classification, read only when task is classification"):
        image_classes_config(tmp_path, "classification={head: arcface}")


def test_it_trains_evaluates_and_pools_its_folds(fourth_task, tmp_path):
    cfg = image_classes_config(tmp_path)
    run = tmp_path / "run"
    best = train(cfg, run)
    assert best["monitor"] == "accuracy" and 0 <= best["accuracy"] <= 1 and best["val_loss"] is None  # no validation loss
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["val_loss"] is None and history[-1]["per_class_accuracy"]
    scores, metric = evaluate([Member(load_run(run, device="cpu"))], "val")
    assert scores["accuracy"] == pytest.approx(best["accuracy"], abs=1e-9)
    assert len(metric.state()["pairs"]) == scores["images"] > 0

    summary = run_kfold(cfg, tmp_path / "kf")  # kfold.folds=2
    pooled = summary["oof"]["metric_state"]["pairs"]
    folds = [json.loads((tmp_path / "kf" / f"fold_{k}" / "kfold_state.json").read_text()) for k in range(2)]
    assert sorted(pooled) == sorted(p for f in folds for p in f["metric_state"]["pairs"])  # every held-out image once
    assert len(pooled) == sum(f["n_val"] for f in folds)
    assert summary["oof"]["accuracy"] == pytest.approx(sum(p == t for p, t in pooled) / len(pooled), abs=1e-12)


DDP_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from seglab.task import TASKS
from tests.test_fourth_task import ImageClassesTask
from tests.ddp_validate import main

TASKS.register("image_classes")(ImageClassesTask)
main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
"""


def test_two_ddp_processes_gather_the_single_process_state(tmp_path):
    config, overrides = task_data("classification", tmp_path / "data")
    script = tmp_path / "ddp_image_classes.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT)))
    overrides += ["task=image_classes", "classification=null", "loss=[{name: ce}]", "data.val_batch_size=1",
                  f"data.cache_dir={tmp_path / 'cache'}"]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"{devices}.json"
        proc = subprocess.run([sys.executable, str(script), str(config), str(out), str(devices), *overrides],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.loads(out.read_text())
    assert results[2]["world_size"] == 2 and results[2]["state"] == results[1]["state"]
    assert results[2]["scores"]["accuracy"] == results[1]["scores"]["accuracy"]
