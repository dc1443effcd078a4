"""One dataset for every task and layout: a *source* knows the samples, the dataset
decodes, augments and returns tensors.

A source (`seglab.data.sources`) has `__len__`, `sample_id(i)`, `image_path(i)`,
`original_size(i)`, `load_image(i)` and `load_target(i)`: a class map [H, W], C x H x W
booleans or one class index, as its labels ask. Items are
{"image": uint8 [3, H, W], "target": the same (masks augmented with the image), "id", "index"}.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.cache import ArrayCache, file_stamp
from seglab.errors import DataError


def is_mask(target) -> bool:
    return isinstance(target, np.ndarray) and target.ndim >= 2


class LabDataset(Dataset):
    def __init__(self, source, transform, with_targets: bool = True, resized_cache: ArrayCache | None = None,
                 size: tuple[int, int] | None = None, with_instances: bool = False):
        if with_targets and not source.has_targets:
            raise DataError(f"{source.name}: split has no labels")
        self.source = source
        self.transform = transform
        self.with_targets = with_targets
        # With a resized cache the transform has no Resize: images and masks come pre-resized.
        self.resized_cache, self.size = resized_cache, size
        # Object ids beside a class map ("instances", transformed with it), for copy-paste by object.
        self.with_instances = with_instances

    def _instances(self, i: int, shape: tuple[int, int]) -> np.ndarray:
        """Image i's object ids at the class map's size; all 0 (no ids: copy-paste falls back
        to connected components) for a source without annotations (label maps)."""
        ids = self.source.load_instances(i)
        if ids is None:
            return np.zeros(shape, np.uint16)
        if ids.shape != tuple(shape):  # the class map came resized from the cache
            ids = cv2.resize(ids, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return ids

    def __len__(self) -> int:
        return len(self.source)

    def _image(self, i: int) -> np.ndarray:
        if self.resized_cache is None:
            return self.source.load_image(i)
        key = f"image:{self.source.sample_id(i)}:{file_stamp(self.source.image_path(i))}"
        h, w = self.size
        return self.resized_cache.get(key, lambda: cv2.resize(self.source.load_image(i), (w, h), interpolation=cv2.INTER_LINEAR))

    def _target(self, i: int):
        if self.resized_cache is None or self.source.labels.target == "class":
            return self.source.load_target(i)
        # The label file's own stamp is in the key: an edited label file is resized anew.
        stamp = self.source.target_stamp(i)
        return self.resized_cache.get(f"mask:{self.source.sample_id(i)}:{stamp}",
                                      lambda: _resize_mask(self.source.load_target(i), self.size))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # A training sampler sends (index, augmentation seed): the same image then gets the
        # same augmentation in any worker and in a resumed run (see seglab.data.resumable).
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        if aug_seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(aug_seed)
        image = self._image(i)
        item = {"id": self.source.sample_id(i), "index": i}
        target = self._target(i) if self.with_targets else None
        if is_mask(target):
            if target.ndim == 3:
                # C x H x W booleans as albumentations' `masks` (N x H x W, each transformed like a
                # mask): an H x W x C view would be copied whole before a crop, 121 MB per 29-class
                # 2048 px image, 20x slower than cropping the channels (benchmarks/fullres.py).
                out = self.transform(image=image, masks=target.view(np.uint8))
                mask = np.asarray(out["masks"]).astype(bool)
            elif self.with_instances:
                # Class map and object ids as two masks: every geometric transform moves them alike.
                both = np.stack([target.astype(np.uint16), self._instances(i, target.shape)])
                out = self.transform(image=image, masks=both)
                both = np.asarray(out["masks"])
                mask = both[0].astype(target.dtype)
                item["instances"] = torch.from_numpy(both[1].astype(np.int32))
            else:
                out = self.transform(image=image, mask=target)
                mask = out["mask"]
            item["target"] = torch.from_numpy(np.ascontiguousarray(mask))
            if item["target"].dtype == torch.uint16:
                item["target"] = item["target"].to(torch.int32)
        else:
            out = self.transform(image=image)
            if target is not None:
                item["target"] = torch.tensor(int(target), dtype=torch.int64)
        item["image"] = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return item


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if mask.ndim == 2:
        return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    # C x H x W booleans (multilabel): resize each channel, keep the layout
    return np.stack([cv2.resize(m.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in mask]).astype(bool)
