"""What the training step sees: augmented samples for `seglab viz aug`.

Images are drawn in the configured training order (`data.sampler`), augmented by
`augment.train` one by one, then batched and passed through `augment.batch` exactly
as the segmentation tasks' training step does, so every augmentation of the config shows.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from seglab.data import build_dataset, resolve_labels
from seglab.data.batch_augment import build_batch_augment
from seglab.data.sampling import build_train_sampler
from seglab.errors import ConfigError, DataValidationError


def augmented_samples(cfg, n: int, seed: int = 0) -> tuple[list[str], Iterator[tuple]]:
    """The class names to draw with and n samples: (title, image, class map or None, augmented
    image, augmented class map or None), HxWx3 uint8 images. Multi-label masks are drawn as
    the topmost class of each pixel (class 0 = none); an image class is named in the title."""
    from seglab.core.combinations import crop_problems

    problems = crop_problems(cfg)
    if problems:
        raise DataValidationError(problems)
    labels = resolve_labels(cfg)
    plain = build_dataset(cfg, "train", labels, train=False, with_targets=True)
    augmented = build_dataset(cfg, "train", labels, train=True, with_targets=True)
    augmented.transform.set_random_seed(seed)
    sampler = build_train_sampler(augmented, cfg.data.sampler, seed)
    order = list(sampler) if sampler is not None else torch.randperm(len(augmented), generator=torch.Generator().manual_seed(seed)).tolist()
    items = [augmented[i] for i in order[:n]]
    images = [item["image"] for item in items]
    masks = [item["target"] for item in items]
    batch_augment = build_batch_augment(cfg.augment.batch, labels.classes, labels.ignore_index)
    if batch_augment is not None and items:
        if len({tuple(m.shape) for m in masks}) > 1:
            raise ConfigError("augment.batch mixes images of one batch, so they must share a size: set data.image_size "
                              "or end augment.train with a fixed-size crop")
        ids = torch.stack([item["instances"] for item in items]) if "instances" in items[0] else None
        stacked = batch_augment(torch.stack(images), torch.stack(masks), torch.Generator().manual_seed(seed), ids)
        images, masks = list(stacked[0]), list(stacked[1])

    def samples():
        for item, image, mask in zip(items, images, masks):
            original = plain[item["index"]]
            title = item["id"] if mask.dim() else f"{item['id']} ({labels.classes[int(mask)]})"
            yield (title, original["image"].permute(1, 2, 0).numpy(), drawable(original["target"].numpy()),
                   image.permute(1, 2, 0).numpy(), drawable(mask.numpy()))

    names = ["none", *labels.classes] if labels.target == "binary_masks" else list(labels.classes)
    return names, samples()


def drawable(target: np.ndarray) -> np.ndarray | None:
    """A class map to draw: a class map as it is, C x H x W booleans as 1 + the topmost class
    of each pixel (0 where none), nothing for an image class."""
    if target.ndim == 2:
        return target
    if target.ndim == 3:
        top = target.shape[0] - np.argmax(target[::-1], axis=0)  # 1 + the last channel that is on
        return np.where(target.any(0), top, 0).astype(np.uint8 if target.shape[0] < 255 else np.uint16)
    return None
