"""The one LightningModule, for every task.

Lightning owns the loop (AMP, accumulation, DDP, checkpoints, loggers, progress); this
module says what happens around a step and after each validation, and asks the task
for everything task-specific: its model, loss, training step, probabilities, decision,
metric and table. uint8 images are normalised here, on the device (4x less to copy
than float32).

The training step reads nothing back from the device: a value read back (`.item()`,
`float(t)`, `if t:`) makes the host wait until the GPU has finished every queued kernel,
so the host cannot prepare the next step meanwhile. The losses of the steps since the
last check stay on the device and are read back together, in one transfer, every
`trainer.log_every_n_steps` optimiser steps (where Lightning reads the logged scalars
back for the loggers anyway), before any checkpoint is written and before validation:
a non-finite loss still stops the run naming its step and images, and never reaches a
checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch

from seglab.core.checkpoints import check_checkpoint_meta, check_state_dict_fits
from seglab.task import get_task
from seglab.errors import SeglabError
from seglab.io import append_jsonl, read_jsonl, write_json, write_text


class LabModule(L.LightningModule):
    def __init__(self, cfg, labels, run_dir: str | Path | None = None, class_frequencies=None):
        super().__init__()
        from seglab.optim import freeze_parts

        self.cfg, self.labels = cfg, labels
        self.task = get_task(cfg.task)
        self.run_dir = Path(run_dir) if run_dir else None
        model = self.task.build_model(cfg, labels)
        if cfg.optim.freeze:
            freeze_parts(model, cfg.optim.freeze)
        self.model = model.to(memory_format=torch.channels_last) if cfg.trainer.channels_last else model
        self.criterion = self.task.build_loss(cfg, labels, class_frequencies)
        self.register_buffer("pixel_mean", torch.tensor(cfg.augment.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.augment.std).view(1, 3, 1, 1) * 255, persistent=False)
        # Per-class decision thresholds (multilabel), or None; a loaded run may replace them with tuned ones.
        self.register_buffer("thresholds", self.task.thresholds(cfg, labels), persistent=False)
        self.batch_augment = self.task.batch_augment(cfg, labels)
        self.val_metric = self.task.metric(labels)
        # submission.classes: the training classes merged into the submission's, scored there too.
        from seglab.data.labels import class_merge

        self.merge = class_merge(labels, cfg.submission.classes)
        self.submission_metric = self.task.metric(self.merge.submission) if self.merge else None
        self.best_score: float | None = None
        self.history_rows = 0  # rows this run has in history.jsonl; kept in checkpoints to trim replays on resume
        self.last_val_result: dict | None = None
        self.stage_now = "training"  # named by the out-of-memory message
        self._compiled: dict[str, torch.nn.Module] = {}  # a plain dict: kept out of the module tree and checkpoints
        self._unchecked: list[UncheckedLoss] = []  # training losses not yet read back (check_losses)
        self._checked_at_step = -1
        self.checked_loss: float | None = None  # mean training loss of the steps checked last (host side)

    # ------------------------------------------------------------------ model

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.trainer.channels_last else x

    def net(self, part: str | None = None) -> torch.nn.Module:
        """The model (or one of its parts), compiled while training when trainer.compile asks."""
        module = self.model if part is None else getattr(self.model, part)
        if not (self.cfg.trainer.compile and self.training):
            return module
        if part not in self._compiled:
            mode = None if self.cfg.trainer.compile is True else self.cfg.trainer.compile
            self._compiled[part] = torch.compile(module, mode=mode)
        return self._compiled[part]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] images -> logits."""
        return self.net()(self.normalise(images))

    def validation_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits for the loss, probabilities for the decision) of a validation batch. Tile by
        tile when sliding_window.in_validation asks: then the tiles' probabilities are blended,
        as evaluate and predict blend them, and the loss sees the logits of the blend."""
        window = self.cfg.sliding_window
        if window.enabled and window.in_validation:
            from seglab.core.sliding import sliding_window_from_config

            probs = sliding_window_from_config(lambda t: self.task.probabilities(self(t)), images, window)
            return self.task.logits(probs), probs
        logits = self(images)
        return logits, self.task.probabilities(logits)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.cfg.optim.freeze:
            from seglab.optim import keep_frozen_norms_in_eval

            keep_frozen_norms_in_eval(self.model, self.cfg.optim.freeze)
        return self

    def configure_optimizers(self):
        from seglab.optim import build_optimizer, build_scheduler

        optimizer = build_optimizer(self.model, self.cfg.optim)
        max_epochs = self.cfg.trainer.max_epochs
        steps_per_epoch = max(1, math.ceil(self.trainer.estimated_stepping_batches / max_epochs))
        scheduler = build_scheduler(optimizer, self.cfg.schedule, steps_per_epoch, max_epochs, f"val/{self.cfg.eval.monitor}")
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # --------------------------------------------------------------- training

    def on_train_epoch_start(self):
        self._train_loss = torch.zeros(2, device=self.device)  # (sum, count); kept in checkpoints for mid-epoch resume

    def on_train_batch_start(self, batch, batch_idx):
        self.stage_now = "training"

    def training_step(self, batch, batch_idx):
        loss = self.task.training_loss(self, batch)
        labelled = batch.get("labelled", batch)
        size = labelled["image"].shape[0]
        detached = loss.detach().float()
        # Checked later, in one read-back for many steps (check_losses): no sync here.
        self._unchecked.append(UncheckedLoss(detached, self.global_step, self.current_epoch, list(labelled["id"])[:8]))
        self._train_loss += torch.stack([detached, torch.ones((), device=self.device)])
        # Loggers read these back every trainer.log_every_n_steps steps, when the losses are
        # checked; the progress bar shows the checked mean (LossBar), so its refresh reads nothing back.
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=size)
        components = getattr(self.criterion, "last_values", {})
        if len(components) > 1:
            for name, value in components.items():
                self.log(f"train/loss_{name}", value, on_step=True, on_epoch=False, batch_size=size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        step = self.global_step
        if step % self.cfg.trainer.log_every_n_steps == 0 and step != self._checked_at_step:
            self._checked_at_step = step
            self.check_losses()

    def on_train_epoch_end(self):
        self.check_losses()

    def check_losses(self) -> None:
        """Read back the losses of the steps since the last check (one transfer) and stop
        the run at the first non-finite one, naming its step, epoch and images. Their
        mean becomes `checked_loss`, the loss the progress bar shows."""
        unchecked, self._unchecked = self._unchecked, []
        if not unchecked:
            return
        values = torch.stack([u.value for u in unchecked]).cpu()
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if bad:
            first, last = unchecked[bad[0]], unchecked[-1]
            raise SeglabError(
                f"non-finite loss ({values[bad[0]].item()}) at step {first.step}, epoch {first.epoch}, "
                f"images {first.ids}; found by the check after step {last.step} (losses of steps {unchecked[0].step}-"
                f"{last.step} are read back together, every trainer.log_every_n_steps); the last good checkpoint "
                "is kept. Try a lower optim.lr, trainer.precision=32, or check these images' labels"
            )
        self.checked_loss = float(values.mean())

    # ------------------------------------------------------------- validation

    def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self.stage_now = "validation"

    def on_validation_epoch_start(self):
        self.check_losses()  # the last training steps before validation
        self.val_metric.to(self.device).reset()
        if self.submission_metric is not None:
            self.submission_metric.to(self.device).reset()
        self._val_loss = torch.zeros(2, device=self.device)

    def validation_step(self, batch, batch_idx):
        logits, probs = self.validation_outputs(batch["image"])
        target = batch["target"]
        loss = self.task.validation_loss(self, logits, target)
        if loss is not None:
            n = torch.tensor(float(len(target)), device=self.device)
            self._val_loss += torch.stack([loss.detach().float() * n, n])
        pred = self.task.decide(probs, self.thresholds)
        self.val_metric.update(pred, target)
        if self.merge is not None:
            merged = self.task.merge_probabilities(probs, self.merge)
            decided = self.task.decide(merged, self.task.merge_thresholds(self.thresholds, self.merge))
            self.submission_metric.update(decided, self.task.merge_targets(target, self.merge))
        return {"pred": pred, "probs": probs}

    def on_validation_epoch_end(self):
        self.val_metric.reduce()
        val_loss = self.trainer.strategy.reduce(self._val_loss, reduce_op="sum")
        scores = self.val_metric.compute(list(self.labels.classes))
        if self.merge is not None:
            self.submission_metric.reduce()
            scores.update(submission_scores(self.submission_metric.compute(list(self.merge.submission.classes))))
        # NaN when the task has no validation loss: it is then neither logged nor monitorable.
        scores["loss"] = float(val_loss[0] / val_loss[1]) if val_loss[1] > 0 else math.nan
        self.last_val_result = {**scores, **self.task.history_extra(self.val_metric)}
        # Values are already reduced over processes, so every rank logs the same number.
        for key in monitorable(self.task, self.labels, self.merge) + ("loss",):
            if not math.isnan(scores[key]):
                self.log(f"val/{key}", scores[key], sync_dist=False)
        for name, value in scores[self.task.per_class_key].items():
            if value is not None:
                self.log(f"{self.task.per_class_log}/{name}", value, sync_dist=False)
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self.run_dir is None:
            return
        self.record_validation(scores)

    def record_validation(self, scores: dict) -> None:
        """Append this validation to history.jsonl and, when the monitored score improves
        (judged as ModelCheckpoint judges it), write metrics.json; print the table."""
        epoch, step = self.current_epoch, self.global_step
        monitor = self.cfg.eval.monitor
        train = self._train_loss if hasattr(self, "_train_loss") else torch.zeros(2)
        metrics = {k: v for k, v in scores.items() if k != "loss"}
        row = {
            "epoch": epoch, "step": step,
            "train_loss": float(train[0] / train[1]) if train[1] > 0 else None,
            "val_loss": scores["loss"],
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else None,
            **metrics, **self.task.history_extra(self.val_metric),
        }
        append_jsonl(self.run_dir / "history.jsonl", finite(row))
        self.history_rows += 1
        better = improves(scores[monitor], self.best_score, self.cfg.eval.mode)
        if better:
            self.best_score = scores[monitor]
            best = {"epoch": epoch, "step": step, "monitor": monitor, **metrics, "val_loss": scores["loss"]}
            write_json(self.run_dir / "metrics.json", finite(best))
        mark = "  (best)" if better else ""
        # Logged (not printed): the table reaches RUN/train.log too.
        logging.getLogger("seglab").info("\n" + self.task.format_table(scores, f"validation after epoch {epoch} (step {step}){mark}"))
        if self.merge is not None:
            logging.getLogger("seglab").info(self.task.format_table(unprefixed(scores), "  in submission classes (submission.classes)"))

    # ------------------------------------------------------------ checkpoints

    def checkpoint_meta(self) -> dict:
        """What a checkpoint records about the run besides its tensors."""
        return {
            "classes": list(self.labels.classes), "task": self.cfg.task, "arch": self.cfg.model.arch,
            "encoder": self.cfg.model.encoder, "best_score": self.best_score, "history_rows": self.history_rows,
        }

    def on_save_checkpoint(self, checkpoint):
        self.check_losses()  # a non-finite loss never reaches a checkpoint
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


class UncheckedLoss(NamedTuple):
    """A training step's loss, still on the device, and what names the step if it is bad."""

    value: torch.Tensor
    step: int
    epoch: int
    ids: list


SUBMISSION = "submission_"  # prefix of the scores in submission classes (what eval.monitor may name)


def submission_scores(scores: dict) -> dict:
    """A metric's scores in submission classes, each key prefixed (submission_mIoU, ...)."""
    return {SUBMISSION + k: v for k, v in scores.items()}


def unprefixed(scores: dict) -> dict:
    return {k[len(SUBMISSION):]: v for k, v in scores.items() if k.startswith(SUBMISSION)}


def monitorable(task, labels, merge) -> tuple[str, ...]:
    """Every scalar a validation reports: the task's in training classes, and with
    submission.classes the same again in submission classes."""
    names = task.metric_names(labels)
    if merge is not None:
        names += tuple(SUBMISSION + n for n in task.metric_names(merge.submission))
    return names


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


def finite(obj):
    """JSON has no NaN: absent scores are written as null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj
