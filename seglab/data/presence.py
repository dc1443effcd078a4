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

    The source is asked (`Source.classes_present`): COCO annotations and image labels say
    it without decoding anything; other layouts read their (cached) targets.
    """
    n, c = len(source), labels.num_classes
    out = np.zeros((n, c), dtype=bool)
    for i in range(n):
        for cls in source.classes_present(i):
            if 0 <= cls < c:
                out[i, cls] = True
    return out
