"""Losses: one registry, one builder per loss, and a weighted combiner driven by the config.

A builder is called as `builder(targets, num_classes, ignore_index, **params)` and returns
an `nn.Module` mapping `(logits, target)` to a scalar. `targets` says what the task's
targets are: "index" (class indices: class maps [B, H, W], or [B] for classification;
softmax losses) or "binary" ([B, C, H, W] 0/1 masks; sigmoid losses). To add a loss,
write a builder here and decorate it with `@_loss(name, targets)`; the config picks it up
by name.

Library losses (torch, segmentation_models_pytorch) are used wherever they exist; only
the softmax focal loss, the boundary-weighted CE, OHEM and the combiner are written here.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from typing import Any, Callable, Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ConfigError
from seglab.registry import Registry

LOSSES = Registry("loss")
TARGETS = ("index", "binary")
INDEX, BINARY = TARGETS[:1], TARGETS[1:]
_BUILDER_ARGS = ("targets", "num_classes", "ignore_index")
SMP_MODE = {"index": "multiclass", "binary": "multilabel"}  # smp's names for the two target kinds


class _Float32(nn.Module):
    """Runs a loss in float32 with autocast off: bf16/fp16 softmax sums and near-equal loss
    differences lose the signal, and library losses do arithmetic outside autocast's fp32 list."""

    def __init__(self, loss: nn.Module, targets: str):
        super().__init__()
        self.loss, self.targets = loss, targets

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            target = target.float() if self.targets == "binary" else target.long()
            return self.loss(logits.float(), target)


def _loss(name: str, targets: Sequence[str]) -> Callable:
    """Register a builder under `name`, refusing targets it cannot handle and wrapping it in float32."""

    def add(fn: Callable) -> Callable:
        @functools.wraps(fn)  # keeps the signature visible to validate_loss_specs
        def build(targets: str, num_classes: int, ignore_index: int, **params: Any) -> nn.Module:
            if targets not in build.targets:
                raise ConfigError(_unsupported(name, targets, build.targets))
            return _Float32(fn(targets, num_classes, ignore_index, **params), targets)

        build.targets = tuple(targets)
        build.loss_name = name
        return LOSSES.register(name)(build)

    return add


def _unsupported(name: str, targets: str, supported: Sequence[str]) -> str:
    kinds = {"index": "class-index targets (multiclass, classification)", "binary": "binary masks (multilabel)"}
    return f"loss {name!r} does not take {kinds[targets]} (it takes {' or '.join(kinds[t] for t in supported)})"


def auto_class_weights(frequencies: torch.Tensor) -> torch.Tensor:
    """Class weights from pixel (or sample) counts: w_c ∝ 1/sqrt(f_c), scaled so sum_c f_c w_c = 1.

    Inverse square root rather than median-frequency balancing: a 0.01% class (battery in
    the trash data) gets ~200x a typical class's weight from median-frequency, which makes
    CE noisy; the square root gives ~14x. The scaling keeps the average pixel's weight at 1.
    A class never seen gets the rarest seen class's weight instead of inf.
    """
    f = torch.as_tensor(frequencies, dtype=torch.float64).flatten()
    if (f < 0).any() or f.sum() <= 0:
        raise ConfigError(f"class frequencies must be non-negative and not all zero, got {f.tolist()}")
    f = f / f.sum()
    seen = f > 0
    w = torch.zeros_like(f)
    w[seen] = f[seen].rsqrt()
    w = w / (f * w).sum()
    w[~seen] = w[seen].max()
    return w.float()


def _class_weights(name: str, value: Any, num_classes: int, param: str = "class_weights") -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, str):
        # "auto" is replaced by build_loss before builders run; a string here is a typo.
        raise ConfigError(f"loss {name!r}: {param} must be a list of {num_classes} floats or 'auto', got {value!r}")
    w = torch.as_tensor(value, dtype=torch.float32).flatten()
    if w.numel() != num_classes or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"loss {name!r}: {param} needs {num_classes} non-negative values, got {w.tolist()}")
    return w


def _positive(name: str, param: str, value: float, allow_zero: bool = False) -> float:
    if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"loss {name!r}: {param} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _pixel_ce(logits, target, weight, ignore_index, label_smoothing=0.0):
    """Per-pixel CE (0 at ignored pixels) and each pixel's share of the mean's denominator.
    Reducing by hand matches torch's "mean" but gives 0, not NaN, when every pixel is ignored."""
    weight = None if weight is None else weight.to(logits.device)
    loss = F.cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    valid = target != ignore_index
    denom = valid.float()
    if weight is not None:
        denom = denom * weight[torch.where(valid, target, 0)]
    return loss, denom


