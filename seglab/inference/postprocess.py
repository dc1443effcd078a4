"""From probabilities to the final masks: per-class thresholds and morphology.

Thresholds (multilabel): a pixel is in class c when its probability is strictly above
threshold[c]. The config gives one value or {class: value}; `seglab tune-thresholds`
writes RUN/thresholds.json, which evaluate and predict then use instead.

Morphology, per class mask, in this order (each optional): opening (removes specks
thinner than the kernel), closing (bridges gaps), fill holes (background regions not
connected to the image border), keep the largest connected component (8-connected).
Kernel sizes are pixels of the mask it runs on: the original image size in `predict`,
the dataset's size in `evaluate` (unless --original-size). For multiclass class maps
the same steps run on each non-background class's mask in class order: pixels a step
removes become Background, Background pixels it adds take the class (other classes'
pixels are never overwritten).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from seglab.config import PostprocessConfig
from seglab.errors import ConfigError


def threshold_vector(cfg: PostprocessConfig, classes: Sequence[str]) -> torch.Tensor:
    """[C] thresholds in class order from the config."""
    if isinstance(cfg.threshold, dict):
        unknown = [c for c in cfg.threshold if c not in classes]
        if unknown:
            raise ConfigError(f"postprocess.threshold: unknown classes {unknown} (classes: {', '.join(classes)})")
        return torch.tensor([float(cfg.threshold.get(c, 0.5)) for c in classes])
    return torch.full((len(classes),), float(cfg.threshold))


# ------------------------------------------------------------------ morphology


def _kernel(k: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels not 4-connected to the border become foreground."""
    h, w = mask.shape
    outside = np.zeros((h + 2, w + 2), np.uint8)
    outside[1:-1, 1:-1] = ~mask
    outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = 1
    cv2.floodFill(outside, None, (0, 0), 0, flags=4)
    return mask | outside[1:-1, 1:-1].astype(bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == keep


def clean_mask(mask: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """One boolean [H, W] mask through the configured steps."""
    m = mask.astype(bool)
    if cfg.opening:
        m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, _kernel(cfg.opening)).astype(bool)
    if cfg.closing:
        m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, _kernel(cfg.closing)).astype(bool)
    if cfg.fill_holes:
        m = fill_holes(m)
    if cfg.largest_component:
        m = largest_component(m)
    return m


def selected_classes(cfg: PostprocessConfig, classes: Sequence[str]) -> list[int]:
    if cfg.classes is None:
        return list(range(len(classes)))
    unknown = [c for c in cfg.classes if c not in classes]
    if unknown:
        raise ConfigError(f"postprocess.classes: unknown classes {unknown} (classes: {', '.join(classes)})")
    return [classes.index(c) for c in cfg.classes]


def postprocess(pred: np.ndarray, cfg: PostprocessConfig, classes: Sequence[str]) -> np.ndarray:
    """C x H x W booleans (multilabel) or a class map [H, W] (multiclass, class 0 = Background)."""
    if not cfg.morphology:
        return pred
    classes = list(classes)
    if pred.ndim == 3:
        out = pred.copy()
        for c in selected_classes(cfg, classes):
            out[c] = clean_mask(pred[c], cfg)
        return out
    out = pred.copy()
    for c in selected_classes(cfg, classes):
        if c == 0:
            continue  # Background is what the other classes leave
        before = pred == c
        after = clean_mask(before, cfg)
        out[before & ~after] = 0
        out[after & ~before & (pred == 0)] = c  # additions never overwrite another class
    return out
