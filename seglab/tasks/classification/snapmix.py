"""SnapMix for classification (Huang, Wang and Tao, "SnapMix: Semantically Proportional
Mixing for Augmenting Fine-grained Data", AAAI 2021), beside timm's mixup and cutmix.

CutMix weighs the two labels by the pasted box's *area*; on fine-grained data (a face whose
mask, gender and age live in a few pixels) the box often holds none of what makes the
class. SnapMix weighs each label by the share of that image's class activation map (CAM)
mass the mixed image keeps of it:

    CAM_i      = up(sum_d W[y_i, d] * F_i[d]) + b[y_i], shifted to min 0 and divided by its sum
    box_a      a box of image i, replaced by box_b of partner j = perm(i), resized to box_a
    lambda_a_i = 1 - CAM_i mass inside box_a        (what is left of image i)
    lambda_b_i = CAM_j mass inside box_b            (what was pasted of image j)

When i and j share the class, it gets lambda_a + lambda_b once (the paper's code adds each
weight to the other and so counts that class twice). A CAM
with no mass (all equal) falls back to the box's area share, like cutmix. The CAM pass runs
without gradients in eval mode (as the paper's code does): one extra forward per mixed batch.
No maintained library implements it, so it is written here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from seglab.errors import SeglabError


def random_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) of a box covering about 1 - lam of the image, centred at random (cutmix's)."""
    cut = math.sqrt(1.0 - lam)
    h, w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return (max(cy - h // 2, 0), min(cy + h // 2, height), max(cx - w // 2, 0), min(cx + w // 2, width))


@torch.no_grad()
def class_activation_maps(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, H, W] CAMs of each image's own class at the input size, each shifted to min 0 and
    summing to 1 (all zero where the map is flat). `model` is a TimmClassifier."""
    features = model.encoder.forward_features(x)
    if features.dim() != 4 or features.shape[1] != model.encoder.num_features:
        raise SeglabError("classification.snapmix_alpha: SnapMix needs a convolutional backbone (feature maps [B, D, h, w]); "
                          f"{type(model.encoder).__name__} gives {tuple(features.shape)}")
    weight, bias = model.head.cam_weights()
    maps = torch.einsum("bdhw,bd->bhw", F.relu(features.float()), weight.float()[target])
    if bias is not None:
        maps = maps + bias.float()[target].view(-1, 1, 1)
    maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return normalise_maps(maps)


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    maps = maps - maps.flatten(1).min(1).values.view(-1, 1, 1)
    total = maps.flatten(1).sum(1).view(-1, 1, 1)
    return torch.where(total > 0, maps / total.clamp_min(1e-12), torch.zeros_like(maps))


def snapmix_weights(cams: torch.Tensor, perm: torch.Tensor, target: torch.Tensor, box_a, box_b) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda_a, lambda_b) per image: the CAM mass image i keeps outside box_a, and the
    mass of partner perm[i] inside box_b (its pasted part); a same-class pair puts the sum on
    lambda_a (its one class) and 0 on lambda_b; flat CAMs fall back to the area share."""
    (ay1, ay2, ax1, ax2), (by1, by2, bx1, bx2) = box_a, box_b
    lam_a = 1.0 - cams[:, ay1:ay2, ax1:ax2].flatten(1).sum(1)
    lam_b = cams[perm][:, by1:by2, bx1:bx2].flatten(1).sum(1)
    area = (ay2 - ay1) * (ax2 - ax1) / (cams.shape[1] * cams.shape[2])
    flat_a = cams.flatten(1).sum(1) == 0
    flat_b = flat_a[perm]
    lam_a = torch.where(flat_a, torch.full_like(lam_a, 1.0 - area), lam_a)
    lam_b = torch.where(flat_b, torch.full_like(lam_b, area), lam_b)
    same = target == target[perm]
    return torch.where(same, lam_a + lam_b, lam_a), torch.where(same, torch.zeros_like(lam_b), lam_b)


class SnapMix:
    """Mixes a normalised batch in place and says how much each label counts."""

    def __init__(self, alpha: float, prob: float, seed: int | None = None):
        self.alpha, self.prob = alpha, prob
        self.rng = np.random.default_rng(seed)

    def __call__(self, module, x: torch.Tensor, target: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | float]]:
        """[(targets, weight per image), ...] for the loss; x is mixed in place."""
        if self.rng.random() >= self.prob or x.shape[0] < 2:
            return [(target, 1.0)]
        model = module.model
        was_training = model.training
        model.eval()
        try:
            cams = class_activation_maps(model, x, target)
        finally:
            module.train(was_training)  # LabModule.train keeps frozen norms in eval
        height, width = x.shape[-2:]
        box_a = random_box(height, width, float(self.rng.beta(self.alpha, self.alpha)), self.rng)
        box_b = random_box(height, width, float(self.rng.beta(self.alpha, self.alpha)), self.rng)
        (ay1, ay2, ax1, ax2), (by1, by2, bx1, bx2) = box_a, box_b
        if min(ay2 - ay1, ax2 - ax1, by2 - by1, bx2 - bx1) <= 0:
            return [(target, 1.0)]
        perm = torch.from_numpy(self.rng.permutation(x.shape[0])).to(x.device)
        pasted = F.interpolate(x[perm][:, :, by1:by2, bx1:bx2], size=(ay2 - ay1, ax2 - ax1), mode="bilinear", align_corners=True)
        x[:, :, ay1:ay2, ax1:ax2] = pasted
        lam_a, lam_b = snapmix_weights(cams, perm, target, box_a, box_b)
        return [(target, lam_a), (target[perm], lam_b)]
