"""The multi-label metric: Dice per image and class, mean over images, then over classes.

Exactly the hand-bone competition's definition:
    dice(image, class) = (2 |X ∩ Y| + eps) / (|X| + |Y| + eps),  eps = 1e-4
so an empty ground truth with an empty prediction scores 1 and an empty ground truth
with any predicted pixel scores ~0. The per-class score is the mean over images; the
overall score is the mean of the per-class scores.

`DiceScore` accumulates the per-class sums on the device (one [C] float64 vector and an
image count) and sums them across processes before computing anything, like the
confusion matrix does for the multi-class task.
"""

from __future__ import annotations

import math

import torch

DICE_EPS = 1e-4


def dice_per_image(pred: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """[B, C] Dice of boolean (or 0/1) masks [B, C, H, W] (one image [C, H, W]: [1, C])."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p = pred.to(target.device).bool().reshape(-1, *pred.shape[-3:]).flatten(2)
    t = target.bool().reshape(-1, *target.shape[-3:]).flatten(2)
    inter = (p & t).sum(-1, dtype=torch.int64)
    total = p.sum(-1, dtype=torch.int64) + t.sum(-1, dtype=torch.int64)
    return (2 * inter.double() + eps) / (total.double() + eps)


class DiceScore:
    """Accumulates per-class Dice sums over images; `compute` gives the competition score."""

    def __init__(self, num_classes: int, eps: float = DICE_EPS, device=None):
        self.num_classes, self.eps = num_classes, eps
        self.sums = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.images = torch.zeros((), dtype=torch.float64, device=device)

    def reset(self) -> None:
        self.sums.zero_()
        self.images.zero_()

    def to(self, device) -> "DiceScore":
        self.sums, self.images = self.sums.to(device), self.images.to(device)
        return self

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: [B, C, H, W] (or one image [C, H, W]); returns the batch's [B, C] Dice."""
        if pred.shape[-3] != self.num_classes:
            raise ValueError(f"prediction has {pred.shape[-3]} channels, the metric {self.num_classes} classes")
        d = dice_per_image(pred, target, self.eps)
        self.sums += d.sum(0).to(self.sums.device)
        self.images += d.shape[0]
        return d

    def reduce(self) -> None:
        """Sum over all processes (no-op outside torch.distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.sums)
            torch.distributed.all_reduce(self.images)

    def state(self) -> dict:
        return {"dice_sums": self.sums.cpu().tolist(), "images": float(self.images)}

    def add_state(self, state: dict) -> None:
        self.sums += torch.tensor(state["dice_sums"], dtype=torch.float64, device=self.sums.device)
        self.images += float(state["images"])

    def compute(self, class_names: list[str] | None = None) -> dict:
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        n = float(self.images)
        if n == 0:
            per_class = [math.nan] * self.num_classes
        else:
            per_class = (self.sums.detach().cpu() / n).tolist()
        valid = [v for v in per_class if not math.isnan(v)]
        return {
            "dice": sum(valid) / len(valid) if valid else math.nan,
            "per_class_dice": {name: (None if math.isnan(v) else v) for name, v in zip(names, per_class)},
            "images": int(n),
        }


def format_dice_table(scores: dict, title: str = "") -> str:
    """Console table: one row per class, then the mean."""
    from seglab.metrics.table import per_class_table

    summary = f"mean Dice {scores['dice']:.4f} over {scores.get('images', '?')} images"
    return per_class_table({"Dice": scores["per_class_dice"]}, summary, title)
