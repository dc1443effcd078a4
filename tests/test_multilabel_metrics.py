"""The competition-B metric, the threshold search, thresholds and post-processing."""

import json
import math

import numpy as np
import pytest
import torch

from seglab.metrics.dice import DICE_EPS, DiceScore, dice_per_image
from seglab.config import PostprocessConfig
from seglab.inference.morphology import clean_mask, fill_holes, largest_component
from seglab.inference.postprocess import plan_from_config, threshold_vector
from seglab.kinds import target_kind
from seglab.tasks import get_task
from seglab.inference.thresholds import ThresholdSearch

EPS = DICE_EPS


def masks(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_dice_hand_computed_including_empty_cases():
    # one image, three classes, 1 x 4 "images"
    pred = masks([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[0, 1, 0, 0]]])[None]
    gt = masks([[[0, 1, 1, 0]], [[0, 0, 0, 0]], [[0, 0, 0, 0]]])[None]
    d = dice_per_image(pred, gt)[0].tolist()
    assert d[0] == pytest.approx((2 * 1 + EPS) / (2 + 2 + EPS))   # partial overlap: ~0.5
    assert d[1] == 1.0                                             # empty vs empty = 1
    assert d[2] == pytest.approx(EPS / (1 + EPS))                  # false positive on an empty class: ~0
    # empty prediction on a non-empty class is ~0 too
    assert dice_per_image(masks([[[0, 0]]])[None], masks([[[1, 1]]])[None]).item() == pytest.approx(EPS / (2 + EPS))


def test_mean_over_images_then_classes_not_pooled():
    metric = DiceScore(2)
    # image 1: class 0 perfect on 1 pixel; class 1 perfect on 3 pixels
    metric.update(masks([[[1, 0, 0, 0]], [[1, 1, 1, 0]]]), masks([[[1, 0, 0, 0]], [[1, 1, 1, 0]]]))
    # image 2: class 0 misses its 3 pixels entirely; class 1 empty vs empty
    metric.update(masks([[[0, 0, 0, 0]], [[0, 0, 0, 0]]]), masks([[[1, 1, 1, 0]], [[0, 0, 0, 0]]]))
    scores = metric.compute(["a", "b"])
    a = (1.0 + EPS / (3 + EPS)) / 2          # per image, then the mean: not pooled pixel counts (which give 0.5)
    assert scores["per_class_dice"]["a"] == pytest.approx(a)
    assert scores["per_class_dice"]["b"] == pytest.approx(1.0)
    assert scores["dice"] == pytest.approx((a + 1.0) / 2)
    assert scores["images"] == 2


def test_batches_do_not_change_the_score():
    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.random((6, 3, 8, 8)) > 0.6)
    gt = torch.from_numpy(rng.random((6, 3, 8, 8)) > 0.7)
    gt[2, 1] = False
    pred[2, 1] = False
    whole, parts = DiceScore(3), DiceScore(3)
    whole.update(pred, gt)
    for k in range(0, 6, 4):
        parts.update(pred[k : k + 4], gt[k : k + 4])
    assert whole.compute()["dice"] == pytest.approx(parts.compute()["dice"], abs=1e-12)
    assert math.isnan(DiceScore(3).compute()["dice"])


def test_summed_states_equal_one_score_over_all_images():
    """k-fold OOF: the per-class Dice sums and image counts of held-out parts add up."""
    rng = np.random.default_rng(3)
    pred = torch.from_numpy(rng.random((5, 2, 6, 6)) > 0.5)
    gt = torch.from_numpy(rng.random((5, 2, 6, 6)) > 0.6)
    gt[4, 0] = False
    whole = DiceScore(2)
    whole.update(pred, gt)
    summed = DiceScore(2)
    for part in (slice(0, 2), slice(2, 5)):
        one = DiceScore(2)
        one.update(pred[part], gt[part])
        summed.add_state(json.loads(json.dumps(one.state())))  # as kfold_state.json keeps it
    assert summed.state()["images"] == 5
    assert summed.state()["dice_sums"] == pytest.approx(whole.state()["dice_sums"], abs=1e-12)
    a, b = summed.compute(["x", "y"]), whole.compute(["x", "y"])
    assert a["dice"] == pytest.approx(b["dice"], abs=1e-12) and a["images"] == b["images"] == 5
    # the image-weighted mean of the parts' scores (they hold 2 and 3 images)
    first = DiceScore(2)
    first.update(pred[:2], gt[:2])
    second = DiceScore(2)
    second.update(pred[2:], gt[2:])
    assert b["dice"] == pytest.approx((2 * first.compute()["dice"] + 3 * second.compute()["dice"]) / 5, abs=1e-12)


