"""Test-time augmentation: predict several views of a batch and combine them.

A view is a scale and a flip (`tta.flips`, `tta.scales`; `--flips/--scales/--no-tta` on
every command that predicts). The target kind undoes each view (`kind.undo_view`: dense
probabilities are flipped back and resized to the input size, per-image ones stay as
they are) and combines the views (`kind.summed`, `kind.averaged`: the mean of
probabilities). TTA wraps any "images -> outputs" function and returns what it returns
for the plain view. Only one batch's views are alive at a time.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import ValidationError

from seglab.config import TTAConfig
from seglab.errors import ConfigError

ProbFn = Callable[[torch.Tensor], torch.Tensor]

from seglab.kinds.dense import FLIP_DIMS


def parse_tta(flips: str | None, scales: str | None, base: TTAConfig | None = None, off: bool = False) -> TTAConfig:
    """A TTAConfig from CLI text (`--flips h,v --scales 0.75,1,1.25`) over a run's own."""
    if off:
        return TTAConfig()
    cfg = (base or TTAConfig()).model_copy()
    update = {}
    if flips is not None:
        update["flips"] = [f.strip() for f in flips.split(",") if f.strip() and f.strip() != "none"]
        bad = [f for f in update["flips"] if f not in FLIP_DIMS]
        if bad:
            raise ConfigError(f"--flips {flips}: {', '.join(map(repr, bad))} is not a flip; use h, v, hv or none, "
                              f"comma-separated (e.g. --flips h,v)")
    if scales is not None:
        try:
            update["scales"] = [float(s) for s in scales.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--scales {scales!r}: expected comma-separated numbers, e.g. 0.75,1,1.25") from None
    try:
        return TTAConfig.model_validate({**cfg.model_dump(), **update})
    except ValidationError as e:
        first = e.errors()[0]
        flag = "--flips" if first["loc"] and first["loc"][0] == "flips" else "--scales"
        raise ConfigError(f"{flag}: {first['msg'].removeprefix('Value error, ')} (flips: h, v, hv or none)") from None


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)


def tta_probs(prob_fn: ProbFn, images: torch.Tensor, tta: TTAConfig | None, kind) -> torch.Tensor:
    """`prob_fn` combined over the TTA views of `images` [B, 3, H, W] by the target `kind`
    (for probabilities: their mean, [B, C, H, W] or [B, C]).

    Scaled views are bilinear resizes of the image (as float, 0-255); their outputs
    are mapped back to the plain view (H x W) before they are combined.
    """
    if tta is None or not tta.enabled:
        return prob_fn(images)
    size = tuple(images.shape[-2:])
    total = None
    views = tta.views()
    for scale, flip in views:
        x = images
        if scale != 1.0:
            x = _resize(images, (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))))
        if flip:
            x = torch.flip(x, FLIP_DIMS[flip])
        total = kind.summed(total, kind.undo_view(prob_fn(x), flip, size))
    return kind.averaged(total, len(views))
