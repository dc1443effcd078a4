"""`seglab tune-postprocess`: per-class steps chosen from data, saved in the run, used by
evaluate (which then reports the figure it printed), for both segmentation tasks."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import PostprocessConfig, load_config
from seglab.data.labels import LabelSpec
from seglab.inference.postprocess import read_plan
from seglab.kinds import target_kind
from seglab.inference.tune_postprocess import Decisions, search_plan
from seglab.errors import SeglabError
from seglab.tasks import get_task
from tests.workflow_helpers import constructed_run, task_data


def cli(*args) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


def test_the_search_keeps_largest_component_only_where_it_raises_that_class_score():
    """Class a: one true blob and a false speck (largest component helps). Class b: two true
    blobs, predicted right (largest component would drop one: it must not be kept)."""
    gt = np.zeros((2, 20, 20), bool)
    gt[0, 2:10, 2:10] = True
    gt[1, 2:6, 12:18] = gt[1, 12:18, 12:18] = True
    pred = gt.copy()
    pred[0, 15, 3] = True                      # a speck of class a
    labels = LabelSpec(("a", "b"), 255, {}, "binary_masks")
    decisions = Decisions()
    decisions.add(torch.as_tensor(pred[None]), torch.as_tensor(gt[None]))
    plan, start = search_plan(decisions, get_task("multilabel"), labels, kernels=(3,))
    assert set(plan) == {0} and start[1] == pytest.approx(1.0)
    assert (target_kind("binary_masks").clean(pred, plan) == gt).all()
    # Opening 3 also removes the one-pixel speck: the first step found wins and nothing else helps.
    assert plan[0].largest_component or plan[0].opening == 3


def test_a_multiclass_plan_moves_only_removed_pixels_to_background():
    pred = np.zeros((12, 12), np.uint8)
    pred[1:6, 1:6] = 1
    pred[9, 9] = 1                              # speck of class 1
    pred[7:11, 1:5] = 2
    out = target_kind("class_map").clean(pred, {1: PostprocessConfig(largest_component=True), 0: PostprocessConfig(opening=3)})
    expected = pred.copy()
    expected[9, 9] = 0
    assert (out == expected).all()


def test_a_plan_file_naming_an_unknown_class_is_refused(tmp_path):
    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps({"classes": {"zebra": {"largest_component": True}}}))
    with pytest.raises(SeglabError, match="zebra"):
        read_plan(path, ["a", "b"])
    path.write_text("{not json")
    with pytest.raises(SeglabError, match="not a post-processing file"):
        read_plan(path, ["a", "b"])


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_tune_postprocess_then_evaluate_reproduces_the_printed_figure(task, tmp_path):
    config, overrides = task_data(task, tmp_path / "data")
    cfg = load_config(config, overrides + [f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0",
                                           "postprocess.opening=3"])
    run = constructed_run(tmp_path / "run", cfg)   # an untrained model: noisy masks, room to clean
    code, printed = cli("tune-postprocess", run, "--kernels", "3")
    assert code == 0 and "steps kept" in printed
    record = json.loads((run / "postprocess.json").read_text())
    metric = record["metric"]
    assert f"{record['score_after']:.4f} (tuned)" in printed
    # Greedy, from no steps: never worse than none, per class and overall.
    for name, none in record["per_class_none"].items():
        if none is not None and task == "multilabel":
            assert record["per_class_after"][name] >= none - 1e-12
    _, out = cli("evaluate", run)
    scores = json.loads(out[out.index("{"):])
    assert scores["postprocess_from"].endswith("postprocess.json")
    assert scores[metric] == pytest.approx(record["score_after"], abs=1e-9)
    per_class = scores["per_class_dice" if task == "multilabel" else "per_class_iou"]
    for name, value in record["per_class_after"].items():
        assert (per_class[name] is None and value is None) or per_class[name] == pytest.approx(value, abs=1e-9)
    _, dry = cli("tune-postprocess", run, "--dry-run", "--kernels", "3")
    assert f"{record['score_configured']:.4f} (configured)" in dry   # configured = the config's opening 3


def test_tune_postprocess_refuses_classification(tmp_path):
    config, overrides = task_data("classification", tmp_path / "data")
    run = constructed_run(tmp_path / "run", load_config(config, overrides + ["data.num_workers=0"]))
    code = main(["tune-postprocess", str(run)])
    assert code == 2


def test_a_tuned_plan_follows_its_classes_by_name_into_the_submission_space():
    from types import SimpleNamespace

    from seglab.inference.predict import tuned_plan

    lcc = PostprocessConfig(largest_component=True)
    train = LabelSpec(("a", "b", "c"), 255, {}, "binary_masks")
    run = SimpleNamespace(labels=train, postprocess_plan={0: lcc, 2: PostprocessConfig(opening=3)})
    merged = LabelSpec(("ab", "c"), 255, {}, "binary_masks")   # a and b merged: only c keeps its steps
    assert tuned_plan(run, train) is run.postprocess_plan
    assert tuned_plan(run, merged) == {1: PostprocessConfig(opening=3)}
    assert tuned_plan(SimpleNamespace(labels=train, postprocess_plan=None), merged) is None
