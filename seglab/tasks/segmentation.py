"""What the two segmentation tasks share: segmentation models, batch augmentation on masks,
morphology, proposals of per-annotation corrections, COCO pseudo-labels. Their targets are
dense kinds (`seglab.kinds`: class maps, binary masks), which resize, flip back and draw them.

| | multiclass | multilabel |
|---|---|---|
| target (kind) | integer class map [H, W] (class_map) | C x H x W booleans, classes overlap (binary_masks) |
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
HALF = 0.5  # mean probability over an annotation above which the model "sees" a class there


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

        return build_batch_augment(cfg.augment.batch, labels)

    def training_loss(self, module, batch):
        images, masks = batch["image"], batch["target"]
        if module.batch_augment is not None:
            images, masks = module.batch_augment(images, masks, instances=batch.get("instances"))
        return module.criterion(module(images), masks)

    morphology = True

    def postprocess(self, prediction, cfg, labels, plan=None):
        from seglab.inference.postprocess import plan_from_config

        return self.kind.clean(prediction, plan_from_config(cfg.postprocess, labels.classes) if plan is None else plan)

    def propose_corrections(self, labels, source, index, sample_id, probs, target):
        """Per annotation: a relabel to the class the model gives most of its pixels (its mean
        probability over them above one half), or a drop where no class gets half; per image
        (label maps: no annotations to name) a drop."""
        import torch

        from seglab.data.corrections import format_record

        annotations = source.annotation_masks(index)
        if annotations is None:
            return [(format_record(sample_id, "drop"), "the whole label map disagrees with the model")]
        out = []
        for key, cls, mask in annotations:
            if cls >= labels.num_classes or not mask.any():
                continue  # ignored or empty: nothing to judge
            share = probs[:, torch.from_numpy(mask)].mean(1)  # each class's mean probability over the annotation
            if share[cls] >= HALF:
                continue
            best = max((c for c in range(labels.num_classes) if c != cls), key=lambda c: float(share[c]))
            if share[best] >= HALF and not is_background(labels.classes[best]):
                out.append((format_record(sample_id, "relabel", labels.classes[best], key),
                            f"labelled {labels.classes[cls]} ({float(share[cls]):.2f}), the model sees {labels.classes[best]} ({float(share[best]):.2f})"))
            else:
                out.append((format_record(sample_id, "drop", annotation=key),
                            f"labelled {labels.classes[cls]} ({float(share[cls]):.2f}), the model sees no class there"))
        return out

    def stratification_key(self, source, labels):
        """Which classes each sample holds (k-fold keeps rare classes in every fold)."""
        from seglab.data.presence import class_presence

        return class_presence(source, labels)

    def write_pseudo_labels(self, predictions, out, ref_cfg, labels, threshold, min_confident, thresholds=None) -> dict:
        from seglab.inference.pseudo import write_coco_pseudo_labels

        def confident(probs):
            target, share = self.confident_target(probs, threshold, labels, thresholds)
            return self.category_masks(target, labels), share

        return write_coco_pseudo_labels(predictions, out, ref_cfg, self.pseudo_categories(labels), confident, threshold,
                                        min_confident)

    def confident_target(self, probs, threshold: float, labels, thresholds=None):
        """(target with unconfident parts marked, share of confident decisions) of one image."""
        raise NotImplementedError

    def pseudo_categories(self, labels) -> list[str]:
        """The category names of a pseudo-label file, category id k + 1 for the k-th (then `ignore`)."""
        raise NotImplementedError

    def category_masks(self, target, labels) -> dict:
        """Category id -> mask of a confident target (what pseudo-labels annotate)."""
        raise NotImplementedError
