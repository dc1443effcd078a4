"""From probabilities to the final masks: per-class thresholds and which morphology each
class gets (a *plan*; the steps themselves are `seglab.inference.morphology`'s, applied by
the target kind).

Thresholds (multilabel): a pixel is in class c when its probability is strictly above
threshold[c]. The config gives one value or {class: value}; `seglab tune-thresholds`
writes RUN/thresholds.json, which evaluate and predict then use instead.

Kernel sizes are pixels of the mask the steps run on: the original image size in
`predict`, the dataset's size in `evaluate` (unless --original-size). For multiclass class
maps the steps run on each non-background class's mask in class order: pixels a step
removes become Background, Background pixels it adds take the class (other classes'
pixels are never overwritten).
"""

from __future__ import annotations

from typing import Sequence

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


# ------------------------------------------------------------------ which classes, which steps


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
