"""`seglab tune-thresholds RUN_DIR`: the per-class threshold that maximises validation Dice.

One pass over the split: for every image and class, a histogram of the predicted
probabilities over the threshold grid (all pixels, and ground-truth pixels) gives
|prediction| and |prediction ∩ ground truth| at every grid threshold at once, hence
the competition Dice (per image and class, mean over images) for every threshold.
Each class gets the best grid value (ties: the one nearest 0.5); the result is saved
as RUN/thresholds.json, which evaluate and predict use from then on. The probabilities
are exactly those `evaluate` decides on (the run's TTA and sliding window, the same
resolution); with post-processing configured, each candidate mask is post-processed
before it is scored (a tuned RUN/postprocess.json's per-class steps when present), so
"after" is what `evaluate` then reports.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seglab.metrics.dice import DICE_EPS, DiceScore, dice_per_image
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


class PostprocessedSearch(ThresholdSearch):
    """The same sums when post-processing runs after thresholding: every grid threshold's
    mask goes through the configured morphology before it is scored (slower, exact)."""

    def __init__(self, num_classes: int, grid, plan: dict, eps: float = DICE_EPS, device=None):
        super().__init__(num_classes, grid, eps, device)
        self.plan = {c: steps for c, steps in plan.items() if steps.morphology}  # {class index: steps}

    @torch.no_grad()
    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        from seglab.inference.morphology import clean_mask

        p, t = probs.float().cpu(), target.bool().cpu()
        for k in range(self.num_classes):
            for j, threshold in enumerate(self.grid.cpu()):
                masks = p[:, k] > threshold
                if k in self.plan:
                    masks = torch.stack([torch.from_numpy(clean_mask(m.numpy(), self.plan[k])) for m in masks])
                dice = dice_per_image(masks[:, None], t[:, k : k + 1], self.eps)[:, 0]
                self.sums[k, j] += dice.sum(0).to(self.sums.device)
        self.images += probs.shape[0]


@torch.no_grad()
def tune_thresholds(run_dir: str | Path, split: str = "val", checkpoint: str = "best", device: str | None = None,
                    grid=DEFAULT_GRID, original_size: bool = False, save: bool = True, tta=None) -> dict:
    """Search the grid per class on a labelled split, on exactly what `evaluate` scores (the
    run's TTA, sliding window and post-processing, at the same resolution), and save
    RUN/thresholds.json."""
    from seglab.core.run import THRESHOLDS_FILE, load_run
    from seglab.inference.ensemble import Member
    from seglab.inference.predict import decide, resolution, scored
    from seglab.io import write_json

    run = load_run(run_dir, checkpoint, device, tuned_thresholds=False)
    if run.thresholds is None:
        raise SeglabError(f"{run_dir}: tune-thresholds is for tasks that decide by per-class thresholds (multilabel); "
                          f"a {run.task.name} decision takes none")
    member = Member(run, tta=tta)
    names, plan = list(run.labels.classes), run.plan  # the tuned post-processing plan, else the config's
    search = (PostprocessedSearch(len(names), grid, plan, device=run.device) if plan
              else ThresholdSearch(len(names), grid, device=run.device))
    before = DiceScore(len(names), device=run.device)
    images = 0
    for probs, target in scored([member], split, original_size=original_size):
        probs, target = probs["train"], target["train"]  # thresholds are per training class
        images += len(target)
        search.update(probs, target)
        before.update(decide(run, probs), target)
    thresholds, dices = search.best()
    was = before.compute(names)
    record = {
        "thresholds": dict(zip(names, thresholds)),
        "split": split, "checkpoint": checkpoint, "images": images, "original_size": original_size,
        "resolution": resolution(run.cfg, original_size), "tta": member.tta.model_dump(), "postprocessed": bool(plan),
        "grid": [round(float(t), 6) for t in search.grid.tolist()],
        "dice_before": was["dice"], "dice_after": sum(dices) / len(dices),
        "per_class_dice_before": was["per_class_dice"], "per_class_dice_after": dict(zip(names, dices)),
        "config_thresholds": dict(zip(names, run.thresholds.tolist())),
    }
    if save:
        path = Path(run_dir) / THRESHOLDS_FILE
        write_json(path, record)
        record["path"] = str(path)
    return record
