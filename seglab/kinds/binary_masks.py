"""Binary masks: C x H x W booleans, one channel per class, classes overlap (no channel is
"none": a pixel of no class has every channel off). Multi-label segmentation (competition B)."""

from __future__ import annotations

from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from seglab.errors import DataError
from seglab.kinds.base import KINDS
from seglab.kinds.dense import DenseKind


@KINDS.register("binary_masks")
class BinaryMasks(DenseKind):
    name = "binary_masks"

    def augment(self, transform, image, target, object_ids: Callable | None = None) -> dict:
        # The channels as albumentations' `masks` (N x H x W, each transformed like a mask): an
        # H x W x C view would be copied whole before a crop, 121 MB per 29-class 2048 px image,
        # 20x slower than cropping the channels (benchmarks/fullres.py).
        out = transform(image=image, masks=target.view(np.uint8))
        mask = np.asarray(out["masks"]).astype(bool)
        return {"image": out["image"], "target": torch.from_numpy(np.ascontiguousarray(mask))}

    def resize(self, target, size):
        h, w = size
        return np.stack([cv2.resize(m.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in target]).astype(bool)

    def classes_in(self, target, labels) -> set[int]:
        return set(np.flatnonzero(target.reshape(target.shape[0], -1).any(1)).tolist())

    def class_counts(self, target, labels) -> torch.Tensor:
        """Positive pixels per channel."""
        target = np.asarray(target)
        return torch.from_numpy(target.reshape(target.shape[0], -1).sum(1).astype("float64"))

    def clean_class(self, out, decision, c, steps):
        from seglab.inference.morphology import clean_mask

        out[c] = clean_mask(decision[c], steps)

    # ------------------------------------------------------------ batch augmentation

    def object_pixels(self, masks, classes, ignore_index):
        """A pixel is an object's when any chosen channel is on."""
        chosen = masks.bool() if classes is None else masks[:, list(classes)].bool()
        return chosen.any(1)

    def class_regions(self, mask, classes, ignore_index):
        return [mask[c].astype(bool) for c in range(mask.shape[0]) if classes is None or c in classes]

    def as_channels(self, masks):
        return masks.float()

    def from_channels(self, channels):
        return channels

    # ------------------------------------------------------------ drawing, writing

    def draw_names(self, labels) -> list[str]:
        return ["none", *labels.classes]

    def drawable(self, target):
        """1 + the topmost class of each pixel (0 where none)."""
        target = np.asarray(target)
        top = target.shape[0] - np.argmax(target[::-1], axis=0)  # 1 + the last channel that is on
        return np.where(target.any(0), top, 0).astype(np.uint8 if target.shape[0] < 255 else np.uint16)

    def class_masks(self, output, classes) -> Iterator[tuple[str, np.ndarray]]:
        if output.shape[0] != len(classes):
            raise DataError(f"prediction has {output.shape[0]} channels but the run has {len(classes)} classes")
        yield from zip(classes, output)
