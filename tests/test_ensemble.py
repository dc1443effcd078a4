"""Ensembles: one member equals the run, weighted probability averages, members at
different input sizes, class-list mismatches, the CLI."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglab.cli import main
from seglab.core.run import load_run
from seglab.data import build_dataset
from seglab.errors import CheckpointError, ConfigError, SeglabError
from seglab.inference.ensemble import Member, parse_member, resolve_members
from seglab.inference.predict import evaluate, predictions
from seglab.submission.segmentation import read_coco_csv
from tests.workflow_helpers import constructed_run, tiny_config

ATOL = 1e-4     # probabilities of one image alone vs in a batch differ by ~1e-5 at most
MARGIN = 1e-3   # decisions are compared only where the top two classes are further apart (> 2 ATOL)


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("ens")
    a = constructed_run(base / "a", tiny_config(synth_root), seed=0)
    b = constructed_run(base / "b", tiny_config(synth_root, "data.image_size=[48,48]"), seed=1)
    return a, b


@pytest.fixture(scope="module")
def loaded(runs):
    a, b = runs
    return load_run(a, device="cpu"), load_run(b, device="cpu")


def _probs_by_hand(run, ref_cfg, labels, split="test"):
    """Probabilities [C, H, W] of one run on the reference images, one image at a time,
    resized to the image size, by hand."""
    ref = build_dataset(ref_cfg, split, labels, train=False, with_targets=False)
    out = []
    with torch.no_grad():
        for i in range(len(ref)):
            image = ref.source.load_image(i)
            if run.cfg.data.image_size:  # what albumentations' Resize does to the uint8 image
                image_in = cv2.resize(image, tuple(run.cfg.data.image_size)[::-1], interpolation=cv2.INTER_LINEAR)
            else:
                image_in = image
            p = run.module(torch.from_numpy(np.ascontiguousarray(image_in.transpose(2, 0, 1))).unsqueeze(0)).softmax(1)
            if p.shape[-2:] != image.shape[:2]:
                p = F.interpolate(p, size=image.shape[:2], mode="bilinear", align_corners=False)
            out.append(p[0])
    return out


def _assert_decided_from(output: np.ndarray, probs: torch.Tensor) -> None:
    """`output` is the argmax of `probs` wherever that argmax is clear (no float tie decides)."""
    top2 = probs.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > MARGIN).numpy()
    assert clear.mean() > 0.8  # most pixels are compared
    assert np.array_equal(output[clear], probs.argmax(0).numpy()[clear])


def test_ensemble_of_one_run_equals_that_run(runs, loaded, synth_root, capsys):
    a, _ = runs
    ra, _ = loaded
    scores, cm = evaluate([Member(ra)], "val")
    assert scores["images"] == 6 and scores["members"] == [ra.name] and scores["weights"] == [1.0]
    assert int(cm.mat.sum()) == 6 * 64 * 64  # every val pixel counted once (nothing ignored in the synthetic set)
    capsys.readouterr()
    assert main(["evaluate", str(a), "--device", "cpu"]) == 0  # the single-run command
    plain = json.loads(capsys.readouterr().out)
    for key in ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU"):
        assert scores[key] == pytest.approx(plain[key], abs=1e-12)
    assert scores["per_class_iou"] == plain["per_class_iou"]
    # the predictions are the run's own probabilities and their argmax, image by image, in split order
    expected = _probs_by_hand(ra, ra.cfg, ra.labels)
    got = list(predictions([Member(ra)], "test"))
    test_ids = [im["file_name"] for im in json.loads((synth_root / "test.json").read_text())["images"]]
    assert [p.id for p in got] == test_ids
    for p, e in zip(got, expected):
        assert p.probs.shape == e.shape == (7, 64, 64)
        torch.testing.assert_close(p.probs, e, atol=ATOL, rtol=0)
        assert p.output.shape == (64, 64) and p.output.dtype == np.uint8
        assert np.array_equal(p.output, p.probs.argmax(0).numpy())
        _assert_decided_from(p.output, e)


def test_same_run_twice_with_weights_equals_the_run(loaded):
    ra, _ = loaded
    twice = list(predictions([Member(ra, weight=1.0), Member(ra, weight=3.0)], "test"))
    single = list(predictions([Member(ra)], "test"))
    assert len(twice) == len(single) == 4
    for x, y in zip(twice, single):
        assert x.id == y.id
        torch.testing.assert_close(x.probs, y.probs, atol=1e-6, rtol=0)  # 1/4 p + 3/4 p = p up to rounding
        _assert_decided_from(x.output, y.probs)


def test_members_at_different_input_sizes_average_probabilities_at_the_image_size(runs, loaded):
    a, _ = runs
    ra, rb = loaded
    pa, pb = _probs_by_hand(ra, ra.cfg, ra.labels), _probs_by_hand(rb, ra.cfg, ra.labels)
    got = list(predictions([Member(ra, weight=1.0), Member(rb, weight=2.0)], "test"))
    assert len(got) == 4
    for p, p1, p2 in zip(got, pa, pb):
        assert p.output.shape == (64, 64)
        expected = (p1 + 2 * p2) / 3
        torch.testing.assert_close(p.probs, expected, atol=ATOL, rtol=0)
        _assert_decided_from(p.output, expected)
    # a real mix: neither run alone
    assert not torch.allclose(got[0].probs, pa[0], atol=1e-3) and not torch.allclose(got[0].probs, pb[0], atol=1e-3)
    # the 48x48 member alone, read through the 64x64 reference: its own probabilities at 64x64
    solo = list(predictions([Member(rb)], "test", data_config=a))
    for p, e in zip(solo, pb):
        assert p.output.shape == (64, 64)
        torch.testing.assert_close(p.probs, e, atol=ATOL, rtol=0)
        _assert_decided_from(p.output, e)


def test_members_with_different_classes_are_an_error(runs, loaded, synth_root, tmp_path):
    a, _ = runs
    ra, _ = loaded
    other = constructed_run(tmp_path / "c", tiny_config(synth_root, "data.remap={star: Background}"))
    with pytest.raises(SeglabError, match="members must share one class list"):
        resolve_members([str(a), str(other)], device="cpu")
    # members built by hand are checked too, before anything is averaged
    with pytest.raises(SeglabError, match="members must share one class list"):
        evaluate([Member(ra), Member(load_run(other, device="cpu"))], "val")
    with pytest.raises(SeglabError, match="members must share one class list"):
        next(predictions([Member(ra), Member(load_run(other, device="cpu"))], "test"))


def test_member_specs_and_weights(runs, tmp_path):
    a, b = runs
    assert parse_member(f"{a}:last") == (a, "last")
    assert parse_member(f"{a}:x/y.ckpt") == (a, "x/y.ckpt")
    assert parse_member(str(a)) == (a, "best")
    members, base = resolve_members([str(a), str(b)], [1, 3], device="cpu")
    assert [m.weight for m in members] == [1, 3] and base is None
    assert [m.run.path for m in members] == [a, b] and [m.run.checkpoint for m in members] == ["best", "best"]
    with pytest.raises(ConfigError, match="2 weights for 1 members"):
        resolve_members([str(a)], [1, 2])
    with pytest.raises(SeglabError, match="not a run folder"):
        resolve_members([str(tmp_path)])
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_members([f"{a}:last"], device="cpu")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_run(a, "last")


def test_ensemble_cli_evaluates_and_writes_a_submission(runs, loaded, synth_root, tmp_path, capsys):
    a, b = runs
    ra, rb = loaded
    assert main(["ensemble", str(a), str(b), "--weights", "1,1", "--split", "val", "--out", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(printed["mIoU"])
    assert printed["images"] == 6 and len(printed["members"]) == 2
    scores, _ = evaluate([Member(ra), Member(rb)], "val")  # the same evaluation through the library
    assert printed["mIoU"] == pytest.approx(scores["mIoU"], abs=1e-12)
    out = tmp_path / "sub.csv"
    assert main(["ensemble", str(a), f"{b}:best", "--split", "test", "--out", str(out), "--flips", "h"]) == 0
    rows = read_coco_csv(out, size=(128, 128))
    test_json = json.loads((synth_root / "test.json").read_text())
    assert list(rows) == [img["file_name"] for img in test_json["images"]]
    assert all(r.shape == (128, 128) and r.max() < 7 for r in rows.values())
