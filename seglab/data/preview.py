"""What the training step sees: augmented samples for `seglab viz aug`.

Images are drawn in the configured training order (`data.sampler`), augmented by
`augment.train` one by one, then batched and passed through `augment.batch` exactly
as the segmentation tasks' training step does, so every augmentation of the config shows.
"""

from __future__ import annotations

from typing import Iterator

import torch

from seglab.data import build_dataset, resolve_labels
from seglab.data.batch_augment import build_batch_augment
from seglab.data.sampling import build_train_sampler
from seglab.errors import ConfigError, DataValidationError


def augmented_samples(cfg, n: int, seed: int = 0) -> tuple[list[str], Iterator[tuple]]:
    """The class names to draw with and n samples: (title, image, class map or None, augmented
    image, augmented class map or None), HxWx3 uint8 images, as the target kind draws them
    (multi-label masks: the topmost class of each pixel, class 0 = none; an image class is
    named in the title)."""
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
    batch_augment = build_batch_augment(cfg.augment.batch, labels)
    if batch_augment is not None and items:
        if len({tuple(m.shape) for m in masks}) > 1:
            raise ConfigError("augment.batch mixes images of one batch, so they must share a size: set data.image_size "
                              "or end augment.train with a fixed-size crop")
        ids = torch.stack([item["instances"] for item in items]) if "instances" in items[0] else None
        stacked = batch_augment(torch.stack(images), torch.stack(masks), torch.Generator().manual_seed(seed), ids)
        images, masks = list(stacked[0]), list(stacked[1])
    kind = labels.kind

    def samples():
        for item, image, mask in zip(items, images, masks):
            original = plain[item["index"]]
            yield (kind.title(item["id"], mask, labels), original["image"].permute(1, 2, 0).numpy(),
                   kind.drawable(original["target"]), image.permute(1, 2, 0).numpy(), kind.drawable(mask))

    return kind.draw_names(labels), samples()
