"""What the two dense kinds share (a target per pixel: class maps and binary masks):
nearest-neighbour resizing for the resized-image cache, bilinear resizing and flipping of
probabilities, one picture per image in `viz pred`, and what batch augmentation asks of a
target's pixels (`seglab.data.batch_augment`)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from seglab.kinds.base import TargetKind

FLIP_DIMS = {"h": (-1,), "v": (-2,), "hv": (-2, -1)}
VOID_NAMES = ("void", "unlabelled", "unlabeled", "ignore", "other", "background_void")


class DenseKind(TargetKind):
    exclusive: bool = False  # each pixel holds exactly one class (class 0 the rest): morphology moves pixels to and from it

    def resize(self, target: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The target at `size` (nearest neighbour: every pixel keeps a label it had)."""
        raise NotImplementedError

    def resized_target(self, cache, key: str, load: Callable, size: tuple[int, int]):
        return cache.get(key, lambda: self.resize(load(), size))

    def output_at(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(output.shape[-2:]) == tuple(size):
            return output
        return F.interpolate(output.float(), size=tuple(size), mode="bilinear", align_corners=False)

    def undo_view(self, output: torch.Tensor, flip: str | None, size: tuple[int, int]) -> torch.Tensor:
        if flip:
            output = torch.flip(output, FLIP_DIMS[flip])
        return self.output_at(output, size)

    def clean(self, decision: np.ndarray, plan: dict) -> np.ndarray:
        """A decision after a morphology plan ({class index: steps}, `seglab.inference.morphology`),
        class by class in class order; untouched without steps."""
        from seglab.inference.morphology import steps_of

        plan = steps_of(plan)
        if not plan:
            return decision
        out = decision.copy()
        for c, steps in sorted(plan.items()):
            self.clean_class(out, decision, c, steps)
        return out

    def clean_class(self, out: np.ndarray, decision: np.ndarray, c: int, steps) -> None:
        """Class c of `decision` through its steps, written into `out`."""
        raise NotImplementedError

    # ------------------------------------------------------------ batch augmentation

    def object_pixels(self, masks: torch.Tensor, classes, ignore_index: int) -> torch.Tensor:
        """[B, H, W] bool: the pixels of a batch of targets holding one of `classes` (None: any
        object class)."""
        raise NotImplementedError

    def class_regions(self, mask: np.ndarray, classes, ignore_index: int) -> list[np.ndarray]:
        """One image's boolean [H, W] region of each of `classes` (None: every object class)."""
        raise NotImplementedError

    def as_channels(self, masks: torch.Tensor) -> torch.Tensor:
        """A batch of targets as float [B, K, H, W] channels (to be warped with the images)."""
        raise NotImplementedError

    def from_channels(self, channels: torch.Tensor) -> torch.Tensor:
        """`as_channels` undone (the values still float)."""
        raise NotImplementedError

    # ------------------------------------------------------------ drawing and data validate

    def prediction_pictures(self, samples: Iterable[tuple], labels, split: str) -> Iterator[tuple[str, np.ndarray]]:
        """One panel per image: image | ground truth | prediction | errors where it has labels,
        image | prediction where not."""
        from seglab.visualization.figures import class_palette, prediction_only_panel, prediction_panel, safe_filename

        names = self.draw_names(labels)
        palette = class_palette(len(names))
        for sample_id, image, target, output in samples:
            pred = self.drawable(output)
            if target is not None:
                panel = prediction_panel(image, self.drawable(target), pred, names, labels.ignore_index, title=sample_id,
                                         palette=palette)
            else:
                panel = prediction_only_panel(image, pred, names, labels.ignore_index, sample_id, palette)
            yield f"pred_{safe_filename(sample_id)}", panel

    def void_lines(self, labels) -> list[str]:
        return [f"class {name!r} looks like void: to leave it out of the loss and the metric, "
                f"set data.remap={{{name}: ignore}} (or {{{name}: {labels.classes[0]}}} to merge it into class 0)"
                for name in labels.classes if name.lower() in VOID_NAMES]
