"""Training: the LightningModule for segmentation and the `train` recipe.

Lightning owns the loop (AMP, accumulation, DDP, checkpoints, loggers, progress);
this module says what one step does and what happens after each validation.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Sampler

from seglab.averaging import build_averaging_callbacks
from seglab.config import Config, to_yaml
from seglab.data import build_dataset, collect_problems
from seglab.data.batch_augment import build_batch_augment
from seglab.data.labels import LabelSpec
from seglab.data.resumable import ResumableLoader, SeededShuffle
from seglab.errors import CheckpointError, DataValidationError, SeglabError
from seglab.io import append_jsonl, atomic_open, check_writable, read_jsonl, write_json, write_text
from seglab.losses import build_loss
from seglab.models import MODELS, build_model
from seglab.optim import build_optimizer, build_scheduler, freeze_parts, keep_frozen_norms_in_eval
from seglab.postprocess import threshold_vector
from seglab.sliding import sliding_window_from_config
from seglab.tasks import get_task

log = logging.getLogger("seglab")

PRECISIONS = {"32": "32-true", "fp32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "fp16": "16-mixed"}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer and reader, made safe.

    Written through a temporary file and a rename: a kill or a full disk never leaves a
    half-written checkpoint, and the previous one survives. Weights that went NaN/inf
    are never written over a good checkpoint. Read with `weights_only=True`: a
    checkpoint from elsewhere cannot run code.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        bad = [k for k, v in checkpoint.get("state_dict", {}).items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise SeglabError(
                f"{path}: not written: weights {bad[:3]} are NaN/inf at step {checkpoint.get('global_step')}; "
                "the previous checkpoint is kept. Try a lower optim.lr, optim.grad_clip, or trainer.precision=32"
            )
        with atomic_open(path, "wb") as f:
            out = _ErrorKeepingWriter(f)
            try:
                torch.save(checkpoint, out)
            except RuntimeError:
                if out.error is not None:  # torch reports a failed write (disk full) as an opaque RuntimeError
                    raise out.error from None
                raise

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint_file(path, map_location)


class _ErrorKeepingWriter:
    """A file wrapper that remembers the OSError behind a failed write."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.f.flush()


