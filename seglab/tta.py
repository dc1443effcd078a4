"""Test-time augmentation: predict several views of a batch, average in probability space.

A view is a scale and a flip. Each view's probabilities are flipped back and resized
to the input size before averaging, so TTA wraps any "images -> probabilities"
function (`seglab.inference.predict_probs` today, a sigmoid one for multi-label) and
returns the same shape. Only one batch's views are alive at a time.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

ProbFn = Callable[[torch.Tensor], torch.Tensor]

FLIP_DIMS = {"h": (-1,), "v": (-2,), "hv": (-2, -1)}


class TTAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    flips: list[Literal["h", "v", "hv"]] = Field(
        default_factory=list, description="evaluate/predict/ensemble TTA: flipped views added to the plain one (h, v, hv); [] = none"
    )
    scales: list[float] = Field(
        default_factory=lambda: [1.0], description="TTA: input scales, each with every flip (e.g. [0.75, 1.0, 1.25]); outputs resized back"
    )

    @field_validator("scales")
    @classmethod
    def _scales(cls, v):
        if not v or any(s <= 0 for s in v):
            raise ValueError("tta.scales must be a non-empty list of positive numbers")
        return v

    @field_validator("flips")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"tta.flips has a repeated flip: {v}")
        return v

    def views(self) -> list[tuple[float, str | None]]:
        """(scale, flip or None) for every view, the plain view of each scale first."""
        return [(s, f) for s in self.scales for f in [None, *self.flips]]

    @property
    def enabled(self) -> bool:
        return len(self.views()) > 1 or self.scales[0] != 1.0


def parse_tta(flips: str | None, scales: str | None, base: TTAConfig | None = None, off: bool = False) -> TTAConfig:
    """A TTAConfig from CLI text (`--flips h,v --scales 0.75,1,1.25`) over a run's own."""
    if off:
        return TTAConfig()
    cfg = (base or TTAConfig()).model_copy()
    update = {}
    if flips is not None:
        update["flips"] = [f for f in flips.split(",") if f and f != "none"]
    if scales is not None:
        update["scales"] = [float(s) for s in scales.split(",") if s]
    return TTAConfig.model_validate({**cfg.model_dump(), **update})


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)


def tta_probs(prob_fn: ProbFn, images: torch.Tensor, tta: TTAConfig | None) -> torch.Tensor:
    """The mean of `prob_fn` over the TTA views of `images` [B, 3, H, W], as [B, C, H, W].

    Scaled views are bilinear resizes of the image (as float, 0-255); their outputs
    are resized back to H x W before averaging.
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
        p = prob_fn(x)
        if flip:
            p = torch.flip(p, FLIP_DIMS[flip])
        p = _resize(p, size)
        total = p if total is None else total.add_(p)
    return total / len(views)
