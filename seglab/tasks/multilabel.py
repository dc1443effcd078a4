"""Multi-label segmentation (competition B): C x H x W boolean masks (classes overlap),
sigmoid, a threshold per class, the competition's Dice per image and class."""

from __future__ import annotations

from dataclasses import replace

from seglab.task import TASKS
from seglab.errors import ConfigError
from seglab.tasks.segmentation import SegmentationTask, is_background


@TASKS.register("multilabel")
class MultilabelTask(SegmentationTask):
    name = "multilabel"
    target = "binary_masks"
    scalar_metrics = ("dice",)
    per_class_key = "per_class_dice"
    per_class_log = "val_dice"
    default_monitor = "dice"
    loss_targets = "binary"
    writers = ("rle", "png")

    def defaults(self, cfg):
        return {**super().defaults(cfg), "loss": [{"name": "bce_dice"}]}

    def adapt_labels(self, spec):
        """One channel per class; a multi-class Background has none (it is "no channel on").

        Source labels mapped to Background or to ignore are dropped (mapped to
        ignore_index, which the multi-label rasterisers skip): multi-label masks have
        no ignore value.
        """
        from seglab.data.labels import LabelSpec

        if spec.target == self.target:
            return spec
        keep = [i for i, c in enumerate(spec.classes) if not is_background(c)]
        if not keep:
            raise ConfigError("data.classes: the multilabel task needs at least one class besides Background")
        new_index = {old: new for new, old in enumerate(keep)}
        mapping = {src: new_index.get(c, spec.ignore_index) for src, c in spec.source_to_class.items()}
        return replace(LabelSpec(tuple(spec.classes[i] for i in keep), spec.ignore_index, mapping, self.target), facets=spec.facets)

    def probabilities(self, logits):
        return logits.float().sigmoid()

    def logits(self, probs):
        import torch

        return torch.logit(probs.float(), eps=1e-6)

    def thresholds(self, cfg, labels):
        from seglab.inference.postprocess import threshold_vector

        return threshold_vector(cfg.postprocess, labels.classes)

    def decide(self, probs, thresholds=None):
        """Boolean masks [B, C, H, W]: probability strictly above the class's threshold."""
        if thresholds is None:
            return probs > 0.5
        return probs > thresholds.to(probs.device, probs.dtype).view(1, -1, *([1] * (probs.dim() - 2)))

    def merge_probabilities(self, probs, merge):
        """A merged class's probability is the maximum of its members' (classes overlap, so a
        sum would count a pixel twice): with equal thresholds, its mask is exactly the union
        of the members' masks. Members with different thresholds decide at their lowest."""
        import torch

        return torch.stack([probs[:, group].amax(1) for group in merge.groups()], 1)

    def merge_targets(self, target, merge):
        """C x H x W booleans in submission space: a merged class's mask is its members' union."""
        import torch

        return torch.stack([target[:, group].any(1) for group in merge.groups()], 1)

    def per_image_loss(self, probs, target):
        """[B] mean binary cross-entropy over each image's classes and pixels."""
        import torch.nn.functional as F

        return F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target.float(), reduction="none").flatten(1).mean(1)

    def metric(self, labels, device=None):
        from seglab.metrics.dice import DiceScore

        return DiceScore(labels.num_classes, device=device)

    def format_table(self, scores, title=""):
        from seglab.metrics.dice import format_dice_table

        return format_dice_table(scores, title)

    def visualizer(self, cfg, labels, run_dir):
        from seglab.visualization.binary_masks import BinaryMaskVisualizer

        return BinaryMaskVisualizer(run_dir, list(labels.classes), every_n_epochs=cfg.logging.viz_every_n_epochs,
                                    num_samples=cfg.logging.viz_samples, worst_k=cfg.logging.viz_worst_k,
                                    mean=cfg.augment.mean, std=cfg.augment.std)

    def suspect_panel(self, image, target, probs, labels, title, thresholds=None):
        """One TP/FP/FN tile per class present in the labels or the prediction, with its Dice."""
        import numpy as np

        from seglab.visualization.binary_masks import per_class_mask_panel

        pred = self.decide(probs[None], thresholds)[0].cpu().numpy()
        return per_class_mask_panel(image, np.asarray(target, bool), pred, list(labels.classes), title)

    def confident_target(self, probs, threshold, labels, thresholds=None):
        """C x H x W masks (the run's decision) and the share of decisions whose probability is
        at least `threshold` or at most 1 - `threshold` (multi-label masks have no ignore value)."""
        confident = (probs >= threshold) | (probs <= 1 - threshold)
        return self.decide(probs[None], thresholds)[0].cpu().numpy(), float(confident.float().mean())

    def pseudo_categories(self, labels) -> list[str]:
        return list(labels.classes)

    def category_masks(self, target, labels) -> dict:
        """Channel c -> category c + 1."""
        return {c + 1: target[c] for c in range(target.shape[0])}
