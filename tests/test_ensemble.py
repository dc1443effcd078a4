"""Ensembles: one member equals the run, weighted probability averages, members at
different input sizes, class-list mismatches, the CLI."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglab.cli import main
from seglab.data import build_dataset
from seglab.inference.ensemble import Member, evaluate_members, iter_ensemble_predictions, parse_member, resolve_members
from seglab.errors import ConfigError, SeglabError
from seglab.inference import evaluate, iter_predictions, load_run, predict_probs
from seglab.submission.segmentation import read_coco_csv
from tests.workflow_helpers import constructed_run, tiny_config


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("ens")
    a = constructed_run(base / "a", tiny_config(synth_root), seed=0)
    b = constructed_run(base / "b", tiny_config(synth_root, "data.image_size=[48,48]"), seed=1)
    return a, b


def _test_probs(run, ref_cfg, labels):
    """Probabilities of one run on the reference test images, resized to 64x64, by hand."""
    cfg, _, module = load_run(run)
    ref = build_dataset(ref_cfg, "test", labels, train=False, with_masks=False)
    out = []
    with torch.no_grad():
        for i in range(len(ref)):
            image = ref.source.load_image(i)
            if cfg.data.image_size:  # what albumentations' Resize does to the uint8 image
                image_in = cv2.resize(image, tuple(cfg.data.image_size)[::-1], interpolation=cv2.INTER_LINEAR)
            else:
                image_in = image
            p = predict_probs(module, torch.from_numpy(np.ascontiguousarray(image_in.transpose(2, 0, 1))).unsqueeze(0))
            out.append(F.interpolate(p, size=image.shape[:2], mode="bilinear", align_corners=False) if p.shape[-2:] != image.shape[:2] else p)
    return out


def test_ensemble_of_one_run_equals_that_run(runs):
    a, _ = runs
    scores, cm = evaluate_members([Member(a)], "val")
    plain = evaluate(a, "val")
    for key in ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU"):
        assert scores[key] == pytest.approx(plain[key], abs=1e-12)
    assert scores["per_class_iou"] == plain["per_class_iou"]
    assert int(cm.mat.sum()) == 6 * 64 * 64  # every val pixel counted once (nothing ignored in the synthetic set)
    ensemble = list(iter_ensemble_predictions([Member(a)], "test"))
    single = list(iter_predictions(a, "test"))
    assert [i for i, _ in ensemble] == [i for i, _ in single]
    assert all(np.array_equal(x, y) and x.dtype == y.dtype for (_, x), (_, y) in zip(ensemble, single))


def test_same_run_twice_with_weights_equals_the_run(runs):
    a, _ = runs
    twice = list(iter_ensemble_predictions([Member(a, weight=1.0), Member(a, weight=3.0)], "test"))
    single = list(iter_predictions(a, "test"))
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(twice, single))


def test_members_at_different_input_sizes_average_probabilities_at_the_image_size(runs):
    a, b = runs
    cfg_a, labels, _ = load_run(a)
    pa, pb = _test_probs(a, cfg_a, labels), _test_probs(b, cfg_a, labels)
    got = list(iter_ensemble_predictions([Member(a, weight=1.0), Member(b, weight=2.0)], "test"))
    assert len(got) == 4
    for (sample_id, pred), p1, p2 in zip(got, pa, pb):
        assert pred.shape == (64, 64)
        expected = ((p1 + 2 * p2) / 3).argmax(1)[0].numpy()
        # bilinear resizes in two slightly different orders: allow a few boundary pixels
        assert (pred != expected).mean() < 0.01, sample_id
    # the 48x48 member alone, read through the 64x64 reference: its own class maps at 64x64
    solo = list(iter_ensemble_predictions([Member(b)], "test", data_config=a))
    assert all(((pred != p.argmax(1)[0].numpy()).mean() < 0.01) for (_, pred), p in zip(solo, pb))


def test_members_with_different_classes_are_an_error(runs, synth_root, tmp_path):
    a, _ = runs
    other = constructed_run(tmp_path / "c", tiny_config(synth_root, "data.remap={star: Background}"))
    with pytest.raises(SeglabError, match="members must share one class list"):
        evaluate_members([Member(a), Member(other)], "val")


def test_member_specs_and_weights(runs, tmp_path):
    a, b = runs
    assert parse_member(f"{a}:last") == (a, "last")
    assert parse_member(f"{a}:x/y.ckpt") == (a, "x/y.ckpt")
    assert parse_member(str(a)) == (a, "best")
    members, base = resolve_members([str(a), str(b)], [1, 3])
    assert [m.weight for m in members] == [1, 3] and base is None
    with pytest.raises(ConfigError, match="2 weights for 1 members"):
        resolve_members([str(a)], [1, 2])
    with pytest.raises(SeglabError, match="not a run folder"):
        resolve_members([str(tmp_path)])
    with pytest.raises(SeglabError, match="checkpoint not found"):
        evaluate_members([Member(a, "last")], "val")


def test_ensemble_cli_evaluates_and_writes_a_submission(runs, synth_root, tmp_path, capsys):
    a, b = runs
    assert main(["ensemble", str(a), str(b), "--weights", "1,1", "--split", "val", "--out", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(printed["mIoU"])
    assert printed["images"] == 6 and len(printed["members"]) == 2
    out = tmp_path / "sub.csv"
    assert main(["ensemble", str(a), f"{b}:best", "--split", "test", "--out", str(out), "--flips", "h"]) == 0
    rows = read_coco_csv(out, size=(128, 128))
    test_json = json.loads((synth_root / "test.json").read_text())
    assert list(rows) == [img["file_name"] for img in test_json["images"]]
