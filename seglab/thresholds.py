"""`seglab tune-thresholds RUN_DIR`: the per-class threshold that maximises validation Dice.

One pass over the split: for every image and class, a histogram of the predicted
probabilities over the threshold grid (all pixels, and ground-truth pixels) gives
|prediction| and |prediction ∩ ground truth| at every grid threshold at once, hence
the competition Dice (per image and class, mean over images) for every threshold.
Each class gets the best grid value (ties: the one nearest 0.5); the result is saved
as RUN/thresholds.json, which evaluate and predict use from then on.
Post-processing is not part of the search (it runs after thresholding).
"""

from __future__ import annotations

from pathlib import Path

import torch

from seglab.dice import DICE_EPS, DiceScore
from seglab.errors import SeglabError

DEFAULT_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


class ThresholdSearch:
    """Per-class Dice sums at every grid threshold (prediction = probability > threshold)."""

    def __init__(self, num_classes: int, grid, eps: float = DICE_EPS, device=None):
        self.grid = torch.tensor(sorted(float(t) for t in grid), dtype=torch.float32, device=device)
        if len(self.grid) == 0 or not ((self.grid >= 0) & (self.grid < 1)).all():
            raise SeglabError(f"threshold grid must be values in [0, 1), got {list(grid)}")
        self.num_classes, self.eps = num_classes, eps
        self.sums = torch.zeros(num_classes, len(self.grid), dtype=torch.float64, device=device)
        self.images = 0

    @torch.no_grad()
    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """probs [B, C, H, W] in [0, 1], target [B, C, H, W] 0/1."""
        b, c = probs.shape[:2]
        t = len(self.grid)
        grid = self.grid.to(probs.device)
        offsets = torch.arange(b, device=probs.device)[:, None] * (t + 1)
        for k in range(c):
            # bin = how many grid values lie strictly below p; p > grid[j]  <=>  bin >= j + 1
            bins = torch.bucketize(probs[:, k].float().flatten(1).contiguous(), grid) + offsets
            positive = target[:, k].flatten(1).bool()
            all_hist = torch.bincount(bins.flatten(), minlength=b * (t + 1)).view(b, t + 1)
            pos_hist = torch.bincount(bins[positive], minlength=b * (t + 1)).view(b, t + 1)
            # suffix sums: pixels with bin >= j
            pred = all_hist.flip(1).cumsum(1).flip(1)[:, 1:]
            inter = pos_hist.flip(1).cumsum(1).flip(1)[:, 1:]
            gt = pos_hist.sum(1, keepdim=True)
            dice = (2 * inter.double() + self.eps) / ((pred + gt).double() + self.eps)
            self.sums[k] += dice.sum(0).to(self.sums.device)
        self.images += b

    def scores(self) -> torch.Tensor:
        """[C, T] mean Dice over images at each grid threshold."""
        return self.sums.cpu() / max(self.images, 1)

    def best(self) -> tuple[list[float], list[float]]:
        """Per class: the best threshold and its Dice (ties go to the value nearest 0.5)."""
        scores, grid = self.scores(), self.grid.cpu().double()
        thresholds, dices = [], []
        for k in range(self.num_classes):
            top = scores[k].max()
            candidates = torch.nonzero(scores[k] >= top - 1e-12).flatten()
            j = int(candidates[torch.argmin((grid[candidates] - 0.5).abs())])
            thresholds.append(round(float(grid[j]), 6))
            dices.append(float(scores[k, j]))
        return thresholds, dices


@torch.no_grad()
def tune_thresholds(run_dir: str | Path, split: str = "val", checkpoint: str = "best", device: str | None = None,
                    grid=DEFAULT_GRID, original_size: bool = False, save: bool = True) -> dict:
    """Search the grid per class on a labelled split and save RUN/thresholds.json."""
    from seglab.data import build_dataset
    from seglab.inference import _loader, load_run, pick_device, predict_probs
    from seglab.postprocess import save_thresholds

    cfg, labels, module = load_run(run_dir, checkpoint, pick_device(device), tuned_thresholds=False)
    if labels.task != "multilabel":
        raise SeglabError(f"{run_dir}: tune-thresholds is for multilabel runs (a multiclass prediction is an argmax)")
    dataset = build_dataset(cfg, split, labels, train=False, with_masks=True)
    search = ThresholdSearch(labels.num_classes, grid, device=module.device)
    before = DiceScore(labels.num_classes, device=module.device)
    for batch in _loader(dataset, cfg):
        probs = predict_probs(module, batch["image"].to(module.device))
        if original_size:
            import torch.nn.functional as F

            for j, index in enumerate(batch["index"].tolist()):
                size = dataset.source.original_size(index)
                p = F.interpolate(probs[j : j + 1], size=size, mode="bilinear", align_corners=False)
                gt = torch.from_numpy(dataset.source.load_mask(index))[None].to(module.device)
                search.update(p, gt)
                before.update(module.task.predict(p, module.thresholds), gt)
            continue
        masks = batch["mask"].to(module.device)
        search.update(probs, masks)
        before.update(module.task.predict(probs, module.thresholds), masks)
    thresholds, dices = search.best()
    names = list(labels.classes)
    was = before.compute(names)
    record = {
        "thresholds": dict(zip(names, thresholds)),
        "split": split, "checkpoint": checkpoint, "images": len(dataset), "original_size": original_size,
        "grid": [round(float(t), 6) for t in search.grid.tolist()],
        "dice_before": was["dice"], "dice_after": sum(dices) / len(dices),
        "per_class_dice_before": was["per_class_dice"], "per_class_dice_after": dict(zip(names, dices)),
        "config_thresholds": dict(zip(names, module.thresholds.tolist())),
    }
    if save:
        record["path"] = str(save_thresholds(Path(run_dir), {k: v for k, v in record.items() if k != "path"}))
    return record
