"""Image classification: one class per image, softmax, argmax, macro F1 from one
confusion matrix.

One training step, in order: normalise on the device -> optional mixup/cutmix (timm) or
SnapMix (snapmix.py: labels weighted by class activation maps) ->
backbone features -> head (with the ArcFace margin for the true class when the head is
arcface) -> loss; plus, when on, the consistency loss on a weak and a strong view of
unlabelled images.
"""

from __future__ import annotations

from seglab.task import TASKS, Task
from seglab.tasks.classification.options import ClassificationOptions


def weighted_loss(criterion, logits, target, weight):
    """The loss weighted by one number for the batch, or by one per image (SnapMix)."""
    if isinstance(weight, float):
        return weight * criterion(logits, target)
    return sum(w * criterion(logits[i : i + 1], target[i : i + 1]) for i, w in enumerate(weight)) / len(weight)


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"
    target = "class"
    scalar_metrics = ("macro_f1", "accuracy", "mean_class_accuracy")
    per_class_key = "per_class_f1"
    per_class_log = "val_f1"
    default_monitor = "macro_f1"
    loss_targets = "index"
    allowed_losses = ("ce", "focal")
    writers = ("id_label", "maskstatus", "probs")
    options = ClassificationOptions

    def defaults(self, cfg):
        fmt = "maskstatus" if cfg.data.format == "maskstatus" else "id_label"
        return {"model.arch": "classifier", "eval.monitor": self.default_monitor, "submission.format": fmt}

    def config_problems(self, cfg) -> list[str]:
        problems = super().config_problems(cfg)
        if cfg.data.image_size is None:
            problems.append("data.image_size: classification batches need one input size, e.g. [224, 224]")
        if cfg.sliding_window.enabled:
            problems.append("sliding_window.enabled: a classifier sees the whole image; turn it off")
        c = self.options_in(cfg)
        if c.snapmix_alpha > 0 and (c.mixup_alpha > 0 or c.cutmix_alpha > 0):
            problems.append(f"{self.name}.snapmix_alpha: SnapMix replaces mixup/cutmix; set mixup_alpha and cutmix_alpha to 0")
        if cfg.augment.batch:
            problems.append(f"augment.batch: mixes masks (segmentation); classification mixes with {self.name}.mixup_alpha / cutmix_alpha")
        return problems

    def preflight_problems(self, cfg) -> list[str]:
        from seglab.errors import SeglabError
        from seglab.tasks.classification.models import CLASSIFIERS
        from seglab.tasks.classification.uda import check_views

        uda = self.options_in(cfg).uda
        problems = check_views(uda, f"{self.name}.uda") if uda.weight > 0 else []
        try:
            CLASSIFIERS.get(cfg.model.arch, "model.arch")
        except SeglabError as e:
            problems.append(str(e))
        return problems

    # ------------------------------------------------------------ labels, model, step

    def adapt_labels(self, spec):
        return spec

    def build_model(self, cfg, labels):
        from seglab.tasks.classification.models import build_classifier

        return build_classifier(cfg, self.options_in(cfg), labels.num_classes)

    def pretrained_encoder(self, cfg):
        from seglab.tasks.classification.models import encoder_backbone_ref

        return encoder_backbone_ref(cfg.model.encoder)

    def batch_augment(self, cfg, labels):
        c = self.options_in(cfg)
        if c.snapmix_alpha > 0:
            from seglab.tasks.classification.snapmix import SnapMix

            return SnapMix(c.snapmix_alpha, c.snapmix_prob, cfg.seed)
        if c.mixup_alpha <= 0 and c.cutmix_alpha <= 0:
            return None
        from timm.data import Mixup

        return Mixup(mixup_alpha=c.mixup_alpha, cutmix_alpha=c.cutmix_alpha, prob=c.mix_prob,
                     switch_prob=c.mix_switch_prob, mode="batch", num_classes=labels.num_classes)

    def training_loss(self, module, batch):
        unlabelled = batch.get("unlabelled")
        labelled = batch.get("labelled", batch)
        x, target = module.normalise(labelled["image"]), labelled["target"]
        from seglab.tasks.classification.snapmix import SnapMix

        pairs = [(target, 1.0)]
        if isinstance(module.batch_augment, SnapMix):
            # Weights per image (CAM mass), so the loss is taken per image: one criterion call each.
            pairs = module.batch_augment(module, x, target)
        elif module.batch_augment is not None:
            # timm's batch mixing, in place: x <- lam * x + (1 - lam) * x.flip(0) (or a pasted box for
            # cutmix, lam corrected to the box's area). The loss mixes the same way over both targets,
            # so class weights, label smoothing, focal and the ArcFace margin all stay per target.
            lam = float(module.batch_augment._mix_batch(x))
            pairs = [(target, lam), (target.flip(0), 1.0 - lam)]
        encoder, head = module.net("encoder"), module.model.head
        features = encoder(x)
        loss = sum(weighted_loss(module.criterion, head(features, t), t, w) for t, w in pairs
                   if not isinstance(w, float) or w > 0)
        if unlabelled is not None:
            import torch

            from seglab.tasks.classification.uda import consistency_loss

            uda = self.options_in(module.cfg).uda
            with torch.no_grad():
                weak = head(encoder(module.normalise(unlabelled["weak"])))
            strong = head(encoder(module.normalise(unlabelled["strong"])))
            loss_u, kept = consistency_loss(weak, strong, uda.temperature, uda.threshold)
            loss = loss + uda.weight * loss_u
            size = x.shape[0]
            module.log("train/uda_loss", loss_u, on_step=True, on_epoch=False, batch_size=size)
            module.log("train/uda_kept", kept, on_step=True, on_epoch=False, batch_size=size)
        return loss

    def unlabelled_dataset(self, cfg, labels):
        uda = self.options_in(cfg).uda
        if uda.weight <= 0:
            return None
        from seglab.tasks.classification.uda import unlabelled_dataset

        return unlabelled_dataset(cfg, uda, f"{self.name}.uda")

    # ------------------------------------------------------------ decisions, metric

    def probabilities(self, logits):
        return logits.float().softmax(1)

    def decide(self, probs, thresholds=None):
        return probs.argmax(1)

    def metric(self, labels, device=None):
        from seglab.metrics.f1 import ClassificationConfusion

        return ClassificationConfusion(labels.num_classes, labels.facets, device)

    def metric_names(self, labels):
        return self.scalar_metrics + tuple(f"{facet}_accuracy" for facet in labels.facets)

    def format_table(self, scores, title=""):
        from seglab.metrics.f1 import format_table

        return format_table(scores, title)

    def history_extra(self, metric) -> dict:
        return {"confusion_matrix": metric.mat.cpu().tolist()}

    def visualizer(self, cfg, labels, run_dir):
        from seglab.visualization.gallery import ClassificationVisualizer

        return ClassificationVisualizer(run_dir, labels.classes, cfg.logging.viz_every_n_epochs, cfg.logging.viz_worst_k)

    def suspect_panel(self, image, target, probs, labels, title, thresholds=None):
        from seglab.visualization.gallery import misclassified_gallery

        conf, pred = (float(v) for v in probs.max(0))
        return misclassified_gallery([(image, title, labels.classes[int(target)], labels.classes[int(pred)], conf)], ncols=1)

    def propose_corrections(self, labels, source, index, sample_id, probs, target):
        """A relabel to the predicted class, or the one mask-status field that differs."""
        from seglab.data.corrections import format_record
        from seglab.data.maskstatus import record_value

        pred, true = int(probs.argmax()), int(target)
        if pred == true:
            return [(format_record(sample_id, "drop"), f"its class {labels.classes[true]} is predicted ({float(probs[pred]):.2f}), yet its loss ranks high")]
        why = f"labelled {labels.classes[true]}, predicted {labels.classes[pred]} ({float(probs[pred]):.2f})"
        differ = [f for f, values in labels.facets.items() if values[pred] != values[true]]
        if len(differ) == 1 and record_value(differ[0], labels.facets[differ[0]][pred]) is not None:
            return [(format_record(sample_id, differ[0], record_value(differ[0], labels.facets[differ[0]][pred])), why)]
        return [(format_record(sample_id, "relabel", labels.classes[pred]), why)]

    def stratification_key(self, source, labels):
        """Which classes each sample holds (k-fold keeps rare classes in every fold)."""
        from seglab.data.presence import class_presence

        return class_presence(source, labels)

    def write_pseudo_labels(self, predictions, out, ref_cfg, labels, threshold, min_confident, thresholds=None) -> dict:
        """`path,label,confidence` for images whose top probability reaches `threshold`; paths
        relative to data.root when they lie under it (what `data.extra_train` reads back)."""
        import csv
        from pathlib import Path

        from seglab.inference.pseudo import relative_file_name
        from seglab.io import atomic_open

        out = Path(out)
        path = out if out.suffix == ".csv" else out / "pseudo.csv"
        seen = kept = 0
        with atomic_open(path, "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(["path", "label", "confidence"])
            for _, image_path, probs in predictions:
                seen += 1
                confidence, top = (float(v) for v in probs.max(0))
                if confidence < threshold:
                    continue
                rows.writerow([relative_file_name(image_path, Path(ref_cfg.data.root)), labels.classes[int(top)], f"{confidence:.4f}"])
                kept += 1
        return {"threshold": threshold, "images_seen": seen, "images_kept": kept, "images_dropped": seen - kept,
                "path": str(path.resolve())}
