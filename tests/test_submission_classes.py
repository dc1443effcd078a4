"""submission.classes: a class split for training (UNKNOWN -> UNKNOWN_a/b/c) merged back when
predicting; scores in both class spaces, submissions in submission classes, ensembles of runs
with different training classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seglab.core.run import load_run
from seglab.core.training import train
from seglab.data import resolve_labels
from seglab.data.labels import class_merge
from seglab.data.synth.coco import make_coco_dataset
from seglab.errors import ConfigError
from seglab.inference.ensemble import Member, resolve_members
from seglab.inference.predict import evaluate, predictions, stream
from seglab.submission.segmentation import read_coco_csv
from seglab.task import get_task
from tests.workflow_helpers import constructed_run, tiny_config

SPLIT = ["data.classes=[Background, disc, square, triangle, ring, bar, UNKNOWN_a, UNKNOWN_b, UNKNOWN_c]",
         "data.coco.category_map={0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6}",
         "submission.classes={UNKNOWN: [UNKNOWN_a, UNKNOWN_b, UNKNOWN_c]}"]
PLAIN = ["data.classes=[Background, disc, square, triangle, ring, bar, UNKNOWN]"]
SUBMITTED = ["Background", "disc", "square", "triangle", "ring", "bar", "UNKNOWN"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("unknown")
    make_coco_dataset(root, n_train=4, n_val=3, n_test=2, size=32, seed=0)
    # The star annotations are the grab bag: a corrections file spreads them over the three parts.
    doc = json.loads((root / "train.json").read_text())
    images = {i["id"]: i["file_name"] for i in doc["images"]}
    stars = [a for a in doc["annotations"] if a["category_id"] == 5]
    lines = [f"- {{image: {images[a['image_id']]}, annotation: {a['id']}, action: relabel, value: UNKNOWN_{'bc'[k % 2]}}}"
             for k, a in enumerate(stars)]
    (root / "fix.yaml").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("split_run") / "run"
    cfg = tiny_config(data, *SPLIT, "data.corrections=fix.yaml", "eval.monitor=submission_mIoU", "data.batch_size=2",
                      "logging.viz_every_n_epochs=0")
    best = train(cfg, run)
    return run, best


def test_validation_reports_both_spaces_and_monitors_the_submission_one(trained):
    run, best = trained
    assert best["monitor"] == "submission_mIoU"
    assert {"mIoU", "submission_mIoU", "submission_fwIoU"} <= set(best)
    assert list(best["submission_per_class_iou"]) == SUBMITTED
    assert len(best["per_class_iou"]) == 9
    assert (run / "corrections.yaml").is_file()   # the labels this run saw stay known


def test_merged_miou_equals_numpy_from_summed_probabilities(trained):
    run_dir, _ = trained
    run = load_run(run_dir, device="cpu")
    scores, _ = evaluate([Member(run)], "val")
    confusion = np.zeros((7, 7), np.int64)
    lut = np.array([0, 1, 2, 3, 4, 5, 6, 6, 6])
    for batch, probs, _ in stream([Member(run)], "val", with_targets=True):
        p = probs["train"].numpy()
        merged = np.concatenate([p[:, :6], p[:, 6:].sum(1, keepdims=True)], 1)   # UNKNOWN = a + b + c
        pred = merged.argmax(1).ravel()
        target = batch["target"].numpy().ravel()
        keep = target != 255
        confusion += np.bincount(7 * lut[target[keep]] + pred[keep], minlength=49).reshape(7, 7)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert scores["submission_mIoU"] == pytest.approx(np.nanmean(iou), abs=1e-6)
    assert scores["mIoU"] != scores["submission_mIoU"]


def test_submission_holds_only_submission_classes(trained, tmp_path, capsys):
    from seglab.cli import main

    run_dir, _ = trained
    out = tmp_path / "sub.csv"
    main(["predict", str(run_dir), "--out", str(out), "--device", "cpu"])
    maps = read_coco_csv(out, (128, 128))
    assert maps and all(m.max() < len(SUBMITTED) for m in maps.values())
    run = load_run(run_dir, device="cpu")
    for p in predictions([Member(run)], "test"):
        assert p.probs.shape[0] == len(SUBMITTED) and p.output.max() < len(SUBMITTED)


def test_ensemble_of_runs_with_different_training_classes(data, tmp_path):
    a = load_run(constructed_run(tmp_path / "a", tiny_config(data, *SPLIT), seed=0), device="cpu")
    b = load_run(constructed_run(tmp_path / "b", tiny_config(data, *PLAIN), seed=1), device="cpu")
    both = [Member(a), Member(b)]
    merged = torch.stack([p.probs for p in predictions(both, "test")])
    alone_a = torch.stack([p.probs for p in predictions([Member(a)], "test")])
    alone_b = torch.stack([p.probs for p in predictions([Member(b)], "test")])
    torch.testing.assert_close(merged, (alone_a + alone_b) / 2, atol=1e-5, rtol=0)
    scores, _ = evaluate(both, "val")
    assert list(scores["per_class_iou"]) == SUBMITTED   # only the shared space can be scored
    members, _ = resolve_members([str(tmp_path / "a"), str(tmp_path / "b")], device="cpu")
    assert len(members) == 2


def test_bad_merge_maps_are_config_errors(data):
    labels = resolve_labels(tiny_config(data, *SPLIT))
    with pytest.raises(ConfigError, match="'UNKNOWN_z' is not a training class"):
        class_merge(labels, {"UNKNOWN": ["UNKNOWN_a", "UNKNOWN_z"]})
    with pytest.raises(ConfigError, match="'UNKNOWN_a' is in both"):
        class_merge(labels, {"UNKNOWN": ["UNKNOWN_a"], "OTHER": ["UNKNOWN_a", "bar"]})
    with pytest.raises(ConfigError, match="'bar' is also a training class"):
        class_merge(labels, {"bar": ["UNKNOWN_a"]})


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "classification"])
def test_merge_by_task(task, data):
    """multiclass / classification sum a group's probabilities; multilabel takes their maximum
    (the union of the members' masks) and ORs the targets."""
    labels = resolve_labels(tiny_config(data, *SPLIT))
    merge = class_merge(labels, {"UNKNOWN": ["UNKNOWN_a", "UNKNOWN_b", "UNKNOWN_c"]})
    probs = torch.rand(2, 9, 3, 3) if task != "classification" else torch.rand(2, 9)
    out = get_task(task).merge_probabilities(probs, merge)
    group = probs[:, 6:].max(1).values if task == "multilabel" else probs[:, 6:].sum(1)
    torch.testing.assert_close(out[:, 6], group)
    torch.testing.assert_close(out[:, :6], probs[:, :6])
    if task == "multilabel":
        target = torch.rand(2, 9, 3, 3) > 0.5
        merged = get_task(task).merge_targets(target, merge)
        assert torch.equal(merged[:, 6], target[:, 6:].any(1)) and torch.equal(merged[:, :6], target[:, :6])
        th = get_task(task).merge_thresholds(torch.tensor([0.5] * 6 + [0.6, 0.4, 0.7]), merge)
        assert th.tolist()[6] == pytest.approx(0.4)
    else:
        target = torch.tensor([[0, 7, 8, 255]])
        assert get_task(task).merge_targets(target, merge).tolist() == [[0, 6, 6, 255]]


def test_classification_merge_is_scored_through_evaluate(tmp_path):
    """Mask-status: merge the three age bands of each (mask, gender) into one submission class;
    the submission-space macro F1 equals scikit-learn's on the argmax of the summed probabilities."""
    from sklearn.metrics import f1_score

    from seglab.config import load_config
    from seglab.data import maskstatus
    from tests.workflow_helpers import task_data

    config, overrides = task_data("classification", tmp_path / "data")
    names = maskstatus.class_names()
    groups = {f"{names[6 * m + 3 * g].rsplit('/', 1)[0]}": [names[6 * m + 3 * g + a] for a in range(3)]
              for m in range(3) for g in range(2)}
    cfg = load_config(config, overrides + [f"submission.classes={json.dumps(groups)}"])
    run = load_run(constructed_run(tmp_path / "run", cfg), device="cpu")
    assert list(run.submission_labels.classes) == list(groups)
    assert set(run.submission_labels.facets) == {"mask", "gender"}   # the age bands were merged away
    scores, _ = evaluate([Member(run)], "val")
    truth, pred = [], []
    for batch, probs, _ in stream([Member(run)], "val", with_targets=True):
        summed = probs["train"].view(-1, 6, 3).sum(2)                   # class = 3 * (2 * mask + gender) + band
        pred += summed.argmax(1).tolist()
        truth += (batch["target"] // 3).tolist()
    assert scores["submission_macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"), abs=1e-6)
    assert {"macro_f1", "age_accuracy", "submission_gender_accuracy"} <= set(scores)


def test_kfold_pools_the_submission_scores_out_of_fold(data, tmp_path):
    """OOF in submission classes: the folds' submission confusion matrices summed, then scored
    (checked against IoU computed by hand from that sum); the console table shows them."""
    from seglab.inference.predict import evaluate_in_spaces
    from seglab.kfold import evaluate_fold, fold_config, format_kfold, make_folds_file, summarise

    cfg = tiny_config(data, *SPLIT, "data.corrections=fix.yaml", "data.val=null", "kfold.folds=2",
                      "eval.monitor=submission_mIoU")
    labels, task, out = resolve_labels(cfg), get_task(cfg.task), tmp_path / "kf"
    merge = class_merge(labels, cfg.submission.classes)
    split = make_folds_file(cfg, labels, out)
    rows, confusion = [], np.zeros((7, 7), np.int64)
    for k in range(2):
        run_dir = constructed_run(out / f"fold_{k}", fold_config(cfg, out, k), seed=k)
        rows.append({"fold": k, **evaluate_fold(run_dir, k, split, task, labels, "cpu")})
        _, metrics = evaluate_in_spaces([Member(load_run(run_dir, device="cpu"))], "val")
        confusion += metrics["submission"].mat.cpu().numpy().astype(np.int64)
    summary = summarise(rows, task, labels, split, "submission_mIoU", merge)
    oof = summary["oof"]
    assert int(confusion.sum()) == 4 * 32 * 32   # each training image once, by the fold that did not train on it
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert oof["submission_mIoU"] == pytest.approx(np.nanmean(iou), abs=1e-9)
    assert list(oof["submission_per_class_iou"]) == SUBMITTED and len(oof["per_class_iou"]) == 9
    assert summary["fold_mean"] == pytest.approx(np.mean([r["submission_mIoU"] for r in rows]))
    assert all("submission_metric_state" not in r for r in summary["per_fold"])
    printed = format_kfold(summary)
    assert f"OOF in submission classes  mIoU {oof['submission_mIoU']:.4f}" in printed and "UNKNOWN" in printed
    assert printed.splitlines()[1].split()[-1] == "submission_mIoU"  # the monitored score has its column
    assert printed.splitlines()[2].split()[-1] == f"{rows[0]['submission_mIoU']:.4f}"
