"""What a target *is*, as a type: one small class per kind of target, owning every operation
whose answer depends on that kind and not on the task's meaning (kornia's per-DataKey ops,
nnU-Net's LabelManager).

A kind is named by `LabelSpec.target` (saved in RUN/labels.json) and by `Task.target`;
`labels.kind` and `task.kind` give its object. The engine and the workflows ask the kind,
never a tensor's rank:

| question | method |
|---|---|
| augment a sample with its image (albumentations) | `augment` |
| the target at the resized-image cache's size | `resized_target` |
| collate a batch's targets, move a batch to a device, batch one loaded target | `collate`, `to_device`, `loaded_batch` |
| which classes a target holds (k-fold, sampler), how much of each (loss weights) | `classes_in`, `class_counts` |
| an output at another size (TTA scales, original size, ensemble members) | `output_at` |
| undo a TTA view | `undo_view` |
| combine TTA views and ensemble members | `weighted`, `summed`, `averaged` |
| one image's decision as an array (its dtype) | `decision_array` |
| draw it (`viz aug`, `viz pred`) | `draw_names`, `drawable`, `title`, `prediction_pictures` |
| what writers read from a decision | `class_map`, `class_masks` |
| how unlabelled pixels are treated (`data validate`) | `void_lines` |

The defaults are those of outputs that are probability tensors [B, C, ...] (every kind but
instances, whose outputs are lists of detections). Kinds are stateless: `target_kind(name)`
returns the one object of each.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import default_collate

from seglab.registry import Registry

KINDS = Registry("target kind")
_OBJECTS: dict[str, "TargetKind"] = {}


def target_kind(name: str) -> "TargetKind":
    """The kind object `LabelSpec.target` / `Task.target` names."""
    if name not in _OBJECTS:
        _OBJECTS[name] = KINDS.get(name, "target kind")()
    return _OBJECTS[name]


class TargetKind:
    name: str = ""
    uses_object_ids: bool = False  # copy-paste by object reads object ids beside these targets

    # ------------------------------------------------------------ one sample

    def augment(self, transform, image: np.ndarray, target, object_ids: Callable | None = None) -> dict:
        """{"image": HxWx3 uint8, "target": tensor[, "instances": object ids]} after the
        albumentations `transform`, the target moved with the image. `object_ids(shape)`
        loads the sample's object ids at the target's size (kinds that use them)."""
        raise NotImplementedError

    def resized_target(self, cache, key: str, load: Callable, size: tuple[int, int]):
        """The target of an image resized to `size`, through the resized-image cache (`load()`
        reads it at the original size)."""
        raise NotImplementedError

    def classes_in(self, target, labels) -> set[int]:
        """The classes one target holds (ignore_index where it has ignored parts)."""
        raise NotImplementedError

    def class_counts(self, target, labels) -> torch.Tensor:
        """[C] float64: how much of each class one target holds (pixels, or one per image)."""
        raise NotImplementedError

    def collate(self, targets: list):
        """A batch of targets (the dataset's items' "target" values)."""
        return default_collate(targets)

    def to_device(self, batch, device):
        """A batch of targets or of outputs on `device`."""
        return batch.to(device)

    def loaded_batch(self, target):
        """One target as its source loads it (an array, a class index), as a batch of one:
        what `evaluate --original-size` scores against."""
        return torch.as_tensor(np.asarray(target))[None]

    # ------------------------------------------------------------ outputs

    def output_at(self, output, size: tuple[int, int]):
        """An output of a batch at image size `size` (per-image outputs have none: unchanged)."""
        return output

    def undo_view(self, output, flip: str | None, size: tuple[int, int]):
        """The output of a flipped and/or scaled TTA view mapped back to the plain view of
        size `size` (flip: "h", "v", "hv" or None)."""
        return output

    def weighted(self, output, share: float):
        """An ensemble member's output counted with its share of the weights."""
        return output * share

    def summed(self, total, output):
        """`total` (None at first) with one more output added; the running combination of TTA
        views or ensemble members (in place: one batch of outputs per member is alive)."""
        return output.clone() if total is None else total.add_(output)

    def averaged(self, total, count: int):
        """The combination of `count` equal parts summed into `total` (1 when the parts were
        weighted by their shares)."""
        return total if count == 1 else total / count

    def decision_array(self, decision: torch.Tensor, labels) -> np.ndarray:
        """One image's decision as the array post-processing and writers get."""
        return decision.cpu().numpy()

    # ------------------------------------------------------------ drawing

    def draw_names(self, labels) -> list[str]:
        """The class names of the values `drawable` draws."""
        return list(labels.classes)

    def drawable(self, target) -> np.ndarray | None:
        """A class map to draw for a target (as loaded, or a dataset's tensor) or a decision,
        or None (nothing per pixel)."""
        return None

    def title(self, sample_id: str, target, labels) -> str:
        """A picture's title for a sample and its target."""
        return sample_id

    def prediction_pictures(self, samples: Iterable[tuple], labels, split: str) -> Iterator[tuple[str, np.ndarray]]:
        """(file stem, picture) for `viz pred`; `samples` yields (id, image, target or None,
        decided output)."""
        raise NotImplementedError

    # ------------------------------------------------------------ writing

    def class_map(self, output: np.ndarray) -> np.ndarray | None:
        """A decision as one class per pixel, or None when it has no such form."""
        return None

    def class_masks(self, output: np.ndarray, classes: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        """(class name, boolean [H, W] mask) of each class a decision names."""
        raise NotImplementedError(f"{self.name} decisions have no masks")

    def void_lines(self, labels) -> list[str]:
        """How pixels without a class are treated, for `seglab data validate`."""
        return []