def load_checkpoint_file(path: str | Path, map_location=None) -> dict:
    """A checkpoint as a dict, loaded weights-only (no code runs); CheckpointError if it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(
            f"{path}: cannot load checkpoint weights-only ({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(state).__name__}, not a dict)")
    return state


class LabModule(L.LightningModule):
    """What every seglab task's LightningModule shares: uint8 images normalised on the
    device, frozen parts, the optimiser and schedule from the config, the running epoch
    loss, the best score, and the checkpoint metadata that lets a run resume exactly.
    A task's module adds its forward, its steps and what it records after validation."""

    def __init__(self, cfg: Config, labels: LabelSpec, run_dir: str | Path | None, model: torch.nn.Module, criterion):
        super().__init__()
        self.cfg, self.labels = cfg, labels
        self.run_dir = Path(run_dir) if run_dir else None
        if cfg.optim.freeze:
            freeze_parts(model, cfg.optim.freeze)
        self.model = model.to(memory_format=torch.channels_last) if cfg.trainer.channels_last else model
        self.criterion = criterion
        # uint8 images are normalised here, on the device: 4x less to copy than float32.
        self.register_buffer("pixel_mean", torch.tensor(cfg.augment.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.augment.std).view(1, 3, 1, 1) * 255, persistent=False)
        self.best_score: float | None = None
        self.history_rows = 0  # rows this run has in history.jsonl; kept in checkpoints to trim replays on resume
        self.last_val_result: dict | None = None
        self._compiled = None

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.trainer.channels_last else x

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

    def on_train_epoch_start(self):
        self._train_loss = torch.zeros(2, device=self.device)  # (sum, count); kept in checkpoints for mid-epoch resume

    def record_validation(self, scores: dict, metrics: dict, history_only: dict, format_table) -> None:
        """Append this validation to history.jsonl and, when the monitored score improves
        (judged as ModelCheckpoint judges it), write metrics.json; print the table.
        `metrics` go to both files, `history_only` to history.jsonl alone."""
        epoch, step = self.current_epoch, self.global_step
        train = self._train_loss if hasattr(self, "_train_loss") else torch.zeros(2)
        row = {
            "epoch": epoch, "step": step,
            "train_loss": float(train[0] / train[1]) if train[1] > 0 else None,
            "val_loss": scores["loss"],
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else None,
            **metrics, **history_only,
        }
        append_jsonl(self.run_dir / "history.jsonl", _finite(row))
        self.history_rows += 1
        value = scores[self.cfg.eval.monitor]
        better = improves(value, self.best_score, self.cfg.eval.mode)
        if better:
            self.best_score = value
            best = {"epoch": epoch, "step": step, "monitor": self.cfg.eval.monitor, **metrics, "val_loss": scores["loss"]}
            write_json(self.run_dir / "metrics.json", _finite(best))
        mark = "  (best)" if better else ""
        print("\n" + format_table(scores, f"validation after epoch {epoch} (step {step}){mark}"), flush=True)

    def checkpoint_meta(self) -> dict:
        """What a checkpoint records about the run besides its tensors (a task may add keys)."""
        return {
            "classes": list(self.labels.classes), "task": self.cfg.task, "arch": self.cfg.model.arch,
            "encoder": self.cfg.model.encoder, "best_score": self.best_score, "history_rows": self.history_rows,
        }

    def on_save_checkpoint(self, checkpoint):
        checkpoint["seglab"] = self.checkpoint_meta()
        if hasattr(self, "_train_loss"):
            checkpoint["seglab"]["train_loss"] = self._train_loss.detach().cpu()

    def on_load_checkpoint(self, checkpoint):
        meta = checkpoint.get("seglab", {})
        source = getattr(self, "checkpoint_source", "checkpoint")
        check_checkpoint_meta(meta, self.cfg, self.labels, source)
        check_state_dict_fits(self, checkpoint.get("state_dict", {}), source)
        self.best_score = meta.get("best_score")
        self._resumed_history_rows = meta.get("history_rows")
        if "train_loss" in meta:  # a mid-epoch resume skips on_train_epoch_start
            self._train_loss = meta["train_loss"]

    def on_train_start(self):
        if hasattr(self, "_train_loss"):
            self._train_loss = self._train_loss.to(self.device)
        # A resumed run replays from its last checkpoint: drop history rows written after it.
        if self.run_dir is not None and self.trainer.is_global_zero and self.trainer.ckpt_path:
            rows = read_jsonl(self.run_dir / "history.jsonl")
            keep = getattr(self, "_resumed_history_rows", None)
            rows = rows[:keep] if keep is not None else [r for r in rows if r["epoch"] < self.current_epoch]
            self.history_rows = len(rows)
            write_text(self.run_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


class SegmentationModule(LabModule):
    def __init__(self, cfg: Config, labels: LabelSpec, run_dir: str | Path | None = None, class_frequencies=None):
        super().__init__(cfg, labels, run_dir, build_model(cfg.model, labels.num_classes),
                         build_loss(cfg.loss, cfg.task, labels.num_classes, labels.ignore_index, class_frequencies))
        self.task = get_task(cfg.task)
        self.val_metric = self.task.metric(labels)  # confusion matrix (multiclass) or Dice sums (multilabel)
        # Per-class probability thresholds (multilabel); inference replaces them with tuned ones.
        self.register_buffer("thresholds", threshold_vector(cfg.postprocess, labels.classes), persistent=False)
        # augment.batch (CutMix, copy-paste): on the device, in training_step; None when not configured.
        self.batch_augment = build_batch_augment(cfg.augment.batch, labels.classes, labels.ignore_index)

    # ------------------------------------------------------------------ model

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

    # --------------------------------------------------------------- training

    def on_train_batch_start(self, batch, batch_idx):
        self.stage_now = "training"  # for error messages (out of memory in which stage)

    def training_step(self, batch, batch_idx):
        images, masks = batch["image"], batch["mask"]
        if self.batch_augment is not None:
            images, masks = self.batch_augment(images, masks)
        logits = self(images)
        loss = self.criterion(logits, masks.long())
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

    def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self.stage_now = "validation"

    def on_validation_epoch_start(self):
        self.val_metric.to(self.device).reset()
        self._val_loss = torch.zeros(2, device=self.device)

    def validation_step(self, batch, batch_idx):
        if self.cfg.sliding_window.enabled and self.cfg.sliding_window.in_validation:
            logits = sliding_window_from_config(self, batch["image"], self.cfg.sliding_window)
        else:
            logits = self(batch["image"])
        masks = batch["mask"].long()
        self._val_loss += torch.stack([self.criterion(logits, masks).detach().float() * len(masks), torch.tensor(float(len(masks)), device=self.device)])
        pred = self.task.predict(self.task.probabilities(logits), self.thresholds)
        self.val_metric.update(pred, masks)
        return {"pred": pred}

    def on_validation_epoch_end(self):
        self.val_metric.reduce()
        val_loss = self.trainer.strategy.reduce(self._val_loss, reduce_op="sum")
        scores = self.val_metric.compute(list(self.labels.classes))
        scores["loss"] = float(val_loss[0] / val_loss[1].clamp(min=1))
        self.last_val_result = {**scores, **self.task.last_result_extra(self.val_metric)}
        # Values are already reduced over processes, so every rank logs the same number.
        for key in self.task.scalar_metrics + ("loss",):
            if not math.isnan(scores[key]):
                self.log(f"val/{key}", scores[key], sync_dist=False)
        for name, value in scores[self.task.per_class_keys[0]].items():
            if value is not None:
                self.log(f"{self.task.per_class_log}/{name}", value, sync_dist=False)
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self.run_dir is None:
            return
        self._record_validation(scores)

    def _record_validation(self, scores: dict) -> None:
        monitor = self.cfg.eval.monitor
        if monitor not in scores:
            raise SeglabError(f"eval.monitor: {monitor!r} is not a validation metric (use one of {', '.join(self.task.scalar_metrics + ('loss',))})")
        metrics = {**{k: scores[k] for k in self.task.scalar_metrics}, **{k: scores[k] for k in self.task.per_class_keys}}
        self.record_validation(scores, metrics, self.task.history_extra(self.val_metric), self.task.format_table)


def improves(value: float, best: float | None, mode: str) -> bool:
    """Whether `value` beats `best`, judged as ModelCheckpoint judges it: on the float32
    value Lightning logged. Comparing float64 values instead can make metrics.json and
    best.ckpt pick different epochs when two scores differ below float32 precision."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    value32, best32 = (float(torch.tensor(v, dtype=torch.float32)) for v in (value, best))
    return value32 > best32 if mode == "max" else value32 < best32


def check_checkpoint_meta(meta: dict, cfg: Config, labels: LabelSpec, source: str) -> None:
    if meta.get("task") not in (None, cfg.task):
        raise CheckpointError(f"{source}: trained for task {meta['task']!r}, the config says {cfg.task!r}")
    classes = meta.get("classes")
    if classes is not None and list(classes) != list(labels.classes):
        raise CheckpointError(f"{source}: trained for {len(classes)} classes {classes[:6]}..., the config has {len(labels.classes)} {list(labels.classes)[:6]}...")
    if meta.get("arch") not in (None, cfg.model.arch) or (meta.get("encoder") not in (None, cfg.model.encoder) and cfg.model.arch == meta.get("arch")):
        raise CheckpointError(f"{source}: written by model {meta.get('arch')}/{meta.get('encoder')}, the config builds {cfg.model.arch}/{cfg.model.encoder}")


def check_state_dict_fits(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    """A checkpoint without (or with misleading) metadata still has to fit tensor by tensor."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not fit the model {getattr(module.cfg.model, 'arch', '')} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: {key}: shape {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} in the model (another model or class count?)")