def test_threshold_search_equals_brute_force():
    rng = np.random.default_rng(1)
    probs = torch.from_numpy(rng.random((4, 3, 10, 10))).float()
    gt = torch.from_numpy(rng.random((4, 3, 10, 10)) > 0.6)
    gt[1, 2] = False  # an empty class in one image
    grid = [0.1, 0.3, 0.5, 0.7, 0.9]
    search = ThresholdSearch(3, grid)
    search.update(probs[:2], gt[:2])
    search.update(probs[2:], gt[2:])
    scores = search.scores()
    for j, t in enumerate(grid):
        brute = DiceScore(3)
        brute.update(probs > t, gt)
        expected = brute.compute()["per_class_dice"]
        assert scores[:, j].tolist() == pytest.approx([expected[str(c)] for c in range(3)], abs=1e-9)
    thresholds, dices = search.best()
    assert all(d == pytest.approx(float(scores[c].max())) for c, d in enumerate(dices))


def test_threshold_search_prefers_the_value_nearest_one_half_on_ties():
    probs = torch.tensor([[[[0.05, 0.95]]]])
    gt = torch.tensor([[[[False, True]]]])
    search = ThresholdSearch(1, [0.1, 0.3, 0.5, 0.7, 0.9])
    search.update(probs, gt)
    assert search.best()[0] == [0.5]


def test_thresholds_change_predictions_as_defined():
    task = get_task("multilabel")
    probs = torch.tensor([0.2, 0.5, 0.6, 0.9]).view(1, 1, 1, 4).expand(1, 2, 1, 4)
    cfg = PostprocessConfig(threshold={"b": 0.1})
    thr = threshold_vector(cfg, ["a", "b"])
    assert thr.tolist() == pytest.approx([0.5, 0.1])
    pred = task.decide(probs, thr)[0, :, 0].tolist()
    assert pred == [[False, False, True, True], [True, True, True, True]]  # strictly above
    with pytest.raises(Exception, match="unknown classes"):
        threshold_vector(PostprocessConfig(threshold={"c": 0.3}), ["a", "b"])
    # multiclass ignores thresholds: argmax
    assert get_task("multiclass").decide(torch.tensor([[[[0.2]], [[0.8]]]]), thr).item() == 1


def test_fill_holes_and_largest_component():
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    assert fill_holes(ring)[3, 3] and fill_holes(ring).sum() == 25
    notch = ring.copy()
    notch[3, 1:4] = False  # the "hole" now reaches the outside: not a hole
    assert fill_holes(notch).sum() == notch.sum()
    two = np.zeros((6, 10), bool)
    two[1:3, 1:3] = True       # 4 px
    two[1:5, 5:9] = True       # 16 px
    assert (largest_component(two) == (np.arange(10)[None, :] >= 5) & two).all()


def test_opening_and_closing():
    speck = np.zeros((15, 15), bool)
    speck[3:12, 3:12] = True
    speck[0, 0] = True           # an isolated pixel
    opened = clean_mask(speck, PostprocessConfig(opening=3))
    assert not opened[0, 0] and opened[7, 7]
    gap = np.zeros((15, 15), bool)
    gap[3:12, 3:7] = True
    gap[3:12, 8:12] = True       # a 1-pixel gap in the middle
    closed = clean_mask(gap, PostprocessConfig(closing=3))
    assert closed[7, 7] and not gap[7, 7]


def test_postprocess_multilabel_per_class_and_multiclass_repaint():
    cfg = PostprocessConfig(largest_component=True, classes=["b"])
    pred = np.zeros((2, 6, 6), bool)
    pred[:, 0, 0] = True
    pred[:, 2:5, 2:5] = True
    out = target_kind("binary_masks").clean(pred, plan_from_config(cfg, ["a", "b"]))
    assert out[0, 0, 0] and not out[1, 0, 0] and out[1, 3, 3]   # only class b cleaned
    class_map = np.zeros((6, 6), np.uint8)
    class_map[2:5, 2:5] = 1
    class_map[3, 3] = 2          # a hole in class 1 filled by class 2
    class_map[0, 0] = 1          # a speck of class 1
    classes = ["Background", "a", "b"]
    out = target_kind("class_map").clean(class_map, plan_from_config(PostprocessConfig(largest_component=True, fill_holes=True), classes))
    assert out[0, 0] == 0                  # removed -> Background
    assert out[3, 3] == 2                  # filling class 1's hole never overwrites class 2
    assert target_kind("class_map").clean(class_map, plan_from_config(PostprocessConfig(), classes)) is class_map  # off: untouched
