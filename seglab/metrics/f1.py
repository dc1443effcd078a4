"""Classification scores from ONE confusion matrix over the whole evaluation set.

The matrix is seglab.metrics.confusion.ConfusionMatrix (accumulated on the device, summed
over processes); here it is read as image counts. Macro F1 is the competition's metric and
agrees with `sklearn.metrics.f1_score(average="macro")`: a class absent from both the
ground truth and the predictions has no F1 (None) and is left out of the mean; a class
that is predicted but never true, or true but never predicted, scores 0.
"""

from __future__ import annotations

import math

import torch

from seglab.metrics.confusion import ConfusionMatrix, nanmean, per_class_values


def classification_scores(mat: torch.Tensor, class_names: list[str] | None = None) -> dict:
    m = torch.as_tensor(mat).detach().to("cpu", torch.float64)
    n = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    tp, gt, pred = m.diag(), m.sum(1), m.sum(0)
    nan = torch.tensor(math.nan, dtype=torch.float64)
    f1 = torch.where(gt + pred > 0, 2 * tp / (gt + pred).clamp(min=1), nan)
    precision = torch.where(pred > 0, tp / pred.clamp(min=1), torch.where(gt > 0, 0.0, nan))
    recall = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = m.sum()

    return {
        "macro_f1": nanmean(f1),
        "accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_class_accuracy": nanmean(recall),
        "per_class_f1": per_class_values(names, f1),
        "per_class_precision": per_class_values(names, precision),
        "per_class_recall": per_class_values(names, recall),
        "support": {name: int(v) for name, v in zip(names, gt.tolist())},
    }


def facet_accuracies(mat: torch.Tensor, facets: dict[str, tuple[int, ...]]) -> dict[str, float]:
    """Accuracy of each part of a composite class (a prediction is right on a facet when the
    predicted class has the true class's value of it), from the class confusion matrix."""
    m = torch.as_tensor(mat).detach().to("cpu", torch.float64)
    total = float(m.sum())
    out = {}
    for name, values in facets.items():
        v = torch.tensor(values)
        same = (v[:, None] == v[None, :]).double()
        out[f"{name}_accuracy"] = float((m * same).sum() / total) if total > 0 else math.nan
    return out


class ClassificationConfusion(ConfusionMatrix):
    """Images: macro F1, accuracy, mean class accuracy, per-class F1 / precision / recall,
    and the accuracy of each facet of the classes (competition C: mask, gender, age)."""

    def __init__(self, num_classes: int, facets: dict[str, tuple[int, ...]] | None = None, device=None):
        super().__init__(num_classes, None, device)
        self.facets = dict(facets or {})

    def compute(self, class_names: list[str] | None = None) -> dict:
        return {**classification_scores(self.mat, class_names), **facet_accuracies(self.mat, self.facets)}



def format_table(scores: dict, title: str = "") -> str:
    from seglab.metrics.table import per_class_table

    facets = [k for k in scores if k.endswith("_accuracy") and k not in ("accuracy", "mean_class_accuracy")]
    extra = "".join(f" | {k.replace('_', ' ')} {scores[k]:.4f}" for k in facets)
    summary = (f"macro F1 {scores['macro_f1']:.4f} | accuracy {scores['accuracy']:.4f} | "
               f"mean class acc {scores['mean_class_accuracy']:.4f}{extra}")
    columns = {"F1": scores["per_class_f1"], "prec": scores["per_class_precision"],
               "recall": scores["per_class_recall"], "n": scores["support"]}
    return per_class_table(columns, summary, title)
