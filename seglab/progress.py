"""Progress with an ETA for long loops, as log lines (so they reach RUN/train.log and a
console without a progress bar): one line every `EVERY_SECONDS` seconds, and a last one
when the loop took long enough to have printed any.

    for batch in progress(loader, "evaluate val"):  ...
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator, TypeVar

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger("seglab")

EVERY_SECONDS = 10.0
T = TypeVar("T")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(what: str, done: int, total: int | None, elapsed: float, unit: str = "batches") -> str:
    if not total:
        return f"{what}: {done} {unit}, {_duration(elapsed)}"
    eta = elapsed / done * (total - done) if done else 0.0
    return f"{what}: {done}/{total} {unit} ({100 * done / total:.0f}%), {_duration(elapsed)}, ETA {_duration(eta)}"


def progress(items: Iterable[T], what: str, total: int | None = None, unit: str = "batches",
             every: float | None = None) -> Iterator[T]:
    """`items` unchanged, with a progress line every `every` seconds (EVERY_SECONDS)."""
    every = EVERY_SECONDS if every is None else every
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    start = last = time.monotonic()
    done, spoke = 0, False
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            log.info(progress_line(what, done, total, now - start, unit))
            last, spoke = now, True
    if spoke:
        log.info(f"{what}: {done} {unit} in {_duration(time.monotonic() - start)}")


class TrainingProgress(L.Callback):
    """With the progress bar off, a line every `every` seconds of training: epoch, step,
    share of the epoch, loss and ETA of the epoch and of the run."""

    def __init__(self, every: float | None = None):
        self.every = EVERY_SECONDS if every is None else every
        self.started = self.last = self.epoch_started = 0.0
        self.steps_at_start = 0

    def on_train_start(self, trainer, module) -> None:
        self.started = self.last = time.monotonic()
        self.steps_at_start = trainer.global_step
        if trainer.is_global_zero:
            log.info(f"training: {trainer.max_epochs} epochs of {trainer.num_training_batches} batches "
                     f"(progress every {self.every:g} s; trainer.progress_bar=true for a bar)")

    def on_train_epoch_start(self, trainer, module) -> None:
        self.epoch_started = time.monotonic()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if now - self.last < self.every or not trainer.is_global_zero:
            return
        self.last = now
        per_epoch = trainer.num_training_batches
        done = batch_idx + 1
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        shown = f", loss {float(loss):.4f}" if loss is not None else ""
        line = progress_line(f"epoch {trainer.current_epoch}", done, per_epoch if per_epoch != float("inf") else None,
                             now - self.epoch_started)
        steps = trainer.global_step - self.steps_at_start
        total = trainer.estimated_stepping_batches - self.steps_at_start if trainer.estimated_stepping_batches != float("inf") else None
        run_eta = f", run ETA {_duration((now - self.started) / steps * (total - steps))}" if steps and total else ""
        log.info(f"{line}{shown}{run_eta}")


class LossBar(TQDMProgressBar):
    """Lightning's training progress bar, showing the loss without waiting for the GPU.

    Lightning's bar shows the scalars logged with `prog_bar=True` and reads each one back
    from the device at every refresh (every step), which makes the host wait for the GPU
    every step. seglab's loss is read back only when it is checked (LabModule.check_losses,
    every trainer.log_every_n_steps steps); this bar shows that host-side value."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "checked_loss", None)
        if loss is not None:
            items["loss"] = f"{loss:.4g}"
        return items
