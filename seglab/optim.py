"""Optimisers, per-part learning rates, freezing and learning-rate schedules.

The course log lost days to `Adam([{"params": model.encoder.parameters(), ...}])`:
the decoder was never trained and nothing complained (seeds/001). So every trainable
parameter must land in exactly one group; this is checked on the groups and again on
the built optimiser, so a wrapper that drops parameters is caught too.

Per-step schedules are closed-form multipliers in torch's `LambdaLR` rather than
`CosineAnnealingLR`/`PolynomialLR` chained after `LinearLR`: torch's floors (`eta_min`)
are one absolute number for all groups, which would break the encoder/decoder lr ratio,
and a closed form resumes exactly from the step count alone. One-cycle and plateau
are torch's own `OneCycleLR` and `ReduceLROnPlateau`.
"""

from __future__ import annotations

import bisect
import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch
from adamp import AdamP
from timm.optim import Lookahead
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from seglab.errors import ConfigError
from seglab.config.schema import OptimConfig, ParamGroupSpec, ScheduleConfig
from seglab.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")
REST = "rest"

# BatchNorm, SyncBatchNorm and InstanceNorm: the norms that keep running statistics.
_STAT_NORMS = nn.modules.batchnorm._NormBase


def val_key(monitor: str) -> str:
    """The logged key of a validation metric: `mIoU` -> `val/mIoU` (already prefixed names pass)."""
    return monitor if monitor.startswith("val/") else f"val/{monitor}"


# ---------------------------------------------------------------- parts and freezing

def model_parts(model: nn.Module) -> dict[str, nn.Module]:
    if not callable(getattr(model, "parts", None)):
        raise ConfigError(f"{type(model).__name__} has no parts() method; per-part optimiser settings need one")
    return dict(model.parts())


def _check_part_names(names: list[str], parts: dict[str, nn.Module], where: str, allow_rest: bool = False) -> None:
    unknown = [n for n in names if n not in parts and not (allow_rest and n == REST)]
    if unknown:
        known = ", ".join(list(parts) + ([REST] if allow_rest else []))
        raise ConfigError(f"{where}: unknown part(s) {', '.join(map(repr, unknown))} (model parts: {known})")


def freeze_parts(model: nn.Module, names: list[str]) -> None:
    parts = model_parts(model)
    _check_part_names(names, parts, "optim.freeze")
    for name in names:
        parts[name].requires_grad_(False)


def keep_frozen_norms_in_eval(model: nn.Module, names: list[str]) -> None:
    """Call after every `model.train()`: a frozen BatchNorm in train mode still rewrites its running stats."""
    parts = model_parts(model)
    _check_part_names(names, parts, "optim.freeze")
    for module in (m for name in names for m in parts[name].modules()):
        if isinstance(module, _STAT_NORMS):
            module.eval()


# ---------------------------------------------------------------- parameter groups

def _owners(parts: dict[str, nn.Module]) -> dict[int, str]:
    owner: dict[int, str] = {}
    for name, part in parts.items():
        for p in part.parameters():
            if owner.setdefault(id(p), name) != name:
                raise ConfigError(f"model parts {owner[id(p)]!r} and {name!r} share parameters; "
                                  "parts() must hold every parameter exactly once")
    return owner


def _describe(params: list[torch.Tensor], owner: dict[int, str], where: str = "") -> str:
    names = list(dict.fromkeys(owner.get(id(p), "<outside parts()>") for p in params))
    return f"{sum(p.numel() for p in params):,} trainable parameters{where} (parts: {', '.join(names)})"


def _group_specs(cfg: OptimConfig) -> tuple[list[ParamGroupSpec], str]:
    if cfg.encoder_lr is not None:
        return [ParamGroupSpec(parts=["encoder"], lr=cfg.encoder_lr), ParamGroupSpec(parts=[REST])], "optim.encoder_lr"
    if cfg.param_groups:
        return list(cfg.param_groups), "optim.param_groups"
    return [ParamGroupSpec(parts=[REST])], "optim"


