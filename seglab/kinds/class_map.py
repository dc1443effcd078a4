"""Class maps: one class index per pixel, [H, W] (class 0 the pixels no annotation covers,
ignore_index the ignored ones). Multi-class segmentation (competition A)."""

from __future__ import annotations

from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from seglab.kinds.base import KINDS
from seglab.kinds.dense import DenseKind


@KINDS.register("class_map")
class ClassMap(DenseKind):
    name = "class_map"
    uses_object_ids = True
    exclusive = True

    def augment(self, transform, image, target, object_ids: Callable | None = None) -> dict:
        extra = {}
        if object_ids is not None:
            # Class map and object ids as two masks: every geometric transform moves them alike.
            both = np.stack([target.astype(np.uint16), object_ids(target.shape)])
            out = transform(image=image, masks=both)
            both = np.asarray(out["masks"])
            mask = both[0].astype(target.dtype)
            extra["instances"] = torch.from_numpy(both[1].astype(np.int32))
        else:
            out = transform(image=image, mask=target)
            mask = out["mask"]
        tensor = torch.from_numpy(np.ascontiguousarray(mask))
        if tensor.dtype == torch.uint16:
            tensor = tensor.to(torch.int32)
        return {"image": out["image"], "target": tensor, **extra}

    def resize(self, target, size):
        h, w = size
        return cv2.resize(target, (w, h), interpolation=cv2.INTER_NEAREST)

    def classes_in(self, target, labels) -> set[int]:
        return set(np.unique(target).tolist())

    def class_counts(self, target, labels) -> torch.Tensor:
        values = torch.from_numpy(np.asarray(target).astype("int64")).flatten()
        values = values[values < labels.num_classes]
        return torch.bincount(values, minlength=labels.num_classes).double()

    def decision_array(self, decision, labels) -> np.ndarray:
        return decision.to(torch.uint8 if labels.num_classes <= 256 else torch.int32).cpu().numpy()

    def clean_class(self, out, decision, c, steps):
        """Pixels a step removes become Background; Background pixels it adds take the class."""
        from seglab.inference.morphology import clean_mask

        if c == 0:
            return  # Background is what the other classes leave
        before = decision == c
        after = clean_mask(before, steps)
        out[before & ~after] = 0
        out[after & ~before & (decision == 0)] = c  # additions never overwrite another class

    # ------------------------------------------------------------ batch augmentation

    def object_pixels(self, masks, classes, ignore_index):
        if classes is None:
            return (masks != 0) & (masks != ignore_index)
        return torch.isin(masks, torch.as_tensor(classes, device=masks.device, dtype=masks.dtype))

    def class_regions(self, mask, classes, ignore_index):
        wanted = (lambda c: c != 0 and c != ignore_index) if classes is None else (lambda c: c in classes)  # noqa: E731
        return [mask == c for c in np.unique(mask).tolist() if wanted(c)]

    def as_channels(self, masks):
        return masks.float().unsqueeze(1)

    def from_channels(self, channels):
        return channels[:, 0]

    # ------------------------------------------------------------ drawing, writing

    def drawable(self, target):
        return np.asarray(target)

    def class_map(self, output):
        return output

    def class_masks(self, output, classes) -> Iterator[tuple[str, np.ndarray]]:
        """Each class but 0 (Background, the rest of the image: it has no mask of its own)."""
        for c in range(1, len(classes)):
            yield classes[c], output == c

    def void_lines(self, labels) -> list[str]:
        return [f"unlabelled pixels: class 0 ({labels.classes[0]}); ignored pixels (index {labels.ignore_index}) "
                f"count in neither loss nor metric"] + super().void_lines(labels)
