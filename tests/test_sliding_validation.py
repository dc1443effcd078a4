"""Sliding-window validation blends what evaluate and predict blend (probabilities), so the
score validation records is the score evaluate gives the same checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from seglab.tasks import get_task
from tests.workflow_helpers import finish, seglab_process, task_data

SLIDING = ["sliding_window.enabled=true", "sliding_window.in_validation=true", "sliding_window.tile=[16, 16]",
           "sliding_window.overlap=0.5", "sliding_window.tiles_per_batch=2"]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_logits_of_probabilities_give_back_the_probabilities(task):
    t = get_task(task)
    logits = torch.randn(2, 4, 5, 5) * 3
    probs = t.probabilities(logits)
    assert torch.allclose(t.probabilities(t.logits(probs)), probs, atol=1e-5)


def test_sliding_validation_scores_what_evaluate_scores(tmp_path):
    config, overrides = task_data("multilabel", tmp_path / "data")
    run = tmp_path / "run"
    common = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.progress_bar=false", "logging.loggers=[]", "schedule.warmup_epochs=0",
              "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}"]
    finish(seglab_process("train", str(config), *overrides, *common, *SLIDING, "--out", str(run)))
    out = finish(seglab_process("evaluate", str(run), "--no-tta"))
    scores = json.loads(out[out.index("{"):])
    best = json.loads((run / "metrics.json").read_text())
    # A 32 px image in 16 px tiles at overlap 0.5: nine tiles, blended; a U-Net's tile outputs
    # differ at the borders, so blending logits instead of probabilities would score otherwise.
    assert scores["dice"] == pytest.approx(best["dice"], abs=1e-9)
    for name, value in best["per_class_dice"].items():
        assert scores["per_class_dice"][name] == pytest.approx(value, abs=1e-9)