def build_param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Torch param groups for the config; applies `cfg.freeze` first and leaves frozen parameters out."""
    parts = model_parts(model)
    freeze_parts(model, cfg.freeze)
    owner = _owners(parts)
    specs, where = _group_specs(cfg)
    claimed: dict[str, int] = {}
    for i, spec in enumerate(specs):
        _check_part_names(spec.parts, parts, f"{where}[{i}].parts" if cfg.param_groups else where, allow_rest=True)
        for name in spec.parts:
            if name in claimed:
                raise ConfigError(f"{where}: part {name!r} is in groups {claimed[name]} and {i}; a part may be in one group only")
            claimed[name] = i

    members: list[list[torch.Tensor]] = [
        [p for name in spec.parts if name != REST for p in parts[name].parameters() if p.requires_grad] for spec in specs
    ]
    named = {id(p) for name in claimed if name != REST for p in parts[name].parameters()}
    leftover = [p for p in model.parameters() if p.requires_grad and id(p) not in named]
    if REST in claimed:
        members[claimed[REST]] += leftover
    elif leftover:
        raise ConfigError(f"{where} leave {_describe(leftover, owner, ' in no group')}; "
                          f"add them to a group or add a group with parts: [{REST}]")

    groups: list[dict] = []
    for spec, params in zip(specs, members):
        lr = cfg.lr if spec.lr is None else spec.lr
        wd = cfg.weight_decay if spec.weight_decay is None else spec.weight_decay
        name = "+".join(spec.parts)
        if cfg.no_weight_decay_on_norm_and_bias:
            # 1-D tensors are biases and norm scales: decaying them only fights the normalisation.
            groups.append({"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": wd, "name": name})
            groups.append({"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"})
        else:
            groups.append({"params": params, "lr": lr, "weight_decay": wd, "name": name})
    groups = [g for g in groups if g["params"]]  # a group whose parts are all frozen, or an empty `rest`
    if not groups:
        raise ConfigError(f"no trainable parameters left to optimise (optim.freeze: [{', '.join(cfg.freeze)}])")
    return groups


def check_optimizer_covers(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise unless the optimiser holds every trainable parameter of `model` exactly once, and nothing else."""
    owner = _owners(model_parts(model)) if callable(getattr(model, "parts", None)) else {}
    count: dict[int, int] = {}
    for p in (p for group in optimizer.param_groups for p in group["params"]):
        count[id(p)] = count.get(id(p), 0) + 1
    trainable = [p for p in model.parameters() if p.requires_grad]
    missing = [p for p in trainable if id(p) not in count]
    if missing:
        raise ConfigError(f"the optimiser misses {_describe(missing, owner)}; they would never be updated")
    twice = [p for p in trainable if count[id(p)] > 1]
    if twice:
        raise ConfigError(f"the optimiser holds {_describe(twice, owner)} in more than one group")
    extra = len(count) - len(trainable)
    if extra:
        raise ConfigError(f"the optimiser holds {extra} tensors that are not trainable parameters of the model")


def _fused(cls: type, groups: list[dict], cfg: OptimConfig) -> dict:
    supported = "fused" in inspect.signature(cls).parameters
    if cfg.fused == "auto":
        return {"fused": True} if supported and all(p.is_cuda for g in groups for p in g["params"]) else {}
    if cfg.fused and not supported:
        raise ConfigError(f"optim.fused=true, but {cls.__name__} has no fused implementation; use fused: auto")
    return {"fused": cfg.fused} if supported else {}


def _adam_family(cls: type, groups: list[dict], cfg: OptimConfig, **extra) -> torch.optim.Optimizer:
    return cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **extra, **_fused(cls, groups, cfg))


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, **_fused(torch.optim.SGD, groups, cfg))


