"""What the two segmentation tasks share: dense targets, segmentation models, batch
augmentation on masks, bilinear resizing of probabilities, morphology, COCO pseudo-labels.

| | multiclass | multilabel |
|---|---|---|
| target | integer class map [H, W] | C x H x W booleans (classes overlap) |
| logits -> probabilities | softmax over classes | sigmoid per class |
| probabilities -> decision | argmax | probability > threshold (per class) |
| metric | one confusion matrix: mIoU, accuracies, fwIoU | Dice per image and class |
| background | class 0 (pixels no annotation covers) | no channel: all channels off |

Any mask format feeds either task: `adapt_labels` turns the class list a source resolved
(COCO: Background + categories; polygons: the configured classes) into the task's.
"""

from __future__ import annotations

from seglab.task import Task

BACKGROUND = "Background"


def is_background(name: str) -> bool:
    return name.lower() == BACKGROUND.lower()


class SegmentationTask(Task):
    writers = ("coco_csv", "png", "rle")

    def preflight_problems(self, cfg) -> list[str]:
        from seglab.errors import SeglabError
        from seglab.models import MODELS

        try:
            MODELS.get(cfg.model.arch, "model.arch")
        except SeglabError as e:
            return [str(e)]
        return []

    def build_model(self, cfg, labels):
        from seglab.models import build_model

        return build_model(cfg.model, labels.num_classes)

    def pretrained_encoder(self, cfg):
        from seglab.models import model_encoder_ref

        return model_encoder_ref(cfg.model)

    def batch_augment(self, cfg, labels):
        from seglab.data.batch_augment import build_batch_augment

        return build_batch_augment(cfg.augment.batch, labels.classes, labels.ignore_index)

    def training_loss(self, module, batch):
        images, masks = batch["image"], batch["target"]
        if module.batch_augment is not None:
            images, masks = module.batch_augment(images, masks, instances=batch.get("instances"))
        return module.criterion(module(images), masks)

    def resize(self, probs, size):
        import torch.nn.functional as F

        if tuple(probs.shape[-2:]) == tuple(size):
            return probs
        return F.interpolate(probs.float(), size=tuple(size), mode="bilinear", align_corners=False)

    morphology = True

    def postprocess(self, prediction, cfg, labels, plan=None):
        from seglab.inference.postprocess import apply_plan, plan_from_config

        return apply_plan(prediction, plan_from_config(cfg.postprocess, labels.classes) if plan is None else plan)

    def stratification_key(self, source, labels):
        """Which classes each sample holds (k-fold keeps rare classes in every fold)."""
        from seglab.data.presence import class_presence

        return class_presence(source, labels)

    def write_pseudo_labels(self, predictions, out, ref_cfg, labels, threshold, min_confident, thresholds=None) -> dict:
        from seglab.inference.pseudo import write_coco_pseudo_labels

        confident = lambda probs: self.confident_target(probs, threshold, labels, thresholds)  # noqa: E731
        return write_coco_pseudo_labels(predictions, out, ref_cfg, labels, confident, threshold, min_confident)

    def confident_target(self, probs, threshold: float, labels, thresholds=None):
        """(target with unconfident parts marked, share of confident decisions) of one image."""
        raise NotImplementedError
