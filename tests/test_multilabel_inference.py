"""Sliding-window inference and the task abstraction at prediction time."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seglab.config import config_from_dict
from seglab.core.checkpoints import check_checkpoint_meta
from seglab.core.module import LabModule
from seglab.core.run import Run
from seglab.data.labels import LabelSpec
from seglab.errors import CheckpointError
from seglab.inference.ensemble import Member
from seglab.inference.predict import final_output, member_probs
from seglab.core.sliding import blend_weights, sliding_window, tile_starts
from seglab.models.registry import MODELS
from seglab.tasks import get_task


class PixelModel(nn.Module):
    """A 1x1 convolution: translation-equivariant, so tiles cannot change its output."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x):
        return self.head(x)

    def parts(self):
        return {"head": self.head}


if "TestPixelModel" not in MODELS:
    MODELS.register("TestPixelModel")(lambda num_classes, in_channels=3: PixelModel(num_classes, in_channels))


@pytest.mark.parametrize("size, tile, overlap, blend", [
    ((37, 50), (16, 16), 0.25, "gaussian"),
    ((37, 50), (16, 24), 0.5, "mean"),
    ((20, 20), (64, 64), 0.25, "gaussian"),   # tile larger than the image: one window
    ((33, 33), (8, 8), 0.0, "gaussian"),
])
def test_sliding_window_equals_whole_image_for_a_pixelwise_model(size, tile, overlap, blend):
    torch.manual_seed(0)
    model = PixelModel(4).eval()
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        whole = model(images)
        tiled = sliding_window(model, images, tile, overlap, blend, tiles_per_batch=3)
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_every_pixel_is_covered():
    for length, tile, overlap in [(37, 16, 0.25), (100, 30, 0.5), (16, 16, 0.3), (5, 16, 0.25), (64, 16, 0.0)]:
        t = min(tile, length)
        covered = torch.zeros(length, dtype=torch.int64)
        for s in tile_starts(length, t, overlap):
            assert 0 <= s <= length - t
            covered[s : s + t] += 1
        assert (covered > 0).all(), (length, tile, overlap)
    # a model whose output counts visits: every pixel is visited at least once
    visits = sliding_window(lambda x: torch.ones(x.shape[0], 1, *x.shape[-2:]), torch.zeros(1, 3, 45, 31), (16, 16), 0.25, "mean")
    assert torch.allclose(visits, torch.ones_like(visits))


def test_gaussian_weights_peak_in_the_centre_and_stay_positive():
    w = blend_weights(17, 17, "gaussian", 0.125)
    assert w[8, 8] == w.max() == 1.0 and w.min() > 0 and w[0, 0] < w[8, 4] < w[8, 8]
    assert (blend_weights(4, 6, "mean") == 1).all()


def run_for(task: str, sliding: bool, **post) -> Run:
    """A loaded run (no folder needed) of a 1x1-conv model for `task`."""
    raw = {"task": task, "model": {"arch": "TestPixelModel"}, "sliding_window": {"enabled": sliding, "tile": [16, 16], "overlap": 0.5},
           "postprocess": post}
    if task == "multiclass":
        raw["loss"] = [{"name": "ce"}]
    cfg = config_from_dict(raw)
    if task == "multilabel":
        labels = LabelSpec(("a", "b", "c"), 255, {}, "binary_masks")
    else:
        labels = LabelSpec(("Background", "a", "b"), 255, {}, "class_map")
    torch.manual_seed(0)
    return Run(Path("unused"), "best", cfg, labels, get_task(task), LabModule(cfg, labels).eval())


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_member_probs_use_the_task_and_the_sliding_window(task):
    images = torch.randint(0, 255, (2, 3, 40, 44), dtype=torch.uint8)
    plain, tiled = run_for(task, False), run_for(task, True)
    tiled.module.load_state_dict(plain.module.state_dict())
    windows = []
    tiled.module.model.register_forward_hook(lambda m, args, out: windows.append(tuple(args[0].shape[-2:])))
    p, q = member_probs(Member(plain), images), member_probs(Member(tiled), images)
    assert windows and set(windows) == {(16, 16)}   # the tiled run really went tile by tile
    assert p.shape == q.shape == (2, 3, 40, 44)
    assert torch.allclose(p, q, atol=1e-5)
    with torch.no_grad():
        logits = plain.module(images)
    if task == "multiclass":
        assert torch.allclose(p.sum(1), torch.ones(2, 40, 44), atol=1e-5)   # softmax
        assert torch.allclose(p, logits.softmax(1), atol=1e-6)
    else:
        assert torch.allclose(p, logits.sigmoid(), atol=1e-6)                # sigmoid per class


def test_final_output_thresholds_and_postprocesses_at_the_resized_size():
    run = run_for("multilabel", False, threshold={"a": 0.2, "b": 0.5, "c": 0.95})
    assert run.thresholds.tolist() == pytest.approx([0.2, 0.5, 0.95])
    probs = torch.full((1, 3, 4, 4), 0.3)
    probs[:, :, 0, 0] = 0.99
    pred = final_output(run, run.task.kind.output_at(probs, (8, 8)))   # what predictions() does at the original size
    assert pred.shape == (3, 8, 8) and pred.dtype == bool
    assert pred[0].all() and not pred[1, 4:, 4:].any() and 0 < pred[2].sum() < 8   # per-class thresholds
    run = run_for("multilabel", False, threshold=0.5, largest_component=True)
    probs = torch.zeros(1, 3, 6, 6)
    probs[:, :, 0, 0] = 0.9
    probs[:, :, 2:5, 2:5] = 0.9
    pred = final_output(run, probs)
    assert not pred[:, 0, 0].any() and pred[:, 3, 3].all()                     # speck removed
    assert run.task.decide(probs, run.thresholds)[0, :, 0, 0].all()            # ... by the post-processing
    run = run_for("multiclass", False)
    assert run.thresholds is None
    pred = final_output(run, torch.tensor([0.1, 0.7, 0.2]).view(1, 3, 1, 1).expand(1, 3, 5, 5))
    assert pred.shape == (5, 5) and pred.dtype == np.uint8 and (pred == 1).all()


def test_tasks_convert_class_lists_both_ways():
    poly = LabelSpec(("a", "b"), 255, {0: 0, 1: 1, 2: 255}, "binary_masks")
    mc = get_task("multiclass").adapt_labels(poly)
    assert mc.classes == ("Background", "a", "b") and mc.source_to_class == {0: 1, 1: 2, 2: 255}
    coco = LabelSpec(("Background", "x", "y"), 255, {7: 1, 8: 2, 9: 0}, "class_map")
    ml = get_task("multilabel").adapt_labels(coco)
    assert ml.classes == ("x", "y") and ml.source_to_class == {7: 0, 8: 1, 9: 255}
    assert get_task("multilabel").adapt_labels(ml) is ml


def test_checkpoint_of_another_task_is_refused():
    cfg = config_from_dict({"task": "multilabel"})
    labels = LabelSpec(("a",), 255, {}, "binary_masks")
    with pytest.raises(CheckpointError, match="trained for task 'multiclass'"):
        check_checkpoint_meta({"task": "multiclass"}, cfg, labels, "x.ckpt")
