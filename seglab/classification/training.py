"""Training for `task: classification`: the LightningModule and the `train` recipe.

Shares the segmentation infrastructure: the loss registry (CE/focal on [B, C] logits),
optimiser/schedule builders, averaging callbacks, checkpoint IO, loggers and trainer
(seglab.training.make_trainer). One step, in order: normalise on the device -> optional
mixup/cutmix (timm) -> backbone features -> head (with the ArcFace margin for the true
class when the head is arcface) -> loss; plus, when on, the consistency loss on a weak
and a strong view of unlabelled images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from seglab.classification import maskstatus
from seglab.classification.data import (build_dataset, check_data, class_counts, resolve_labels,
                                        unlabelled_dataset, weighted_sampler)
from seglab.classification.metrics import SCALAR_METRICS, classification_scores, format_table
from seglab.classification.models import build_classifier
from seglab.classification.uda import consistency_loss
from seglab.classification.viz import ClassificationVisualizer
from seglab.config import Config, to_yaml
from seglab.data.labels import LabelSpec
from seglab.errors import SeglabError
from seglab.io import check_writable, write_json, write_text
from seglab.losses import build_loss
from seglab.metrics import ConfusionMatrix
from seglab.training import LabModule, make_trainer, needs_class_frequencies


class ClassificationModule(LabModule):
    def __init__(self, cfg: Config, labels: LabelSpec, run_dir: str | Path | None = None, class_frequencies=None):
        # Classification targets are [B] class indices: the multiclass losses take them as they are.
        super().__init__(cfg, labels, run_dir, build_classifier(cfg, labels.num_classes),
                         build_loss(cfg.loss, "multiclass", labels.num_classes, labels.ignore_index, class_frequencies))
        self.val_cm = ConfusionMatrix(labels.num_classes)
        c = cfg.classification
        self.mixup = None
        if c.mixup_alpha > 0 or c.cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=c.mixup_alpha, cutmix_alpha=c.cutmix_alpha, prob=c.mix_prob,
                               switch_prob=c.mix_switch_prob, mode="batch", num_classes=labels.num_classes)

    # ------------------------------------------------------------------ model

    def encoder(self):
        if self.cfg.trainer.compile and self.training:
            if self._compiled is None:
                mode = None if self.cfg.trainer.compile is True else self.cfg.trainer.compile
                object.__setattr__(self, "_compiled", torch.compile(self.model.encoder, mode=mode))
            return self._compiled
        return self.model.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> logits [B, C] (no margin: what evaluation and prediction see)."""
        return self.model.head(self.encoder()(self.normalise(images)))

    # --------------------------------------------------------------- training

    def supervised_loss(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = self.normalise(images)
        pairs = [(target, 1.0)]
        if self.mixup is not None:
            # timm's batch mixing, in place: x <- lam * x + (1 - lam) * x.flip(0) (or a pasted box for
            # cutmix, lam corrected to the box's area). The loss mixes the same way over both targets,
            # so class weights, label smoothing, focal and the ArcFace margin all stay per target.
            lam = float(self.mixup._mix_batch(x))
            pairs = [(target, lam), (target.flip(0), 1.0 - lam)]
        features = self.encoder()(x)
        return sum(w * self.criterion(self.model.head(features, t), t) for t, w in pairs if w > 0)

    def training_step(self, batch, batch_idx):
        unlabelled = batch.get("unlabelled") if "labelled" in batch else None
        batch = batch["labelled"] if "labelled" in batch else batch
        size = batch["image"].shape[0]
        loss = self.supervised_loss(batch["image"], batch["label"])
        if len(self.criterion.last_components) > 1:
            for name, value in self.criterion.last_components.items():
                self.log(f"train/loss_{name}", value, on_step=True, on_epoch=False, batch_size=size)
        if unlabelled is not None:
            uda = self.cfg.classification.uda
            with torch.no_grad():
                weak = self.model.head(self.encoder()(self.normalise(unlabelled["weak"])))
            strong = self.model.head(self.encoder()(self.normalise(unlabelled["strong"])))
            loss_u, kept = consistency_loss(weak, strong, uda.temperature, uda.threshold)
            loss = loss + uda.weight * loss_u
            self.log("train/uda_loss", loss_u, on_step=True, on_epoch=False, batch_size=size)
            self.log("train/uda_kept", kept, on_step=True, on_epoch=False, batch_size=size)
        if not torch.isfinite(loss):
            raise SeglabError(
                f"non-finite loss ({loss.item()}) at step {self.global_step}, epoch {self.current_epoch}, "
                f"images {list(batch['id'])[:8]}; the last good checkpoint is kept. Try a lower optim.lr or trainer.precision=32"
            )
        self._train_loss += torch.stack([loss.detach().float(), torch.ones((), device=self.device)])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        return loss

    # ------------------------------------------------------------- validation

    def on_validation_epoch_start(self):
        self.val_cm.to(self.device).reset()
        self._val_loss = torch.zeros(2, device=self.device)

    def validation_step(self, batch, batch_idx):
        logits = self(batch["image"])
        target = batch["label"].long()
        n = torch.tensor(float(len(target)), device=self.device)
        self._val_loss += torch.stack([self.criterion(logits, target).detach().float() * n, n])
        confidence, pred = logits.float().softmax(1).max(1)
        self.val_cm.update(pred, target)
        return {"pred": pred, "confidence": confidence}

    def scores(self) -> dict:
        scores = classification_scores(self.val_cm.mat, list(self.labels.classes))
        if self.cfg.data.format == "maskstatus":
            scores.update(maskstatus.task_accuracies(self.val_cm.mat.cpu()))
        return scores

    def on_validation_epoch_end(self):
        self.val_cm.reduce()
        val_loss = self.trainer.strategy.reduce(self._val_loss, reduce_op="sum")
        scores = self.scores()
        scores["loss"] = float(val_loss[0] / val_loss[1].clamp(min=1))
        self.last_val_result = {**scores, "confusion_matrix": self.val_cm.mat.detach().cpu()}
        for key in SCALAR_METRICS + ("loss", "mask_accuracy", "gender_accuracy", "age_accuracy"):
            if key in scores and not math.isnan(scores[key]):
                self.log(f"val/{key}", scores[key], sync_dist=False)
        for name, f1 in scores["per_class_f1"].items():
            if f1 is not None:
                self.log(f"val_f1/{name}", f1, sync_dist=False)
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self.run_dir is None:
            return
        self._record_validation(scores)

    def _record_validation(self, scores: dict) -> None:
        monitor = self.cfg.eval.monitor
        if monitor not in scores:
            known = [k for k, v in scores.items() if isinstance(v, float)]
            raise SeglabError(f"eval.monitor: {monitor!r} is not a classification metric (use one of {', '.join(known)})")
        scalars = {k: v for k, v in scores.items() if isinstance(v, float) and k != "loss"}
        per_class = {k: scores[k] for k in ("per_class_f1", "per_class_precision", "per_class_recall", "support")}
        # The confusion matrix goes to metrics.json too: it is small for image classes.
        metrics = {**scalars, **per_class, "confusion_matrix": self.val_cm.mat.cpu().tolist()}
        self.record_validation(scores, metrics, {}, format_table)

    # ------------------------------------------------------------ checkpoints

    def checkpoint_meta(self) -> dict:
        return {**super().checkpoint_meta(), "head": self.cfg.classification.head}


# ------------------------------------------------------------------ recipe


def make_loader(dataset, cfg: Config, train: bool, sampler=None, batch_size: int | None = None) -> DataLoader:
    workers = cfg.data.workers()
    batch = batch_size or (cfg.data.batch_size if train else (cfg.data.val_batch_size or cfg.data.batch_size))
    return DataLoader(
        dataset, batch_size=batch, shuffle=train and sampler is None, sampler=sampler, num_workers=workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        drop_last=train and len(dataset) > batch,  # BatchNorm cannot train on a last batch of one image
    )


def train_loaders(cfg: Config, labels: LabelSpec, train_set):
    """The labelled loader, or {labelled, unlabelled} of equal length when consistency training is on."""
    sampler = None
    if cfg.data.classification.sampler == "weighted":
        sampler = weighted_sampler(train_set.split, labels.num_classes, cfg.seed)
    labelled = make_loader(train_set, cfg, True, sampler)
    if cfg.classification.uda.weight <= 0:
        return labelled
    from lightning.pytorch.utilities import CombinedLoader

    unl = unlabelled_dataset(cfg, labels)
    batch = cfg.classification.uda.batch_size or cfg.data.batch_size
    # Drawn with replacement, as many batches as the labelled loader has: an epoch stays one pass
    # over the labelled images however many unlabelled ones there are.
    draw = RandomSampler(unl, replacement=True, num_samples=len(labelled) * batch,
                         generator=torch.Generator().manual_seed(cfg.seed + 1))
    unlabelled = make_loader(unl, cfg, True, draw, batch)
    return CombinedLoader({"labelled": labelled, "unlabelled": unlabelled}, mode="min_size")


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict:
    """Train one classification run into `run_dir`; returns the best validation metrics."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise SeglabError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    if not resume and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise SeglabError(f"{run_dir}: already holds a trained run; use --resume to continue it or choose another --out")
    check_writable(run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    labels = resolve_labels(cfg)
    uses_test = cfg.classification.uda.weight > 0 and not cfg.classification.uda.unlabelled
    check_data(cfg, labels, ("train", "val") + (("test",) if uses_test else ()))
    if not resume:
        write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_json(run_dir / "labels.json", labels.to_json())

    train_set = build_dataset(cfg, "train", labels, train=True, with_labels=True)
    val_set = build_dataset(cfg, "val", labels, train=False, with_labels=True)
    frequencies = None
    if needs_class_frequencies(cfg):
        counts = class_counts(train_set.split, labels.num_classes).astype(np.float64)
        frequencies = torch.as_tensor(counts / counts.sum())
    module = ClassificationModule(cfg, labels, run_dir, frequencies)
    visualizer = ClassificationVisualizer(run_dir, labels.classes, cfg.logging.viz_every_n_epochs, cfg.logging.viz_worst_k)
    trainer = make_trainer(cfg, run_dir, labels, visualizer)
    trainer.fit(module, train_loaders(cfg, labels, train_set), make_loader(val_set, cfg, False),
                ckpt_path=str(last) if resume else None)
    metrics_path = run_dir / "metrics.json"
    return json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
