import json
import math

import numpy as np
import pytest
import torch

from seglab.metrics.confusion import SegmentationConfusion as ConfusionMatrix, format_table, segmentation_scores


def test_confusion_matrix_counts_by_hand():
    target = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # rows = ground truth, columns = prediction
    assert cm.mat.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_scores_against_hand_computation():
    mat = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    s = segmentation_scores(mat, ["a", "b", "c"])
    # IoU: a = 1/(2+2-1) = 1/3, b = 2/(2+3-2) = 2/3, c = 1/(2+1-1) = 1/2
    assert s["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 1 / 2})
    assert s["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    # class accuracy: a 1/2, b 2/2, c 1/2
    assert s["mean_class_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # frequency weighted: gt shares 2/6 each
    assert s["fwIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    # class 2 appears in neither ground truth nor prediction
    mat = torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    s = segmentation_scores(mat, ["bg", "x", "absent"])
    assert s["per_class_iou"]["absent"] is None
    assert s["per_class_accuracy"]["absent"] is None
    assert s["mIoU"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_predicted_but_absent_from_ground_truth_scores_zero():
    mat = torch.tensor([[3, 1], [0, 0]])
    s = segmentation_scores(mat)
    assert s["per_class_iou"]["1"] == 0.0
    assert s["per_class_accuracy"]["1"] is None
    assert s["mIoU"] == pytest.approx((3 / 4 + 0) / 2)


def test_ignore_index_pixels_are_excluded():
    target = torch.tensor([0, 1, 255, 255, 1])
    pred = torch.tensor([0, 1, 1, 0, 0])
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(pred, target)
    assert cm.mat.tolist() == [[1, 0], [1, 1]]


def test_one_matrix_over_the_set_differs_from_averaging_per_image():
    """The dataset-level mIoU is not the mean of per-image mIoUs (the known LB mismatch)."""
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(3)
    per_image = []
    for _ in range(5):
        t = torch.from_numpy(rng.integers(0, 3, (8, 8)))
        p = torch.where(torch.from_numpy(rng.random((8, 8)) < 0.7), t, torch.from_numpy(rng.integers(0, 3, (8, 8))))
        one = ConfusionMatrix(3)
        one.update(p, t)
        per_image.append(one.compute()["mIoU"])
        cm.update(p, t)
    total = cm.compute()["mIoU"]
    # the same as computing from the summed matrix directly
    assert total == pytest.approx(segmentation_scores(cm.mat)["mIoU"])
    assert not math.isclose(total, float(np.mean(per_image)), rel_tol=1e-9)


def test_matches_sklearn_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, 500)
    p = rng.integers(0, 4, 500)
    cm = ConfusionMatrix(4)
    cm.update(torch.from_numpy(p), torch.from_numpy(t))
    assert cm.mat.numpy().tolist() == confusion_matrix(t, p, labels=range(4)).tolist()


def test_works_under_deterministic_mode():
    torch.use_deterministic_algorithms(True)
    try:
        cm = ConfusionMatrix(2)
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
        assert cm.mat.tolist() == [[1, 1], [0, 0]]
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_state_round_trips_and_summed_states_equal_one_matrix_over_all_parts():
    """k-fold OOF and shards: summing saved states is the matrix over the union of the data."""
    rng = np.random.default_rng(2)
    t = torch.from_numpy(rng.integers(0, 3, (3, 10, 10)))
    p = torch.from_numpy(rng.integers(0, 3, (3, 10, 10)))
    t[0, 0, :4] = 255
    whole = ConfusionMatrix(3, ignore_index=255)
    whole.update(p, t)
    summed = ConfusionMatrix(3, ignore_index=255)
    for i in range(3):
        part = ConfusionMatrix(3, ignore_index=255)
        part.update(p[i], t[i])
        state = json.loads(json.dumps(part.state()))  # what kfold_state.json keeps
        assert state == {"confusion_matrix": part.mat.tolist()}
        summed.add_state(state)
    assert summed.mat.tolist() == whole.mat.tolist()
    assert int(summed.mat.sum()) == 3 * 100 - 4
    assert summed.compute(["a", "b", "c"]) == whole.compute(["a", "b", "c"])
    summed.add_state(whole.state())  # adding is adding: twice the counts, the same scores
    assert summed.mat.tolist() == (2 * whole.mat).tolist()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMatrix(2).update(torch.zeros(2, 2), torch.zeros(2, 3))


def test_table_mentions_every_class_and_marks_absent():
    s = segmentation_scores(torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]]), ["bg", "x", "absent"])
    table = format_table(s)
    assert "absent" in table and "-" in table.splitlines()[3]
    assert "mIoU 0.7750" in table


def test_best_is_judged_on_the_logged_float32_value():
    from seglab.core.module import improves

    # differs from 0.5 below float32 precision: ModelCheckpoint sees no improvement, so neither may we
    assert not improves(0.5 + 1e-12, 0.5, "max")
    assert improves(0.51, 0.5, "max") and improves(0.49, 0.5, "min") and not improves(0.49, 0.5, "max")
    assert improves(0.1, None, "max") and not improves(float("nan"), None, "max")