class ExactResume(Checkpoint):
    """Writes `last.ckpt` so that `--resume` continues exactly where the run stopped.

    Saved at the end of every epoch, after its validation and after ModelCheckpoint
    (whether or not it was the best: Lightning's own `save_last` skips epochs that did
    not improve), and every `every_n_steps` optimiser steps mid-epoch; always through the
    atomic writer, so a kill leaves the previous one intact. Every checkpoint also
    keeps the global random states (Python, NumPy, torch), restored when training
    restarts; the data order and position are restored by the ResumableLoader. A
    Checkpoint subclass, so Lightning runs it after the other callbacks (EMA first).
    """

    def __init__(self, last_path: Path, every_n_steps: int | None):
        self.last_path, self.every_n_steps = Path(last_path), every_n_steps
        self._saved_step = -1
        self._rng: dict | None = None

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def _save(self, trainer) -> None:
        self._saved_step = trainer.global_step
        trainer.save_checkpoint(self.last_path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.every_n_steps or step == self._saved_step or step % self.every_n_steps:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the end-of-epoch checkpoint follows (after the validation, if one runs)
        self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        # After the epoch's validation and after ModelCheckpoint, which by default records
        # its best at train-epoch end: saved any earlier, a resumed run would forget the
        # best and overwrite best.ckpt with a worse epoch.
        self._save(trainer)

    def on_fit_start(self, trainer, pl_module):
        self._trainer = trainer

    def _loaders(self) -> list[ResumableLoader]:
        loaders = self._trainer.train_dataloader if getattr(self, "_trainer", None) else None
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        elif not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        return [dl for dl in loaders if isinstance(dl, ResumableLoader)]

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        return {
            "rng": {
                "python": random.getstate(),
                "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "loaders": [dl.state_dict() for dl in self._loaders()],
        }

    def load_state_dict(self, state: dict) -> None:
        self._rng, self._loader_states = state.get("rng"), state.get("loaders", [])

    def on_train_start(self, trainer, pl_module):
        # Restored here, after the sanity check and before the first batch is drawn.
        for loader, saved in zip(self._loaders(), getattr(self, "_loader_states", [])):
            loader.load_state_dict(saved)
        self._loader_states = []
        rng, self._rng = self._rng, None
        if not rng:
            return
        random.setstate(rng["python"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


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


class ShardSampler(Sampler):
    """Evaluation under DDP: rank r takes images r, r+W, r+2W, ... with no padding, so
    no image is counted twice in the dataset-level confusion matrix (Lightning's
    default DistributedSampler pads the set with repeats)."""

    def __init__(self, size: int, rank: int, world_size: int):
        self.indices = range(rank, size, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset, cfg: Config, train: bool, rank: int = 0, world_size: int = 1) -> DataLoader:
    workers = cfg.data.workers()
    batch = cfg.data.batch_size if train else (cfg.data.val_batch_size or cfg.data.batch_size)
    common = dict(
        batch_size=batch, num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        # BatchNorm cannot train on a last batch of one image.
        drop_last=train and len(dataset) > batch * world_size,
    )
    if train:
        # The order is a function of (seed, epoch) and the position is saved in checkpoints:
        # exact mid-epoch resume, for the plain shuffle and the class-balanced sampler alike.
        if cfg.data.sampler.name != "shuffle":
            from seglab.data.sampling import build_train_sampler

            order = build_train_sampler(dataset, cfg.data.sampler, cfg.seed, rank, world_size)
        else:
            order = SeededShuffle(len(dataset), cfg.seed)
        return ResumableLoader(dataset, sampler=order, seed=cfg.seed, **common)
    # Evaluation under DDP: shards without padding. Its own generator: starting validation
    # workers never draws from the global random state.
    shard = ShardSampler(len(dataset), rank, world_size) if world_size > 1 else None
    return DataLoader(dataset, shuffle=False, sampler=shard, generator=torch.Generator().manual_seed(cfg.seed & 0xFFFFFFFF), **common)


class SegmentationData(L.LightningDataModule):
    """Builds the loaders once the trainer knows this process's rank."""

    def __init__(self, cfg: Config, train_set, val_set):
        super().__init__()
        self.cfg, self.train_set, self.val_set = cfg, train_set, val_set

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.cfg, True, self.trainer.global_rank, self.trainer.world_size)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.cfg, False, self.trainer.global_rank, self.trainer.world_size)


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
            save_top_k=1, save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
        )
    ]
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.logging.viz_every_n_epochs > 0:
        if visualizer is not None:  # a task with its own panels (classification)
            callbacks.append(visualizer)
        elif get_task(cfg.task).class_map_panels:
            from seglab.visualization import ValidationVisualizer

            callbacks.append(ValidationVisualizer(
                run_dir, list(labels.classes), labels.ignore_index, every_n_epochs=cfg.logging.viz_every_n_epochs,
                num_samples=cfg.logging.viz_samples, worst_k=cfg.logging.viz_worst_k, mean=cfg.augment.mean, std=cfg.augment.std,
            ))
        else:
            log.info("logging.viz_every_n_epochs: validation panels are drawn for class maps only; none for task %s", cfg.task)
    callbacks.extend(build_averaging_callbacks(cfg.averaging, cfg.eval.monitor, cfg.eval.mode, cfg.trainer.max_epochs))
    callbacks.append(ExactResume(run_dir / "checkpoints" / "last.ckpt", cfg.trainer.checkpoint_every_n_steps))
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
        use_distributed_sampler=False,  # SegmentationData shards itself, without padding
    )


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict:
    """Train one run into `run_dir`; returns the best validation metrics."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise SeglabError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    if not resume and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise SeglabError(f"{run_dir}: already holds a trained run; use --resume to continue it or choose another --out")
    labels = preflight(cfg, run_dir, ("train", "val"))
    if resume:  # before anything in the run folder is rewritten
        check_checkpoint_meta(load_checkpoint_file(last).get("seglab", {}), cfg, labels, str(last))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if not resume:
        write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_json(run_dir / "labels.json", labels.to_json())

    train_set = build_dataset(cfg, "train", labels, train=True, with_masks=True)
    val_set = build_dataset(cfg, "val", labels, train=False, with_masks=True)
    frequencies = class_frequencies(train_set, labels) if needs_class_frequencies(cfg) else None
    module = SegmentationModule(cfg, labels, run_dir, frequencies)
    module.checkpoint_source = str(last)
    trainer = make_trainer(cfg, run_dir, labels)
    try:
        trainer.fit(module, datamodule=SegmentationData(cfg, train_set, val_set), ckpt_path=str(last) if resume else None,
                    weights_only=True)
    except torch.OutOfMemoryError as e:
        raise out_of_memory_error(e, cfg, trainer, getattr(module, "stage_now", "training")) from None
    metrics_path = run_dir / "metrics.json"
    return json.loads(metrics_path.read_text()) if metrics_path.exists() else {}


def preflight(cfg: Config, run_dir: Path, splits) -> LabelSpec:
    """Every problem that can be found before training, listed at once: the output folder,
    the model name, the class list and the data. Returns the resolved class list."""
    problems = []
    try:
        check_writable(run_dir)
    except SeglabError as e:
        problems.append(str(e))
    try:
        MODELS.get(cfg.model.arch, "model.arch")
    except SeglabError as e:
        problems.append(str(e))
    labels, data_problems = collect_problems(cfg, splits)
    problems.extend(data_problems)
    if problems:
        raise DataValidationError(problems)
    return labels


def out_of_memory_error(error: Exception, cfg: Config, trainer: L.Trainer, stage: str) -> SeglabError:
    batch_key = "data.val_batch_size" if stage == "validation" else "data.batch_size"
    batch = (cfg.data.val_batch_size or cfg.data.batch_size) if stage == "validation" else cfg.data.batch_size
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else "out of memory"
    return SeglabError(
        f"out of GPU memory during {stage} at step {trainer.global_step}, epoch {trainer.current_epoch} ({first}). "
        f"Lower {batch_key} (now {batch}) and raise trainer.accumulate_grad_batches "
        f"(now {cfg.trainer.accumulate_grad_batches}) to keep the effective batch, or use trainer.precision=bf16 "
        f"(now {cfg.trainer.precision}); a smaller data.image_size or model also helps"
    )


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
