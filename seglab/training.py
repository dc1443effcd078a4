"""Training: the LightningModule for segmentation and the `train` recipe.

Lightning owns the loop (AMP, accumulation, DDP, checkpoints, loggers, progress);
this module says what one step does and what happens after each validation.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from seglab.averaging import build_averaging_callbacks
from seglab.config import Config, to_yaml
from seglab.data import build_dataset, check_data, resolve_labels
from seglab.data.labels import LabelSpec
from seglab.errors import CheckpointError, SeglabError
from seglab.io import append_jsonl, atomic_open, check_writable, read_jsonl, write_json, write_text
from seglab.losses import build_loss
from seglab.metrics import ConfusionMatrix, format_table
from seglab.models import build_model
from seglab.optim import build_optimizer, build_scheduler, freeze_parts, keep_frozen_norms_in_eval

log = logging.getLogger("seglab")

PRECISIONS = {"32": "32-true", "fp32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "fp16": "16-mixed"}
SCALAR_METRICS = ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


class SegmentationModule(L.LightningModule):
    def __init__(self, cfg: Config, labels: LabelSpec, run_dir: str | Path | None = None, class_frequencies=None):
        super().__init__()
        self.cfg, self.labels = cfg, labels
        self.run_dir = Path(run_dir) if run_dir else None
        self.model = build_model(cfg.model, labels.num_classes)
        if cfg.optim.freeze:
            freeze_parts(self.model, cfg.optim.freeze)
        self.criterion = build_loss(cfg.loss, cfg.task, labels.num_classes, labels.ignore_index, class_frequencies)
        # uint8 images are normalised here, on the device: 4x less to copy than float32.
        self.register_buffer("pixel_mean", torch.tensor(cfg.augment.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.augment.std).view(1, 3, 1, 1) * 255, persistent=False)
        self.val_cm = ConfusionMatrix(labels.num_classes, labels.ignore_index)
        self.best_score: float | None = None
        self.last_val_result: dict | None = None
        self._compiled = None
        if cfg.trainer.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ model

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.trainer.channels_last else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] images -> logits [B, C, H, W]."""
        net = self.model
        if self.cfg.trainer.compile and self.training:
            if self._compiled is None:
                mode = None if self.cfg.trainer.compile is True else self.cfg.trainer.compile
                # Kept outside the module tree so checkpoints keep the plain parameter names.
                object.__setattr__(self, "_compiled", torch.compile(self.model, mode=mode))
            net = self._compiled
        return net(self.normalise(images))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.cfg.optim.freeze:
            keep_frozen_norms_in_eval(self.model, self.cfg.optim.freeze)
        return self

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.cfg.optim)
        max_epochs = self.cfg.trainer.max_epochs
        steps_per_epoch = max(1, math.ceil(self.trainer.estimated_stepping_batches / max_epochs))
        scheduler = build_scheduler(optimizer, self.cfg.schedule, steps_per_epoch, max_epochs, f"val/{self.cfg.eval.monitor}")
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # --------------------------------------------------------------- training

    def on_train_epoch_start(self):
        self._train_loss = torch.zeros(2, device=self.device)

    def training_step(self, batch, batch_idx):
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["mask"].long())
        if not torch.isfinite(loss):
            raise SeglabError(
                f"non-finite loss ({loss.item()}) at step {self.global_step}, epoch {self.current_epoch}, "
                f"images {list(batch['id'])[:8]}; the last good checkpoint is kept. "
                "Try a lower optim.lr, trainer.precision=32, or check these images' labels"
            )
        self._train_loss += torch.stack([loss.detach().float(), torch.ones((), device=self.device)])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch["image"].shape[0])
        for name, value in getattr(self.criterion, "last_components", {}).items():
            if len(self.criterion.last_components) > 1:
                self.log(f"train/loss_{name}", value, on_step=True, on_epoch=False, batch_size=batch["image"].shape[0])
        return loss

    # ------------------------------------------------------------- validation

    def on_validation_epoch_start(self):
        self.val_cm.to(self.device).reset()
        self._val_loss = torch.zeros(2, device=self.device)

    def validation_step(self, batch, batch_idx):
        logits = self(batch["image"])
        masks = batch["mask"].long()
        self._val_loss += torch.stack([self.criterion(logits, masks).detach().float() * len(masks), torch.tensor(float(len(masks)), device=self.device)])
        pred = logits.argmax(1)
        self.val_cm.update(pred, masks)
        return {"pred": pred}

    def on_validation_epoch_end(self):
        self.val_cm.reduce()
        val_loss = self.trainer.strategy.reduce(self._val_loss, reduce_op="sum")
        scores = self.val_cm.compute(list(self.labels.classes))
        scores["loss"] = float(val_loss[0] / val_loss[1].clamp(min=1))
        self.last_val_result = {**scores, "confusion_matrix": self.val_cm.mat.detach().cpu()}
        # Values are already reduced over processes, so every rank logs the same number.
        for key in SCALAR_METRICS + ("loss",):
            if not math.isnan(scores[key]):
                self.log(f"val/{key}", scores[key], sync_dist=False)
        for name, iou in scores["per_class_iou"].items():
            if iou is not None:
                self.log(f"val_iou/{name}", iou, sync_dist=False)
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self.run_dir is None:
            return
        self._record_validation(scores)

    def _record_validation(self, scores: dict) -> None:
        monitor = self.cfg.eval.monitor
        if monitor not in scores:
            raise SeglabError(f"eval.monitor: {monitor!r} is not a validation metric (use one of {', '.join(SCALAR_METRICS + ('loss',))})")
        epoch, step = self.current_epoch, self.global_step
        train = self._train_loss if hasattr(self, "_train_loss") else torch.zeros(2)
        row = {
            "epoch": epoch, "step": step,
            "train_loss": float(train[0] / train[1]) if train[1] > 0 else None,
            "val_loss": scores["loss"],
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else None,
            **{k: scores[k] for k in SCALAR_METRICS},
            "per_class_iou": scores["per_class_iou"],
            "confusion_matrix": self.val_cm.mat.cpu().tolist(),
        }
        append_jsonl(self.run_dir / "history.jsonl", _finite(row))
        value = scores[monitor]
        better = self.best_score is None or (value > self.best_score if self.cfg.eval.mode == "max" else value < self.best_score)
        if better and not math.isnan(value):
            self.best_score = value
            best = {"epoch": epoch, "step": step, "monitor": monitor, **{k: scores[k] for k in SCALAR_METRICS},
                    "val_loss": scores["loss"], "per_class_iou": scores["per_class_iou"],
                    "per_class_accuracy": scores["per_class_accuracy"]}
            write_json(self.run_dir / "metrics.json", _finite(best))
        mark = "  (best)" if better else ""
        print("\n" + format_table(scores, f"validation after epoch {epoch} (step {step}){mark}"), flush=True)

    # ------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint):
        checkpoint["seglab"] = {
            "classes": list(self.labels.classes), "task": self.cfg.task, "arch": self.cfg.model.arch,
            "encoder": self.cfg.model.encoder, "best_score": self.best_score,
        }

    def on_load_checkpoint(self, checkpoint):
        meta = checkpoint.get("seglab", {})
        check_checkpoint_meta(meta, self.cfg, self.labels, "checkpoint")
        self.best_score = meta.get("best_score")

    def on_train_start(self):
        # A resumed run replays from its last checkpoint: drop history rows written after it.
        if self.run_dir is not None and self.trainer.is_global_zero and self.current_epoch > 0:
            rows = [r for r in read_jsonl(self.run_dir / "history.jsonl") if r["epoch"] < self.current_epoch]
            write_text(self.run_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def check_checkpoint_meta(meta: dict, cfg: Config, labels: LabelSpec, source: str) -> None:
    classes = meta.get("classes")
    if classes is not None and list(classes) != list(labels.classes):
        raise CheckpointError(f"{source}: trained for {len(classes)} classes {classes[:6]}..., the config has {len(labels.classes)} {list(labels.classes)[:6]}...")
    if meta.get("arch") not in (None, cfg.model.arch) or (meta.get("encoder") not in (None, cfg.model.encoder) and cfg.model.arch == meta.get("arch")):
        raise CheckpointError(f"{source}: written by model {meta.get('arch')}/{meta.get('encoder')}, the config builds {cfg.model.arch}/{cfg.model.encoder}")


def _finite(obj):
    """JSON has no NaN: absent scores are written as null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# ------------------------------------------------------------------ recipe


def make_loader(dataset, cfg: Config, train: bool) -> DataLoader:
    workers = cfg.data.workers()
    batch = cfg.data.batch_size if train else (cfg.data.val_batch_size or cfg.data.batch_size)
    return DataLoader(
        dataset, batch_size=batch, shuffle=train, num_workers=workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        # BatchNorm cannot train on a last batch of one image.
        drop_last=train and len(dataset) > batch,
    )


def make_loggers(cfg: Config, run_dir: Path) -> list:
    loggers = []
    for name in cfg.logging.loggers:
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False))
        elif name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(save_dir=str(run_dir), name=cfg.name or run_dir.name, offline=True))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            loggers.append(MLFlowLogger(experiment_name=cfg.name or "seglab", tracking_uri=f"file:{run_dir / 'mlruns'}"))
    return loggers


def make_callbacks(cfg: Config, run_dir: Path, labels: LabelSpec, has_logger: bool, visualizer: L.Callback | None = None) -> list:
    """Checkpoints, lr monitor, the validation visualiser (segmentation panels unless another is given), averaging."""
    monitor = f"val/{cfg.eval.monitor}"
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=cfg.eval.mode,
            save_top_k=1, save_last=True, auto_insert_metric_name=False, enable_version_counter=False,
        )
    ]
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.logging.viz_every_n_epochs > 0 and visualizer is not None:
        callbacks.append(visualizer)
    elif cfg.logging.viz_every_n_epochs > 0:
        from seglab.visualization import ValidationVisualizer

        callbacks.append(ValidationVisualizer(
            run_dir, list(labels.classes), labels.ignore_index, every_n_epochs=cfg.logging.viz_every_n_epochs,
            num_samples=cfg.logging.viz_samples, worst_k=cfg.logging.viz_worst_k, mean=cfg.augment.mean, std=cfg.augment.std,
        ))
    callbacks.extend(build_averaging_callbacks(cfg.averaging, cfg.eval.monitor, cfg.eval.mode, cfg.trainer.max_epochs))
    return callbacks


def make_trainer(cfg: Config, run_dir: Path, labels: LabelSpec, visualizer: L.Callback | None = None) -> L.Trainer:
    t = cfg.trainer
    loggers = make_loggers(cfg, run_dir)
    return L.Trainer(
        default_root_dir=str(run_dir), max_epochs=t.max_epochs, precision=PRECISIONS.get(t.precision, t.precision),
        accumulate_grad_batches=t.accumulate_grad_batches, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy, check_val_every_n_epoch=t.val_every_n_epochs,
        log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        gradient_clip_val=cfg.optim.grad_clip, enable_progress_bar=t.progress_bar,
        logger=loggers or False, callbacks=make_callbacks(cfg, run_dir, labels, bool(loggers), visualizer),
        plugins=[AtomicCheckpointIO()], enable_model_summary=False, num_sanity_val_steps=1,
    )


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict:
    """Train one run into `run_dir`; returns the best validation metrics."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise SeglabError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    if not resume and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise SeglabError(f"{run_dir}: already holds a trained run; use --resume to continue it or choose another --out")
    check_writable(run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    labels = resolve_labels(cfg)
    check_data(cfg, labels, ("train", "val"))
    if not resume:
        write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_json(run_dir / "labels.json", labels.to_json())

    train_set = build_dataset(cfg, "train", labels, train=True, with_masks=True)
    val_set = build_dataset(cfg, "val", labels, train=False, with_masks=True)
    frequencies = class_frequencies(train_set, labels) if needs_class_frequencies(cfg) else None
    module = SegmentationModule(cfg, labels, run_dir, frequencies)
    trainer = make_trainer(cfg, run_dir, labels)
    trainer.fit(module, make_loader(train_set, cfg, True), make_loader(val_set, cfg, False), ckpt_path=str(last) if resume else None)
    metrics_path = run_dir / "metrics.json"
    return json.loads(metrics_path.read_text()) if metrics_path.exists() else {}


def needs_class_frequencies(cfg: Config) -> bool:
    return any((spec.model_extra or {}).get("class_weights") == "auto" for spec in cfg.loss)


def class_frequencies(dataset, labels: LabelSpec) -> torch.Tensor:
    """Pixel share of each class over the training masks (cached masks, so cheap)."""
    counts = torch.zeros(labels.num_classes, dtype=torch.float64)
    for i in range(len(dataset.source)):
        mask = torch.from_numpy(dataset.source.load_mask(i).astype("int64")).flatten()
        mask = mask[mask < labels.num_classes]
        counts += torch.bincount(mask, minlength=labels.num_classes).double()
    return counts / counts.sum().clamp(min=1)
