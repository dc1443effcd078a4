"""Morphology of decided masks, per class: the steps `postprocess` and a tuned plan
(RUN/postprocess.json) ask for, in this order (each optional): opening (removes specks
thinner than the kernel), closing (bridges gaps), fill holes (background regions not
connected to the image border), keep the largest connected component (8-connected).

A *plan* is {class index: steps}, the steps an object with `opening`, `closing`,
`fill_holes`, `largest_component` and `morphology` (a `PostprocessConfig`). Each target
kind applies a plan to its decisions (`seglab.kinds`): one mask per channel, or each class
of a class map in turn.
"""

from __future__ import annotations

import cv2
import numpy as np


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


def clean_mask(mask: np.ndarray, cfg) -> np.ndarray:
    """One boolean [H, W] mask through the steps of `cfg`."""
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


def steps_of(plan: dict) -> dict:
    """The classes of a plan that have a step."""
    return {c: steps for c, steps in plan.items() if steps.morphology}