def _mean(loss: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    return loss.sum() / denom.sum().clamp_min(1e-12)


def boundary_band(target: torch.Tensor, k: int, ignore_index: int) -> torch.Tensor:
    """Valid pixels whose (2k+1)x(2k+1) window holds two valid classes: a band of Chebyshev
    radius k on both sides of every class boundary. Max/min pooling (not distance transforms)
    so it runs on the GPU; ignored pixels are moved outside the label range of the max and
    the min so they never widen the spread, hence never make boundaries."""
    valid = target != ignore_index
    t = target.float().unsqueeze(1)
    big = float(torch.iinfo(torch.int32).max)
    hi = F.max_pool2d(torch.where(valid.unsqueeze(1), t, -1.0), 2 * k + 1, stride=1, padding=k)
    lo = -F.max_pool2d(torch.where(valid.unsqueeze(1), -t, -big), 2 * k + 1, stride=1, padding=k)
    return (hi != lo).squeeze(1) & valid


class CrossEntropy(nn.Module):
    def __init__(self, weight: torch.Tensor | None, ignore_index: int, label_smoothing: float):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, logits, target):
        return _mean(*_pixel_ce(logits, target, self.weight, self.ignore_index, self.label_smoothing))


class SoftmaxFocal(nn.Module):
    """Focal loss over the softmax (gamma=0 is exactly CE), mean over valid pixels. Written here
    because smp's multiclass FocalLoss is one-vs-rest sigmoid focal, a different loss."""

    def __init__(self, gamma: float, alpha: torch.Tensor | None, ignore_index: int):
        super().__init__()
        self.gamma, self.ignore_index = gamma, ignore_index
        self.register_buffer("alpha", alpha, persistent=False)

    def forward(self, logits, target):
        ce, valid = _pixel_ce(logits, target, None, self.ignore_index)
        # expm1 keeps 1-p accurate for confident pixels; the clamp avoids 0**(gamma-1) = inf
        # in the backward pass at ignored pixels, where ce is exactly 0.
        loss = (-torch.expm1(-ce)).clamp_min(1e-12).pow(self.gamma) * ce
        if self.alpha is not None:
            loss = loss * self.alpha.to(logits.device)[torch.where(target != self.ignore_index, target, 0)]
        return _mean(loss, valid)


class BoundaryCE(CrossEntropy):
    """CE where pixels within k of a class boundary weigh `factor`, normalised by the total
    weight (like class-weighted CE) so the loss scale does not depend on how much boundary
    an image has."""

    def __init__(self, k: int, factor: float, weight: torch.Tensor | None, ignore_index: int):
        super().__init__(weight, ignore_index, 0.0)
        self.k, self.factor = k, factor

    def pixel_weights(self, target: torch.Tensor) -> torch.Tensor:
        band = boundary_band(target, self.k, self.ignore_index)
        return (target != self.ignore_index).float() + (self.factor - 1.0) * band.float()

    def forward(self, logits, target):
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(f"boundary_ce needs [B, H, W] class-map targets for [B, C, H, W] logits, got shape {tuple(target.shape)}")
        loss, denom = _pixel_ce(logits, target, self.weight, self.ignore_index)
        w = self.pixel_weights(target)
        return _mean(loss * w, denom * w)


class OhemCE(nn.Module):
    """Online hard example mining: mean CE over pixels whose true-class probability is
    below `thresh` (CE above -log(thresh)), topped up to the `min_kept` hardest pixels so an
    easy batch still trains on something."""

    def __init__(self, thresh: float, min_kept: int | None, ignore_index: int):
        super().__init__()
        self.loss_thresh, self.min_kept, self.ignore_index = -math.log(thresh), min_kept, ignore_index

    def forward(self, logits, target):
        ce, _ = _pixel_ce(logits, target, None, self.ignore_index)
        ce = ce[target != self.ignore_index]
        if ce.numel() == 0:
            return logits.sum() * 0.0
        n_min = self.min_kept if self.min_kept is not None else ce.numel() // 16
        n_min = min(max(n_min, 1), ce.numel())
        kth = torch.topk(ce.detach(), n_min).values[-1]
        keep = (ce > self.loss_thresh) | (ce >= kth)
        return ce[keep].mean()


