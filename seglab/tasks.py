"""What a segmentation task means: mask format, probabilities, predictions, metric.

`task:` in the config picks one entry of `TASKS`; training, evaluation and prediction
ask it instead of branching on the competition:

| | multiclass | multilabel |
|---|---|---|
| mask | integer class map [H, W] | C x H x W booleans (classes overlap) |
| logits -> probabilities | softmax over classes | sigmoid per class |
| probabilities -> prediction | argmax | probability > threshold (per class) |
| metric | one confusion matrix: mIoU, accuracies, fwIoU | Dice per image and class |
| background | class 0 (pixels no annotation covers) | no channel: all channels off |

Any data format can feed either task: `adapt_labels` turns the class list a source
resolved (COCO: Background + categories; polygons: the configured bones) into the
task's. Adding a task means writing one class here and registering it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from seglab.data.labels import LabelSpec
from seglab.errors import ConfigError
from seglab.registry import Registry

TASKS = Registry("task")
BACKGROUND = "Background"


def is_background(name: str) -> bool:
    return name.lower() == BACKGROUND.lower()


@TASKS.register("multiclass")
class MulticlassTask:
    name = "multiclass"
    scalar_metrics = ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU")
    per_class_keys = ("per_class_iou", "per_class_accuracy")
    per_class_log = "val_iou"
    default_monitor = "mIoU"
    class_map_panels = True  # the validation visualiser draws class maps

    def adapt_labels(self, spec: LabelSpec) -> LabelSpec:
        """Multi-label class lists get a Background class 0 (pixels no label covers)."""
        if spec.task == "multiclass":
            return spec
        classes = list(spec.classes)
        if classes and is_background(classes[0]):
            return replace(spec, task="multiclass")
        if any(is_background(c) for c in classes):
            raise ConfigError(f"data.classes: {BACKGROUND!r} must be class 0 for the multiclass task")
        shifted = {src: (c + 1 if c < spec.num_classes else spec.ignore_index) for src, c in spec.source_to_class.items()}
        if spec.ignore_index < len(classes) + 1:
            raise ConfigError(f"data.ignore_index {spec.ignore_index} collides with a class index")
        return LabelSpec((BACKGROUND, *classes), spec.ignore_index, shifted, "multiclass")

    def metric(self, labels: LabelSpec, device=None):
        from seglab.metrics import ConfusionMatrix

        return ConfusionMatrix(labels.num_classes, labels.ignore_index, device)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1)

    def predict(self, probs: torch.Tensor, thresholds: torch.Tensor | None = None) -> torch.Tensor:
        """Class map [B, H, W] (thresholds do not apply to softmax outputs)."""
        return probs.argmax(1)

    def history_extra(self, metric) -> dict:
        return {"confusion_matrix": metric.mat.cpu().tolist()}

    def last_result_extra(self, metric) -> dict:
        return {"confusion_matrix": metric.mat.detach().cpu()}

    def format_table(self, scores: dict, title: str = "") -> str:
        from seglab.metrics import format_table

        return format_table(scores, title)


@TASKS.register("multilabel")
class MultilabelTask:
    name = "multilabel"
    scalar_metrics = ("dice",)
    per_class_keys = ("per_class_dice",)
    per_class_log = "val_dice"
    default_monitor = "dice"
    class_map_panels = False

    def adapt_labels(self, spec: LabelSpec) -> LabelSpec:
        """One channel per class; a multi-class Background has none (it is "no channel on").

        Source labels mapped to Background or to ignore are dropped (mapped to
        ignore_index, which the multi-label rasterisers skip): multi-label masks have
        no ignore value.
        """
        if spec.task == "multilabel":
            return spec
        keep = [i for i, c in enumerate(spec.classes) if not is_background(c)]
        new_index = {old: new for new, old in enumerate(keep)}
        mapping = {src: new_index.get(c, spec.ignore_index) for src, c in spec.source_to_class.items()}
        if not keep:
            raise ConfigError("data.classes: the multilabel task needs at least one class besides Background")
        return LabelSpec(tuple(spec.classes[i] for i in keep), spec.ignore_index, mapping, "multilabel")

    def metric(self, labels: LabelSpec, device=None):
        from seglab.dice import DiceScore

        return DiceScore(labels.num_classes, device=device)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()

    def predict(self, probs: torch.Tensor, thresholds: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean masks [B, C, H, W]: probability strictly above the class's threshold."""
        if thresholds is None:
            return probs > 0.5
        return probs > thresholds.to(probs.device, probs.dtype).view(1, -1, *([1] * (probs.dim() - 2)))

    def history_extra(self, metric) -> dict:
        return {}

    def last_result_extra(self, metric) -> dict:
        return {}

    def format_table(self, scores: dict, title: str = "") -> str:
        from seglab.dice import format_dice_table

        return format_dice_table(scores, title)


def get_task(name: str):
    """The task object for a config's `task` value."""
    return TASKS.get(name, "task")()
