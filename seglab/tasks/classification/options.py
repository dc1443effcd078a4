"""The classification task's own config section (`classification:`): its head, batch
mixing and consistency training. Torch-free: the config schema reads it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from seglab.config.schema import Options


class UdaOptions(Options):
    weight: float = Field(0.0, ge=0, description="weight of the consistency loss on unlabelled images; 0 = off")
    unlabelled: str | None = Field(None, description="folder of unlabelled images (relative to data.root, searched recursively); null = the test split's images")
    batch_size: int | None = Field(None, gt=0, description="unlabelled images per step; null = data.batch_size")
    temperature: float = Field(0.4, gt=0, description="sharpening temperature of the weak view's prediction (the target)")
    threshold: float = Field(0.8, ge=0, lt=1, description="confidence mask: unlabelled images whose weak-view max probability is below this are left out")
    weak: list[dict] = Field(default_factory=list, description="albumentations transforms of the weak view ({name, params...}); [] = the clean image")
    strong: list[dict] = Field(
        default_factory=lambda: [
            {"name": "HorizontalFlip", "p": 0.5},
            {"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.05, "p": 0.8},
            {"name": "Affine", "scale": [0.85, 1.15], "translate_percent": [-0.1, 0.1], "rotate": [-15, 15], "p": 0.7},
            {"name": "CoarseDropout", "num_holes_range": [1, 3], "hole_height_range": [0.1, 0.25], "hole_width_range": [0.1, 0.25], "p": 0.5},
        ],
        description="albumentations transforms of the strong view",
    )


class ClassificationOptions(Options):
    head: Literal["linear", "arcface"] = Field("linear", description="classifier head: linear, or arcface (cosine logits with an additive angular margin while training)")
    arcface_scale: float = Field(30.0, gt=0, description="arcface: logit scale s (logits = s * cos)")
    arcface_margin: float = Field(0.5, ge=0, lt=1.5708, description="arcface: additive angular margin m in radians, added to the true class's angle while training")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="dropout on the pooled features before the head")
    mixup_alpha: float = Field(0.0, ge=0, description="mixup Beta(alpha, alpha) (timm Mixup); 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0, description="cutmix Beta(alpha, alpha) (timm Mixup); 0 = off")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed when mixup or cutmix is on")
    mix_switch_prob: float = Field(0.5, ge=0, le=1, description="probability of cutmix instead of mixup when both are on")
    snapmix_alpha: float = Field(0.0, ge=0, description="SnapMix Beta(alpha, alpha) box sizes, labels weighted by class activation maps (paper: 5); 0 = off; not with mixup/cutmix")
    snapmix_prob: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed by SnapMix")
    uda: UdaOptions = Field(default_factory=UdaOptions)