class MultilabelLovasz(nn.Module):
    """Lovasz hinge per class channel, averaged. smp's multilabel mode pools all channels into
    one binary problem, optimising a pooled IoU instead of the per-class scores we report."""

    def __init__(self, per_image: bool):
        super().__init__()
        self.hinge = smp.losses.LovaszLoss("binary", per_image=per_image)

    def forward(self, logits, target):
        return torch.stack([self.hinge(logits[:, c], target[:, c]) for c in range(logits.shape[1])]).mean()


class BCE(nn.Module):
    def __init__(self, pos_weight: torch.Tensor | None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits, target):
        pw = self.pos_weight
        if pw is not None:  # one value per class channel, broadcast over H, W
            pw = pw.to(logits.device).view(-1, *([1] * (logits.dim() - 2)))
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)


class BceDice(nn.Module):
    def __init__(self, bce: BCE, bce_weight: float, dice: nn.Module, dice_weight: float):
        super().__init__()
        self.bce, self.dice, self.bce_weight, self.dice_weight = bce, dice, bce_weight, dice_weight

    def forward(self, logits, target):
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)


@_loss("ce", INDEX)
def ce(targets, num_classes, ignore_index, class_weights=None, label_smoothing: float = 0.0):
    w = _class_weights("ce", class_weights, num_classes)
    return CrossEntropy(w, ignore_index, _positive("ce", "label_smoothing", label_smoothing, allow_zero=True))


@_loss("focal", TARGETS)
def focal(targets, num_classes, ignore_index, gamma: float = 2.0, alpha=None):
    gamma = _positive("focal", "gamma", gamma, allow_zero=True)
    if targets == "binary":
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            raise ConfigError(f"loss 'focal': multilabel alpha is the positive-class weight in [0, 1], got {alpha!r}")
        return smp.losses.FocalLoss("multilabel", alpha=alpha, gamma=gamma)
    if alpha is not None and not isinstance(alpha, (list, tuple)):
        # A single alpha only rescales a softmax loss; per-class weights are what helps.
        raise ConfigError(f"loss 'focal': multiclass alpha must be {num_classes} per-class weights, got {alpha!r}")
    return SoftmaxFocal(gamma, _class_weights("focal", alpha, num_classes, "alpha"), ignore_index)


def _overlap(cls, name, targets, num_classes, ignore_index, smooth, classes):
    if classes is not None and any(not 0 <= int(c) < num_classes for c in classes):
        raise ConfigError(f"loss {name!r}: classes {classes} outside 0..{num_classes - 1}")
    ignore = ignore_index if targets == "index" else None  # binary masks have no ignore value
    return cls(SMP_MODE[targets], classes=classes, smooth=smooth, ignore_index=ignore)


@_loss("dice", TARGETS)
def dice(targets, num_classes, ignore_index, smooth: float = 0.0, classes: list[int] | None = None):
    return _overlap(smp.losses.DiceLoss, "dice", targets, num_classes, ignore_index, smooth, classes)


@_loss("jaccard", TARGETS)
def jaccard(targets, num_classes, ignore_index, smooth: float = 0.0, classes: list[int] | None = None):
    return _overlap(smp.losses.JaccardLoss, "jaccard", targets, num_classes, ignore_index, smooth, classes)


@_loss("lovasz", TARGETS)
def lovasz(targets, num_classes, ignore_index, per_image: bool = False):
    if targets == "binary":
        return MultilabelLovasz(per_image)
    return smp.losses.LovaszLoss("multiclass", per_image=per_image, ignore_index=ignore_index)


def _pos_weight(value, num_classes: int) -> torch.Tensor | None:
    if value is None:
        return None
    pw = torch.as_tensor(value, dtype=torch.float32).flatten()
    pw = pw.expand(num_classes).clone() if pw.numel() == 1 else pw
    if pw.numel() != num_classes or (pw <= 0).any():
        raise ConfigError(f"pos_weight needs one positive value or {num_classes}, got {value!r}")
    return pw


@_loss("bce", BINARY)
def bce(targets, num_classes, ignore_index, pos_weight=None):
    return BCE(_pos_weight(pos_weight, num_classes))


@_loss("bce_dice", BINARY)
def bce_dice(targets, num_classes, ignore_index, bce_weight: float = 1.0, dice_weight: float = 1.0,
             pos_weight=None, smooth: float = 0.0):
    return BceDice(
        BCE(_pos_weight(pos_weight, num_classes)), _positive("bce_dice", "bce_weight", bce_weight, True),
        smp.losses.DiceLoss("multilabel", smooth=smooth), _positive("bce_dice", "dice_weight", dice_weight, True),
    )


