"""An image class: one class index per image. Image classification (competition C)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from seglab.kinds.base import KINDS, TargetKind


@KINDS.register("class")
class ImageClass(TargetKind):
    name = "class"

    def augment(self, transform, image, target, object_ids: Callable | None = None) -> dict:
        return {"image": transform(image=image)["image"], "target": torch.tensor(int(target), dtype=torch.int64)}

    def resized_target(self, cache, key, load, size):
        return load()  # nothing to resize, nothing to cache

    def classes_in(self, target, labels) -> set[int]:
        return {int(target)}

    def class_counts(self, target, labels) -> torch.Tensor:
        counts = torch.zeros(labels.num_classes, dtype=torch.float64)
        if 0 <= int(target) < labels.num_classes:
            counts[int(target)] = 1
        return counts

    def title(self, sample_id, target, labels) -> str:
        return f"{sample_id} ({labels.classes[int(target)]})"

    def prediction_pictures(self, samples: Iterable[tuple], labels, split: str) -> Iterator[tuple[str, np.ndarray]]:
        """One captioned gallery of every image (true class where known, predicted class)."""
        from seglab.visualization.figures import captioned_gallery

        tiles = []
        for sample_id, image, target, output in samples:
            true = f"true {labels.classes[int(target)]}\n" if target is not None else ""
            tiles.append((image, f"{sample_id[-28:]}\n{true}pred {labels.classes[int(output)]}"))
        if tiles:
            yield "predictions", captioned_gallery(tiles, f"{split}: predictions")
