"""ONE confusion matrix over the whole evaluation set, and the segmentation scores from it.

The matrix is accumulated on the device over the whole evaluation set and reduced
across processes before any score is computed: averaging per batch or per image
was a known cause of validation / leaderboard mismatch. Its state is summed: `reduce()`
adds the processes' matrices, `add_state` a held-out fold's (the metric interface:
seglab/metrics/__init__.py).
"""

from __future__ import annotations

import contextlib
import math

import torch


@contextlib.contextmanager
def _integer_atomics_allowed():
    # bincount has no "deterministic" CUDA kernel, but integer atomic adds are exact
    # whatever their order, so deterministic mode need not forbid it here.
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


class ConfusionMatrix:
    """Rows are ground truth, columns are predictions; ignore_index pixels are left out."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, device=None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    def to(self, device) -> "ConfusionMatrix":
        self.mat = self.mat.to(device)
        return self

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer class maps of the same shape (any batch layout)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long().to(target.device)
        keep = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        index = target[keep] * self.num_classes + pred[keep]
        with _integer_atomics_allowed():
            counts = torch.bincount(index, minlength=self.num_classes**2)
        self.mat += counts.reshape(self.num_classes, self.num_classes).to(self.mat.device)

    def reduce(self) -> None:
        """Sum the matrix over all processes (no-op outside torch.distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat)

    def state(self) -> dict:
        return {"confusion_matrix": self.mat.cpu().tolist()}

    def add_state(self, state: dict) -> None:
        self.mat += torch.tensor(state["confusion_matrix"], dtype=torch.int64, device=self.mat.device)

    def compute(self, class_names: list[str] | None = None) -> dict:
        raise NotImplementedError


class SegmentationConfusion(ConfusionMatrix):
    """Pixels of class maps: mIoU, pixel accuracy, mean class accuracy, fwIoU, per-class IoU."""

    def compute(self, class_names: list[str] | None = None) -> dict:
        return segmentation_scores(self.mat, class_names)


def nanmean(values: torch.Tensor) -> float:
    """The mean over classes that have a value (NaN: the class is absent from GT and prediction)."""
    valid = values[~torch.isnan(values)]
    return float(valid.mean()) if valid.numel() else math.nan


def per_class_values(names, values: torch.Tensor) -> dict:
    """{class name: value}, an absent class's NaN as None (JSON has no NaN)."""
    return {name: (None if math.isnan(v) else v) for name, v in zip(names, values.tolist())}


def segmentation_scores(mat: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """Pixel accuracy, mean class accuracy, mIoU, fwIoU and per-class IoU/accuracy.

    A class absent from both ground truth and prediction has IoU NaN (reported as
    None) and is left out of the means; one that is predicted but absent from the
    ground truth has IoU 0.
    """
    m = mat.detach().to("cpu", torch.float64)
    n = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    tp = m.diag()
    gt = m.sum(1)
    pred = m.sum(0)
    union = gt + pred - tp
    nan = torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = m.sum()
    freq = gt / total if total > 0 else gt
    present = gt > 0
    fw = float((freq[present] * iou[present]).sum()) if total > 0 else math.nan

    return {
        "mIoU": nanmean(iou),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_class_accuracy": nanmean(acc),
        "fwIoU": fw,
        "per_class_iou": per_class_values(names, iou),
        "per_class_accuracy": per_class_values(names, acc),
    }


def format_table(scores: dict, title: str = "") -> str:
    """A plain-text table of the per-class and overall scores, for the console."""
    from seglab.metrics.table import per_class_table

    summary = (f"mIoU {scores['mIoU']:.4f} | pixel acc {scores['pixel_accuracy']:.4f} | "
               f"mean class acc {scores['mean_class_accuracy']:.4f} | fwIoU {scores['fwIoU']:.4f}")
    return per_class_table({"IoU": scores["per_class_iou"], "acc": scores["per_class_accuracy"]}, summary, title)