@_loss("boundary_ce", INDEX)
def boundary_ce(targets, num_classes, ignore_index, k: int = 3, factor: float = 5.0, class_weights=None):
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"loss 'boundary_ce': k must be an integer >= 1, got {k!r}")
    w = _class_weights("boundary_ce", class_weights, num_classes)
    return BoundaryCE(k, _positive("boundary_ce", "factor", factor), w, ignore_index)


@_loss("ohem_ce", INDEX)
def ohem_ce(targets, num_classes, ignore_index, thresh: float = 0.7, min_kept: int | None = None):
    if not isinstance(thresh, (int, float)) or not 0 < thresh <= 1:
        raise ConfigError(f"loss 'ohem_ce': thresh is a probability in (0, 1], got {thresh!r}")
    if min_kept is not None and (not isinstance(min_kept, int) or min_kept < 1):
        raise ConfigError(f"loss 'ohem_ce': min_kept must be a positive integer, got {min_kept!r}")
    return OhemCE(float(thresh), min_kept, ignore_index)


def _params_of(builder: Callable) -> list[str]:
    return [p for p in inspect.signature(builder).parameters if p not in _BUILDER_ARGS]


def loss_problems(specs, targets: str, where: str = "loss") -> list[str]:
    """Every problem of the loss terms: names, parameter names, weights, target support
    (needs no data: the preflight lists them all before training)."""
    if targets not in TARGETS:
        return [f"{where}: unknown target kind {targets!r} (known: {', '.join(TARGETS)})"]
    if not specs:
        return [f"{where}: at least one loss is needed"]
    problems = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        try:
            builder = LOSSES.get(spec.name, where=f"{at}.name")
        except ConfigError as e:
            problems.append(str(e))
            continue
        accepted = _params_of(builder)
        for key in spec.params:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (accepted: {', '.join(accepted) or 'none'})"
                problems.append(f"{at}.{key}: unknown parameter for loss {builder.loss_name!r}{hint}")
        if not spec.weight > 0 or not math.isfinite(spec.weight):
            problems.append(f"{at}.weight: must be > 0, got {spec.weight}")
        if targets not in builder.targets:
            problems.append(f"{at}: {_unsupported(builder.loss_name, targets, builder.targets)}")
    return problems


def validate_loss_specs(specs, targets: str, where: str = "loss") -> None:
    problems = loss_problems(specs, targets, where)
    if problems:
        raise ConfigError(problems[0])


class CombinedLoss(nn.Module):
    """Weighted sum of loss terms; remembers each term's unweighted value for logging."""

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]):
        super().__init__()
        names: list[str] = []
        seen: dict[str, int] = {}
        for name, _, _ in terms:
            seen[name] = seen.get(name, 0) + 1
            names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
        self.weights = {n: float(w) for n, (_, w, _) in zip(names, terms)}
        self.terms = nn.ModuleDict({n: m for n, (_, _, m) in zip(names, terms)})
        self._last: dict[str, torch.Tensor] = {}

    @property
    def last_values(self) -> dict[str, torch.Tensor]:
        """Each term's unweighted value of the last call, detached, still on the device."""
        return dict(self._last)

    @property
    def last_components(self) -> dict[str, float]:
        # Stored as detached tensors and converted on read: calling .item() in forward would
        # force a GPU sync every step even when nobody logs.
        return {k: float(v) for k, v in self._last.items()}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = {name: term(logits, target) for name, term in self.terms.items()}
        self._last = {name: v.detach() for name, v in values.items()}
        return sum(self.weights[name] * v for name, v in values.items())


def build_loss(specs, targets: str, num_classes: int, ignore_index: int,
               class_frequencies: torch.Tensor | None = None) -> CombinedLoss:
    """Build the config's loss terms. `class_frequencies` (length num_classes) feeds `class_weights: auto`."""
    validate_loss_specs(specs, targets)
    terms = []
    for i, spec in enumerate(specs):
        builder = LOSSES.get(spec.name)
        params = spec.params
        if params.get("class_weights") == "auto":
            if class_frequencies is None or len(class_frequencies) != num_classes:
                got = "none" if class_frequencies is None else f"{len(class_frequencies)}"
                raise ConfigError(f"loss[{i}].class_weights: 'auto' needs {num_classes} class frequencies "
                                  f"from the training data, got {got}")
            params["class_weights"] = auto_class_weights(class_frequencies)
        try:
            module = builder(targets, num_classes, ignore_index, **params)
        except ConfigError as e:
            raise ConfigError(f"loss[{i}]: {e}") from None
        terms.append((builder.loss_name, spec.weight, module))
    return CombinedLoss(terms)
