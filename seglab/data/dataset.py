"""One dataset for every task and layout: a *source* knows the samples, the dataset
decodes, augments and returns tensors.

A source (`seglab.data.sources.base.Source`) gives images and targets in the form its
labels' kind names (`seglab.kinds`: a class map [H, W], C x H x W booleans, one class
index); the kind augments a target with its image. Items are {"image": uint8 [3, H, W],
"target": the target as a tensor, "id", "index"} (and "instances", object ids beside class
maps, when copy-paste pastes objects).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.cache import ArrayCache, file_stamp
from seglab.errors import DataError


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

    @property
    def kind(self):
        return self.source.labels.kind

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
        if self.resized_cache is None:
            return self.source.load_target(i)
        # The label file's own stamp is in the key: an edited label file is resized anew.
        key = f"mask:{self.source.sample_id(i)}:{self.source.target_stamp(i)}"
        return self.kind.resized_target(self.resized_cache, key, lambda: self.source.load_target(i), self.size)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # A training sampler sends (index, augmentation seed): the same image then gets the
        # same augmentation in any worker and in a resumed run (see seglab.data.resumable).
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        if aug_seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(aug_seed)
        image = self._image(i)
        item = {"id": self.source.sample_id(i), "index": i}
        if self.with_targets:
            object_ids = (lambda shape: self._instances(i, shape)) if self.with_instances else None
            item.update(self.kind.augment(self.transform, image, self._target(i), object_ids))
        else:
            item["image"] = self.transform(image=image)["image"]
        item["image"] = torch.from_numpy(np.ascontiguousarray(item["image"].transpose(2, 0, 1)))
        return item
