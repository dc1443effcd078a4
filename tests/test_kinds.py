"""Target kinds (`seglab.kinds`): every registered kind answers the questions the engine
asks, and each answer matches what the engine computed by hand before kinds existed (a
tensor's rank told it what it held)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.data.labels import LabelSpec
from seglab.data.transforms import build_transform
from seglab.config import AugmentConfig
from seglab.kinds import KINDS, TargetKind, target_kind
from seglab.task import TASKS, get_task

ASKED = ("augment", "resized_target", "classes_in", "class_counts", "prediction_pictures")


def test_every_kind_answers_and_every_task_names_one():
    for name in KINDS.names():
        kind = target_kind(name)
        assert kind.name == name and target_kind(name) is kind
        assert [q for q in ASKED if getattr(type(kind), q) is getattr(TargetKind, q)] == [], name
    assert {get_task(t).target for t in TASKS.names()} <= set(KINDS.names())
    assert LabelSpec(("a", "b"), 255, {}, "binary_masks").kind is target_kind("binary_masks")


def flip_transform():
    return build_transform(AugmentConfig(train=[{"name": "HorizontalFlip", "p": 1.0}]), None, train=True)


def test_augment_moves_each_kind_of_target_with_its_image():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    class_map = np.array([[0, 1, 2], [3, 0, 255]], np.uint8)
    out = target_kind("class_map").augment(flip_transform(), image, class_map)
    assert np.array_equal(out["image"], image[:, ::-1]) and out["target"].tolist() == class_map[:, ::-1].tolist()
    ids = np.array([[0, 1, 2], [3, 0, 0]], np.uint16)
    out = target_kind("class_map").augment(flip_transform(), image, class_map, lambda shape: ids)
    assert out["instances"].tolist() == ids[:, ::-1].tolist() and out["instances"].dtype == torch.int32
    masks = np.zeros((2, 2, 3), bool)
    masks[1, 0, 0] = True
    out = target_kind("binary_masks").augment(flip_transform(), image, masks, lambda shape: ids)
    assert out["target"].dtype == torch.bool and out["target"][1, 0, 2] and "instances" not in out
    out = target_kind("class").augment(flip_transform(), image, 4)
    assert out["target"].dtype == torch.int64 and int(out["target"]) == 4


def test_classes_and_class_counts_per_kind():
    labels = LabelSpec(("bg", "a", "b"), 255, {}, "class_map")
    class_map = np.array([[0, 1, 1], [2, 255, 1]], np.uint8)
    assert target_kind("class_map").classes_in(class_map, labels) == {0, 1, 2, 255}
    assert target_kind("class_map").class_counts(class_map, labels).tolist() == [1, 3, 1]  # ignore is no class
    masks = np.zeros((3, 2, 2), bool)
    masks[0] = masks[2, 0, 0] = True
    assert target_kind("binary_masks").classes_in(masks, labels) == {0, 2}
    assert target_kind("binary_masks").class_counts(masks, labels).tolist() == [4, 0, 1]
    assert target_kind("class").classes_in(np.int64(2), labels) == {2}
    assert target_kind("class").class_counts(2, labels).tolist() == [0, 0, 1]


def test_views_and_members_combine_as_means_of_probabilities():
    dense, per_image = target_kind("class_map"), target_kind("class")
    probs = torch.rand(2, 3, 4, 6)
    assert torch.equal(dense.undo_view(probs.flip(-1), "h", (4, 6)), probs)
    assert torch.equal(dense.undo_view(probs.flip(-2, -1), "hv", (4, 6)), probs)
    assert dense.output_at(probs, (8, 12)).shape == (2, 3, 8, 12) and dense.output_at(probs, (4, 6)) is probs
    scores = torch.rand(2, 3)
    assert per_image.undo_view(scores, "h", (4, 6)) is scores and per_image.output_at(scores, (9, 9)) is scores
    a, b = torch.rand(2, 3), torch.rand(2, 3)
    total = per_image.summed(per_image.summed(None, a), b)
    assert torch.equal(per_image.averaged(total, 2), (a + b) / 2) and total is not a  # the first part is not changed
    mean = per_image.summed(per_image.summed(None, per_image.weighted(a, 0.25)), per_image.weighted(b, 0.75))
    assert torch.equal(per_image.averaged(mean, 1), a * 0.25 + b * 0.75)


def test_decisions_as_arrays_and_what_writers_read():
    labels = LabelSpec(("bg", "a", "b"), 255, {}, "class_map")
    decided = torch.tensor([[0, 1], [2, 2]])
    array = target_kind("class_map").decision_array(decided, labels)
    assert array.dtype == np.uint8 and target_kind("class_map").class_map(array) is array
    assert [(n, m.tolist()) for n, m in target_kind("class_map").class_masks(array, ["bg", "a", "b"])] == [
        ("a", [[False, True], [False, False]]), ("b", [[False, False], [True, True]])]  # Background has no mask
    masks = np.zeros((2, 2, 2), bool)
    assert target_kind("binary_masks").class_map(masks) is None
    assert [n for n, _ in target_kind("binary_masks").class_masks(masks, ["a", "b"])] == ["a", "b"]
    with pytest.raises(Exception, match="2 channels but the run has 3 classes"):
        list(target_kind("binary_masks").class_masks(masks, ["a", "b", "c"]))
    assert target_kind("binary_masks").drawable(np.stack([masks[0] | True, masks[1]])).tolist() == [[1, 1], [1, 1]]
