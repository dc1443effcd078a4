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


# A plan: {class index: the steps for that class}. The config gives every selected class the
# same steps; `seglab tune-postprocess` chooses them per class (RUN/postprocess.json).
Plan = dict


def plan_from_config(cfg: PostprocessConfig, classes: Sequence[str]) -> Plan:
    """The config's morphology for each class it selects ({} when it asks for none)."""
    if not cfg.morphology:
        return {}
    return {c: cfg for c in selected_classes(cfg, list(classes))}


def apply_plan(pred: np.ndarray, plan: Plan) -> np.ndarray:
    """C x H x W booleans (multilabel) or a class map [H, W] (multiclass, class 0 = Background)
    through each class's steps."""
    plan = {c: steps for c, steps in plan.items() if steps.morphology}
    if not plan:
        return pred
    out = pred.copy()
    if pred.ndim == 3:
        for c, steps in sorted(plan.items()):
            out[c] = clean_mask(pred[c], steps)
        return out
    for c, steps in sorted(plan.items()):
        if c == 0:
            continue  # Background is what the other classes leave
        before = pred == c
        after = clean_mask(before, steps)
        out[before & ~after] = 0
        out[after & ~before & (pred == 0)] = c  # additions never overwrite another class
    return out


def postprocess(pred: np.ndarray, cfg: PostprocessConfig, classes: Sequence[str]) -> np.ndarray:
    """C x H x W booleans (multilabel) or a class map [H, W] (multiclass, class 0 = Background)."""
    return apply_plan(pred, plan_from_config(cfg, classes))


# ------------------------------------------------------------------ a tuned plan in the run folder

PLAN_FILE = "postprocess.json"
STEP_KEYS = ("opening", "closing", "fill_holes", "largest_component")


def steps_text(steps: PostprocessConfig | None) -> str:
    """'opening 3 + largest component', or 'none'."""
    if steps is None or not steps.morphology:
        return "none"
    parts = [f"{k} {getattr(steps, k)}" for k in ("opening", "closing") if getattr(steps, k)]
    parts += [k.replace("_", " ") for k in ("fill_holes", "largest_component") if getattr(steps, k)]
    return " + ".join(parts)


def read_plan(path, classes: Sequence[str]) -> Plan:
    """RUN/postprocess.json's per-class steps, checked against the run's classes."""
    import json
    from pathlib import Path

    from pydantic import ValidationError

    from seglab.errors import SeglabError

    path = Path(path)
    try:
        chosen = json.loads(path.read_text())["classes"]
        plan = {}
        for name, steps in chosen.items():
            if name not in classes:
                raise SeglabError(f"{path}: class {name!r} is not one of the run's classes; run tune-postprocess again")
            plan[list(classes).index(name)] = PostprocessConfig(**{k: steps.get(k, PostprocessConfig.model_fields[k].default)
                                                                   for k in STEP_KEYS})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError) as e:
        raise SeglabError(f"{path}: not a post-processing file ({type(e).__name__}); delete it or run tune-postprocess again") from None
    return plan