@OPTIMIZERS.register("adam")
def _adam(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return _adam_family(torch.optim.Adam, groups, cfg)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return _adam_family(torch.optim.AdamW, groups, cfg)


@OPTIMIZERS.register("radam")
def _radam(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return _adam_family(torch.optim.RAdam, groups, cfg)


@OPTIMIZERS.register("adamp")
def _adamp(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return _adam_family(AdamP, groups, cfg, nesterov=cfg.nesterov)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    optimizer = OPTIMIZERS.get(cfg.name, "optim.name")(build_param_groups(model, cfg), cfg)
    if cfg.lookahead is not None:
        optimizer = Lookahead(optimizer, alpha=cfg.lookahead.alpha, k=cfg.lookahead.k)
    check_optimizer_covers(model, optimizer)
    return optimizer


# ---------------------------------------------------------------- schedules

@dataclass(frozen=True)
class StepPlan:
    """The run's length in optimiser steps, the unit every per-step schedule is written in."""

    steps_per_epoch: int
    total: int
    warmup: int
    val_every_n_epochs: int = 1

    @property
    def decay(self) -> int:
        return max(self.total - self.warmup, 1)

    def steps(self, epochs: float) -> int:
        return max(round(epochs * self.steps_per_epoch), 1)


def _per_step(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, plan: StepPlan, decay: Callable[[int], float]) -> dict:
    """LambdaLR of `decay(step)` after a linear warmup; the multiplier scales each group's own lr."""
    start, warmup = cfg.warmup_start_factor, plan.warmup

    def factor(step: int) -> float:
        return start + (1 - start) * step / warmup if step < warmup else decay(step)

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def _cosine(position: float, floor: float) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * position))


def _after_warmup(step: int, plan: StepPlan) -> float:
    return min(step - plan.warmup, plan.decay) / plan.decay


@SCHEDULES.register("none")
def _none_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict | None:
    return _per_step(optimizer, cfg, plan, lambda step: 1.0) if plan.warmup else None


@SCHEDULES.register("cosine")
def _cosine_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict:
    return _per_step(optimizer, cfg, plan, lambda step: _cosine(_after_warmup(step, plan), cfg.min_lr_ratio))


@SCHEDULES.register("cosine_restarts")
def _cosine_restarts_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict:
    first = plan.steps(cfg.restart_epochs)

    def decay(step: int) -> float:
        position, cycle = step - plan.warmup, first
        if cfg.restart_mult == 1:
            position %= cycle
        while position >= cycle:  # integer walk: the closed form's log() misplaces exact cycle ends
            position, cycle = position - cycle, cycle * cfg.restart_mult
        return _cosine(position / cycle, cfg.min_lr_ratio)

    return _per_step(optimizer, cfg, plan, decay)


@SCHEDULES.register("poly")
def _poly_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict:
    floor = cfg.min_lr_ratio
    return _per_step(optimizer, cfg, plan, lambda step: floor + (1 - floor) * (1 - _after_warmup(step, plan)) ** cfg.power)


@SCHEDULES.register("step")
def _step_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict:
    size = plan.steps(cfg.step_size_epochs)
    return _per_step(optimizer, cfg, plan, lambda step: cfg.gamma ** (step // size))


@SCHEDULES.register("multistep")
def _multistep_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict:
    milestones = [plan.steps(e) for e in cfg.milestones_epochs]
    return _per_step(optimizer, cfg, plan, lambda step: cfg.gamma ** bisect.bisect_right(milestones, step))


@SCHEDULES.register("onecycle")
def _onecycle_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict:
    scheduler = OneCycleLR(
        optimizer, max_lr=[g["lr"] * cfg.max_lr_factor for g in optimizer.param_groups], total_steps=plan.total,
        pct_start=plan.warmup / plan.total if plan.warmup else 0.3, div_factor=1 / cfg.warmup_start_factor,
        cycle_momentum=False,  # keep optim.momentum / optim.betas as configured
    )
    return {"scheduler": scheduler, "interval": "step"}


@SCHEDULES.register("plateau")
def _plateau_schedule(optimizer, cfg: ScheduleConfig, plan: StepPlan) -> dict:
    scheduler = ReduceLROnPlateau(optimizer, mode=cfg.plateau_mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                                  min_lr=[g["lr"] * cfg.min_lr_ratio for g in optimizer.param_groups])
    # Stepping only after epochs that validate keeps the patience counted in validations.
    return {"scheduler": scheduler, "interval": "epoch", "frequency": plan.val_every_n_epochs}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, max_epochs: int,
                    monitor: str, *, val_every_n_epochs: int = 1) -> dict | None:
    """A Lightning `lr_scheduler` config dict, or None for `none` without warmup.

    `steps_per_epoch` counts optimiser steps (batches / gradient accumulation); `monitor`
    may be given with or without its `val/` prefix.
    """
    if steps_per_epoch < 1 or max_epochs < 1:
        raise ConfigError(f"a schedule needs steps_per_epoch >= 1 and max_epochs >= 1, got {steps_per_epoch} and {max_epochs}")
    total, warmup = steps_per_epoch * max_epochs, round(cfg.warmup_epochs * steps_per_epoch)
    if warmup >= total:
        raise ConfigError(f"schedule.warmup_epochs={cfg.warmup_epochs} covers the whole run ({max_epochs} epochs)")
    built = SCHEDULES.get(cfg.name, "schedule.name")(optimizer, cfg, StepPlan(steps_per_epoch, total, warmup, val_every_n_epochs))
    return None if built is None else {**built, "monitor": val_key(monitor)}
