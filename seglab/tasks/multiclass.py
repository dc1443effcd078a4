"""Multi-class segmentation (competition A): one class per pixel, softmax, argmax, mIoU
from one confusion matrix over the whole evaluation set."""

from __future__ import annotations

from dataclasses import replace

from seglab.task import TASKS
from seglab.errors import ConfigError
from seglab.tasks.segmentation import BACKGROUND, SegmentationTask, is_background


@TASKS.register("multiclass")
class MulticlassTask(SegmentationTask):
    name = "multiclass"
    target = "class_map"
    scalar_metrics = ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU")
    per_class_key = "per_class_iou"
    per_class_log = "val_iou"
    default_monitor = "mIoU"
    loss_targets = "index"

    def adapt_labels(self, spec):
        """A list of overlapping classes gets a Background class 0 (pixels no label covers)."""
        from seglab.data.labels import LabelSpec

        if spec.target == self.target:
            return spec
        classes = list(spec.classes)
        if classes and is_background(classes[0]):
            return replace(spec, target=self.target)
        if any(is_background(c) for c in classes):
            raise ConfigError(f"data.classes: {BACKGROUND!r} must be class 0 for the multiclass task")
        if spec.ignore_index < len(classes) + 1:
            raise ConfigError(f"data.ignore_index {spec.ignore_index} collides with a class index")
        shifted = {src: (c + 1 if c < spec.num_classes else spec.ignore_index) for src, c in spec.source_to_class.items()}
        return LabelSpec((BACKGROUND, *classes), spec.ignore_index, shifted, self.target)

    def probabilities(self, logits):
        return logits.float().softmax(1)

    def logits(self, probs):
        # log p: softmax(log p) = p, and cross-entropy of log p is that of the blended p.
        return probs.float().clamp_min(1e-12).log()

    def decide(self, probs, thresholds=None):
        """Class map [B, H, W] (thresholds do not apply to softmax outputs)."""
        return probs.argmax(1)

    def metric(self, labels, device=None):
        from seglab.metrics.confusion import SegmentationConfusion

        return SegmentationConfusion(labels.num_classes, labels.ignore_index, device)

    def format_table(self, scores, title=""):
        from seglab.metrics.confusion import format_table

        return format_table(scores, title)

    def history_extra(self, metric) -> dict:
        return {"confusion_matrix": metric.mat.cpu().tolist()}

    def visualizer(self, cfg, labels, run_dir):
        from seglab.visualization.class_maps import ValidationVisualizer

        return ValidationVisualizer(run_dir, list(labels.classes), labels.ignore_index, every_n_epochs=cfg.logging.viz_every_n_epochs,
                                    num_samples=cfg.logging.viz_samples, worst_k=cfg.logging.viz_worst_k,
                                    mean=cfg.augment.mean, std=cfg.augment.std)

    def suspect_panel(self, image, target, probs, labels, title, thresholds=None):
        from seglab.visualization.figures import prediction_panel

        return prediction_panel(image, target, probs.argmax(0).cpu().numpy(), list(labels.classes), labels.ignore_index, title)

    def confident_target(self, probs, threshold, labels, thresholds=None):
        """Class map [H, W] with pixels whose winning probability is below `threshold` set to ignore."""
        import numpy as np
        import torch

        conf, cls = probs.max(0)
        keep = conf >= threshold
        out = torch.where(keep, cls, torch.full_like(cls, labels.ignore_index))
        dtype = np.uint8 if max(labels.ignore_index, probs.shape[0] - 1) <= 255 else np.uint16
        return out.cpu().numpy().astype(dtype), float(keep.float().mean())

    def pseudo_categories(self, labels) -> list[str]:
        """Class 0 is the unannotated rest: it has no category."""
        return list(labels.classes[1:])

    def category_masks(self, target, labels) -> dict:
        """Class c -> category c for c >= 1; ignore_index -> the `ignore` category."""
        masks = {c: target == c for c in range(1, labels.num_classes)}
        masks[labels.num_classes] = target == labels.ignore_index
        return masks
