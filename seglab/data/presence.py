"""Which classes each sample holds: what the class-balanced sampler weighs and what
k-fold stratifies on, for every target kind."""

from __future__ import annotations

import numpy as np


def class_presence(source, labels) -> np.ndarray:
    """[N, C] bool: which classes each sample of `source` holds (ignore left out).

    The source is asked (`Source.classes_present`): COCO annotations and image labels say
    it without decoding anything; other layouts ask their targets' kind.
    """
    n, c = len(source), labels.num_classes
    out = np.zeros((n, c), dtype=bool)
    for i in range(n):
        for cls in source.classes_present(i):
            if 0 <= cls < c:
                out[i, cls] = True
    return out
