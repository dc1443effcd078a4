"""Which classes each sample holds: what the class-balanced sampler weighs and what
k-fold stratifies on, for every target form."""

from __future__ import annotations

import numpy as np


def classes_in_target(target, labels) -> set[int]:
    """The classes of one target: a class index, a class map [H, W] or C x H x W booleans."""
    if isinstance(target, np.ndarray) and target.ndim == 3:
        return set(np.flatnonzero(target.reshape(target.shape[0], -1).any(1)).tolist())
    if isinstance(target, np.ndarray) and target.ndim == 2:
        return set(np.unique(target).tolist())
    return {int(target)}


def class_presence(source, labels) -> np.ndarray:
    """[N, C] bool: which classes each sample of `source` holds (ignore left out).

    A source that can say it cheaply (`classes_present`: COCO annotations, image labels)
    is asked; otherwise its (cached) targets are read.
    """
    n, c = len(source), labels.num_classes
    out = np.zeros((n, c), dtype=bool)
    fast = getattr(source, "classes_present", None)
    for i in range(n):
        classes = fast(i) if fast is not None else classes_in_target(source.load_target(i), labels)
        for cls in classes:
            if 0 <= cls < c:
                out[i, cls] = True
    return out
