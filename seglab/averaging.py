"""Weight averaging and early stopping: EMA, SWA and EarlyStopping as Lightning callbacks.

SWA and early stopping are Lightning's own callbacks, configured here. EMA is a small
callback of our own because it must decide what gets evaluated and saved: the
averaged weights are swapped into the model for every validation and written as the
checkpoint's model weights, so the monitored score, the "best" checkpoint and a later
`predict` all see the same weights. The raw weights ride along in the checkpoint under
`EMA_RAW_KEY`, so resuming continues training exactly where it stopped.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, StochasticWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from seglab.config.schema import AveragingConfig
from seglab.errors import ConfigError
from seglab.optim import val_key

EMA_RAW_KEY = "ema_raw_state_dict"


class EMACallback(L.Callback):
    """Exponential moving average of every float tensor in the module's state dict.

    Updated after each optimiser step: `ema = decay * ema + (1 - decay) * weights`,
    starting from the weights at the start of training. Float buffers are averaged too,
    so the BatchNorm statistics match the averaged weights; integer buffers (counters)
    stay the module's own. After `fit` the module holds the EMA weights, like the
    checkpoints it wrote.
    """

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise ConfigError(f"averaging.ema_decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.ema: dict[str, torch.Tensor] | None = None
        self.swapped = False  # True while the module holds the EMA and `self.ema` holds the raw weights
        self._last_step = -1

    @staticmethod
    def _averaged(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: value for name, value in module.state_dict().items() if value.is_floating_point()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        assert self.ema is not None and not self.swapped
        for name, value in self._averaged(module).items():
            self.ema[name].lerp_(value, 1 - self.decay)

    @torch.no_grad()
    def swap(self, module: torch.nn.Module) -> None:
        """Exchange the module's weights with the stored ones, one tensor at a time to save memory."""
        assert self.ema is not None
        for name, value in self._averaged(module).items():
            held = value.clone()
            value.copy_(self.ema[name])
            self.ema[name].copy_(held)
        self.swapped = not self.swapped

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning skips callbacks' on_save_checkpoint for weights-only checkpoints: they would hold raw weights.
        if any(getattr(cb, "save_weights_only", False) for cb in trainer.checkpoint_callbacks):
            raise ConfigError("averaging.ema_decay needs full checkpoints; a weights-only ModelCheckpoint would save the raw weights")
        if self.swapped:  # fit() called again after a previous fit left the EMA weights in the module
            self.swap(pl_module)
        live = self._averaged(pl_module)
        if self.ema is None:
            self.ema = {name: value.detach().clone() for name, value in live.items()}
        else:  # restored from a checkpoint before the strategy moved the module
            self.ema = {name: self.ema[name].to(value.device) for name, value in live.items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # the restored step on resume, so no update is counted twice

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self._last_step:
            return  # still accumulating gradients: no optimiser step yet
        self._last_step = trainer.global_step
        self.update(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self.ema is not None and not self.swapped:
            self.swap(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self.swapped:
            self.swap(pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.swapped and trainer.state.fn == TrainerFn.FITTING:
            self.swap(pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is not None and not self.swapped:
            self.swap(pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.ema is None:
            return
        live = checkpoint["state_dict"]
        averaged, raw = (live, self.ema) if self.swapped else (self.ema, live)
        checkpoint["state_dict"] = {name: averaged.get(name, value) for name, value in live.items()}
        checkpoint[EMA_RAW_KEY] = {name: raw.get(name, value) for name, value in live.items()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Lightning restores callbacks for validate/test too; only a resumed fit wants the raw weights back.
        if trainer.state.fn != TrainerFn.FITTING:
            return
        live = self._averaged(pl_module)
        saved = checkpoint["state_dict"]
        self.ema = {name: saved.get(name, value).detach().clone().to(value.device) for name, value in live.items()}
        self.swapped = False
        if EMA_RAW_KEY in checkpoint:
            pl_module.load_state_dict(checkpoint[EMA_RAW_KEY], strict=getattr(pl_module, "strict_loading", True))


def build_averaging_callbacks(cfg: AveragingConfig, monitor: str, mode: str, max_epochs: int) -> list[L.Callback]:
    """EMA, SWA and early stopping callbacks as configured; `monitor` with or without its `val/` prefix."""
    if mode not in ("min", "max"):
        raise ConfigError(f"monitor mode must be 'min' or 'max', got {mode!r}")
    callbacks: list[L.Callback] = []
    if cfg.ema_decay is not None:
        callbacks.append(EMACallback(cfg.ema_decay))
    if cfg.swa:
        start = int(cfg.swa_start_epoch * max_epochs) if cfg.swa_start_epoch < 1 else int(cfg.swa_start_epoch)
        if start >= max_epochs:
            raise ConfigError(f"averaging.swa_start_epoch={cfg.swa_start_epoch} is at or after the last epoch ({max_epochs} epochs)")
        callbacks.append(StochasticWeightAveraging(
            swa_lrs=float(cfg.swa_lr),
            swa_epoch_start=start + 1,  # Lightning counts this integer from 1
            annealing_epochs=cfg.swa_anneal_epochs,
        ))
    if cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(
            monitor=val_key(monitor), mode=mode, patience=cfg.early_stopping_patience,
            min_delta=cfg.early_stopping_min_delta,
            check_on_train_epoch_end=False,  # count validations, not training epochs
        ))
    return callbacks
