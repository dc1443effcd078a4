"""The training step reads nothing back from the device between checks.

A read-back (`.item()`, `.cpu()`, `.tolist()`, `float(t)`, `bool(t)`, `int(t)`) makes the
host wait for every kernel queued on the GPU. This runs a real `train` for each task on
the CPU and counts those calls, batch by batch, in the module's training step and in
every per-batch hook after it (each callback's and the module's `on_train_batch_end`,
Lightning's logger update, the progress bar): there must be none, except on the steps
where the losses are checked (every trainer.log_every_n_steps optimiser steps).
Torch's optimiser internals and the data loader are not counted: they read CPU-only
tensors (step counters, decoded images).
"""

from __future__ import annotations

import traceback
from collections import defaultdict

import lightning as L
import pytest
import torch

import seglab.core.training as training
from seglab.config import load_config
from tests.workflow_helpers import TASKS, task_data

READ_BACKS = ("item", "cpu", "tolist", "__float__", "__bool__", "__int__")
EVERY = 2  # trainer.log_every_n_steps


class ReadBackCounter(L.Callback):
    """Counts read-backs per training step (keyed by the step's global_step) inside the
    per-batch regions named above."""

    def __init__(self):
        self.step, self.counting = None, False
        self.calls: dict[int, list[str]] = defaultdict(list)
        self.steps: list[int] = []

    def record(self, name: str) -> None:
        if self.counting:
            here = " < ".join(f"{f.filename.split('/')[-1]}:{f.lineno}" for f in traceback.extract_stack(limit=12)[::-1][2:])
            self.calls[self.step].append(f"{name} from {here}")

    def counted(self, fn, starts_step: bool = False):
        def wrapper(*args, **kwargs):
            if starts_step:
                self.step = fn.__self__.global_step
                self.steps.append(self.step)
            self.counting = True
            try:
                return fn(*args, **kwargs)
            finally:
                self.counting = False
        return wrapper

    def on_fit_start(self, trainer, pl_module):
        pl_module.training_step = self.counted(pl_module.training_step, starts_step=True)
        pl_module.on_train_batch_end = self.counted(pl_module.on_train_batch_end)
        for callback in trainer.callbacks:
            callback.on_train_batch_end = self.counted(callback.on_train_batch_end)
        connector = trainer._logger_connector
        connector.update_train_step_metrics = self.counted(connector.update_train_step_metrics)


def count_read_backs(monkeypatch, counter: ReadBackCounter) -> None:
    for name in READ_BACKS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            counter.record(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)


@pytest.mark.parametrize("task, extra", [(task, []) for task in TASKS] + [
    ("classification", ["classification.snapmix_alpha=1.0"]), ("multiclass", ["averaging.ema_decay=0.9"])])
def test_training_steps_read_nothing_back_between_checks(task, extra, tmp_path, monkeypatch):
    config, overrides = task_data(task, tmp_path / "data")
    cfg = load_config(config, overrides + extra + [
        "data.batch_size=2", "trainer.max_epochs=1", f"trainer.log_every_n_steps={EVERY}", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1", "schedule.warmup_epochs=0", "trainer.progress_bar=true", "logging.loggers=[csv]", "logging.viz_every_n_epochs=0",
    ])
    counter = ReadBackCounter()
    make_callbacks = training.make_callbacks
    monkeypatch.setattr(training, "make_callbacks", lambda *a, **k: make_callbacks(*a, **k) + [counter])
    count_read_backs(monkeypatch, counter)
    training.train(cfg, tmp_path / "run")

    assert len(counter.steps) >= 3, counter.steps  # steps between checks were seen
    checks = [s for s in counter.steps if (s + 1) % EVERY == 0]
    between = [s for s in counter.steps if s not in checks]
    assert {s: counter.calls[s] for s in between if counter.calls[s]} == {}
    # The counter does see read-backs: the check reads the losses back (and Lightning the logged scalars).
    assert all(any("cpu from" in c for c in counter.calls[s]) for s in checks), dict(counter.calls)
