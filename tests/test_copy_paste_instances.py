"""Instance copy-paste (`copy_paste` with `unit: instance`): one object, a connected
component of one class, lands with its exact mask, pixel for pixel, for both mask types."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.config import config_from_dict
from seglab.data.batch_augment import CopyPaste, batch_problems


def pair_multiclass():
    """Image 0: the partner, two class-2 objects (an L and a square) and a class-1 bar.
    Image 1: the target, all class 3 (so every pasted label is visible)."""
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[0, 1:6, 1:3] = 2
    masks[0, 4:6, 1:6] = 2           # an L shape
    masks[0, 10:14, 10:14] = 2       # a second class-2 object, apart from the first
    masks[0, 8, 2:9] = 1
    masks[1] = 3
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[0] = torch.arange(256, dtype=torch.uint8).view(16, 16)   # every pixel distinct
    images[1] = 200
    return images, masks


def objects_of(mask: np.ndarray, cls: int) -> list[np.ndarray]:
    import cv2

    n, comp = cv2.connectedComponents((mask == cls).astype(np.uint8), connectivity=8)
    return [comp == k for k in range(1, n)]


def test_an_instance_lands_with_its_exact_mask_multiclass():
    images, masks = pair_multiclass()
    aug = CopyPaste(p=1.0, classes=[2], unit="instance", class_names=["bg", "a", "b", "c"])
    out_images, out_masks = aug(images, masks, torch.Generator().manual_seed(3))
    pasted = (out_masks[1] != 3).numpy()
    # Exactly one of the partner's two class-2 objects, whole: its footprint and nothing else.
    candidates = objects_of(masks[0].numpy(), 2)
    assert sum((pasted == obj).all() for obj in candidates) == 1
    assert (out_masks[1][torch.as_tensor(pasted)] == 2).all()
    assert torch.equal(out_images[1][:, torch.as_tensor(pasted)], images[0][:, torch.as_tensor(pasted)])
    assert (out_images[1][:, ~torch.as_tensor(pasted)] == 200).all()
    # The partner got nothing: the target has no class-2 objects.
    assert torch.equal(out_masks[0], masks[0]) and torch.equal(out_images[0], images[0])


def test_class_unit_pastes_every_object_of_the_class_instance_unit_one():
    images, masks = pair_multiclass()
    whole = CopyPaste(p=1.0, classes=[2], class_names=["bg", "a", "b", "c"])
    _, out = whole(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(out[1] == 2, masks[0] == 2)
    many = CopyPaste(p=1.0, classes=[2], unit="instance", objects=5, class_names=["bg", "a", "b", "c"])
    _, out = many(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(out[1] == 2, masks[0] == 2)   # asked for more objects than there are: all of them


def test_a_mirrored_instance_lands_mirrored():
    images, masks = pair_multiclass()
    aug = CopyPaste(p=1.0, classes=[1], unit="instance", hflip_p=1.0, class_names=["bg", "a", "b", "c"])
    out_images, out_masks = aug(images, masks, torch.Generator().manual_seed(0))
    expected = torch.flip(masks[0] == 1, dims=[-1])
    assert torch.equal(out_masks[1] != 3, expected) and (out_masks[1][expected] == 1).all()
    assert torch.equal(out_images[1][:, expected], torch.flip(images[0], dims=[-1])[:, expected])


def test_a_multilabel_instance_keeps_the_classes_it_overlaps():
    """The partner's disc (channel 0) overlaps its square (channel 1); pasting the disc pastes
    its full C-channel mask under its footprint: square bits included, nothing outside."""
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    masks[0, 0, 2:8, 2:8] = True            # disc: the only channel-0 object
    masks[0, 1, 5:12, 5:12] = True          # square, overlapping the disc
    masks[1, 2, :, :] = True                # the target: channel 2 everywhere
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[0] = torch.arange(256, dtype=torch.uint8).view(16, 16)
    images[1] = 50
    aug = CopyPaste(p=1.0, classes=["disc"], unit="instance", class_names=["disc", "square", "bar"])
    out_images, out_masks = aug(images, masks, torch.Generator().manual_seed(1))
    footprint = masks[0, 0]
    expected = masks[1].clone()
    expected[:, footprint] = masks[0][:, footprint]
    assert torch.equal(out_masks[1], expected)
    assert out_masks[1, 1, 5:8, 5:8].all() and not out_masks[1, 1, 8:12, 8:12].any()   # overlap kept, rest not
    assert torch.equal(out_images[1][:, footprint], images[0][:, footprint])
    assert (out_images[1][:, ~footprint] == 50).all()


def test_instance_parameters_are_checked():
    cfg = config_from_dict({"task": "multilabel", "augment": {"batch": [
        {"name": "copy_paste", "unit": "object"}, {"name": "copy_paste", "unit": "instance", "objects": 0}]}})
    problems = batch_problems(cfg.augment.batch)
    assert len(problems) == 2 and "unit must be 'class' or 'instance'" in problems[0] and "objects" in problems[1]
    with pytest.raises(ValueError):
        CopyPaste(unit="instance", objects=1.5)
