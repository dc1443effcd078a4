import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from seglab.averaging import EMA_RAW_KEY, EMACallback, build_averaging_callbacks
from seglab.config.schema import AveragingConfig
from seglab.errors import ConfigError

W0, LR, DECAY, STEPS_PER_EPOCH = 1.0, 0.1, 0.9, 4


class OneWeight(L.LightningModule):
    """loss = w, so plain SGD makes w_i = W0 - i * LR: every raw weight is known in closed form."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(W0))
        self.seen_in_validation: list[float] = []

    def training_step(self, batch, batch_idx):
        return self.w * batch[0].sum()

    def validation_step(self, batch, batch_idx):
        self.seen_in_validation.append(self.w.item())
        self.log("val/score", -self.w.detach())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def loader():
    return DataLoader(TensorDataset(torch.ones(STEPS_PER_EPOCH)), batch_size=1)


def ema_closed_form(n):
    """EMA after n steps from w_0: d^n w_0 + (1 - d) * sum_i d^(n - i) w_i."""
    return DECAY**n * W0 + (1 - DECAY) * sum(DECAY ** (n - i) * (W0 - i * LR) for i in range(1, n + 1))


def fit(tmp_path, epochs, ckpt_path=None, **trainer_kw):
    module, ema = OneWeight(), EMACallback(DECAY)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=[ema, *trainer_kw.pop("callbacks", [])],
        enable_checkpointing=trainer_kw.pop("enable_checkpointing", False), **trainer_kw,
    )
    trainer.fit(module, loader(), DataLoader(TensorDataset(torch.ones(1)), batch_size=1), ckpt_path=ckpt_path)
    return trainer, module, ema


def test_ema_matches_closed_form_and_is_what_validation_and_checkpoints_see(tmp_path):
    trainer, module, ema = fit(tmp_path, 2)
    n = 2 * STEPS_PER_EPOCH
    assert module.seen_in_validation == pytest.approx([ema_closed_form(STEPS_PER_EPOCH), ema_closed_form(n)])
    assert module.w.item() == pytest.approx(ema_closed_form(n))  # after fit the module holds the EMA
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    ckpt = torch.load(tmp_path / "end.ckpt", weights_only=False)
    assert ckpt["state_dict"]["w"].item() == pytest.approx(ema_closed_form(n))
    assert ckpt[EMA_RAW_KEY]["w"].item() == pytest.approx(W0 - n * LR)


def test_ema_updates_once_per_optimizer_step_with_accumulation(tmp_path):
    _, module, _ = fit(tmp_path, 1, accumulate_grad_batches=2)
    # 4 batches = 2 optimiser steps (Lightning averages the accumulated gradient, so w_i = W0 - i * LR still)
    assert module.w.item() == pytest.approx(ema_closed_form(2))
    assert module.seen_in_validation == pytest.approx([ema_closed_form(2)])


def test_ema_resume_continues_exactly(tmp_path):
    _, straight, _ = fit(tmp_path / "a", 4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "b", save_last=True)
    fit(tmp_path / "b", 2, callbacks=[checkpoint], enable_checkpointing=True)
    saved = torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)
    assert saved["state_dict"]["w"].item() == pytest.approx(ema_closed_form(8))
    assert saved[EMA_RAW_KEY]["w"].item() == pytest.approx(W0 - 8 * LR)
    _, resumed, _ = fit(tmp_path / "c", 4, ckpt_path=tmp_path / "b" / "last.ckpt")
    assert resumed.w.item() == pytest.approx(straight.w.item()) == pytest.approx(ema_closed_form(16))
    assert resumed.seen_in_validation == pytest.approx([ema_closed_form(12), ema_closed_form(16)])


def test_ema_refuses_weights_only_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="full checkpoints"):
        fit(tmp_path, 1, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)], enable_checkpointing=True)


def test_build_callbacks_early_stopping_monitor_and_mode():
    (stop,) = build_averaging_callbacks(
        AveragingConfig(early_stopping_patience=3, early_stopping_min_delta=0.01), "mIoU", "max", 20)
    assert isinstance(stop, EarlyStopping)
    assert stop.monitor == "val/mIoU" and stop.mode == "max" and stop.patience == 3 and stop.min_delta == 0.01
    assert stop._check_on_train_epoch_end is False  # patience counts validations
    (stop,) = build_averaging_callbacks(AveragingConfig(early_stopping_patience=1), "val/loss", "min", 20)
    assert stop.monitor == "val/loss" and stop.mode == "min"
    assert build_averaging_callbacks(AveragingConfig(), "mIoU", "max", 20) == []


def test_build_callbacks_ema_and_swa_start():
    (ema,) = build_averaging_callbacks(AveragingConfig(ema_decay=0.999), "mIoU", "max", 20)
    assert isinstance(ema, EMACallback) and ema.decay == 0.999
    (swa,) = build_averaging_callbacks(AveragingConfig(swa=True, swa_lr=0.01), "mIoU", "max", 20)
    assert isinstance(swa, StochasticWeightAveraging) and swa.swa_start == 15  # 0-based: the last quarter of 20
    (swa,) = build_averaging_callbacks(AveragingConfig(swa=True, swa_lr=0.01, swa_start_epoch=12), "mIoU", "max", 20)
    assert swa.swa_start == 12
    with pytest.raises(ConfigError, match="swa_start_epoch"):
        build_averaging_callbacks(AveragingConfig(swa=True, swa_lr=0.01, swa_start_epoch=20), "mIoU", "max", 20)


def test_averaging_config_errors():
    with pytest.raises(ValidationError, match="swa_lr"):
        AveragingConfig(swa=True)
    with pytest.raises(ValidationError, match="not both"):
        AveragingConfig(swa=True, swa_lr=0.01, ema_decay=0.99)
    with pytest.raises(ValidationError, match="early stopping"):
        AveragingConfig(swa=True, swa_lr=0.01, early_stopping_patience=3)
    with pytest.raises(ValidationError):
        AveragingConfig(ema_decay=1.5)
    with pytest.raises(ConfigError, match="mode"):
        build_averaging_callbacks(AveragingConfig(), "mIoU", "up", 20)


def test_ema_averages_float_buffers_and_leaves_counters_alone():
    bn, callback = nn.BatchNorm1d(2), EMACallback(0.5)
    callback.ema = {k: v.clone() for k, v in bn.state_dict().items() if v.is_floating_point()}
    bn.running_mean.fill_(2.0)
    bn.num_batches_tracked += 3
    callback.update(bn)
    assert torch.equal(callback.ema["running_mean"], torch.ones(2)) and "num_batches_tracked" not in callback.ema
    callback.swap(bn)
    assert torch.equal(bn.running_mean, torch.ones(2)) and bn.num_batches_tracked.item() == 3
    assert torch.equal(callback.ema["running_mean"], torch.full((2,), 2.0))
