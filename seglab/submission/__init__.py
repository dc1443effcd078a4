"""Submission writers: one registry, one signature, for every task.

A writer is `writer(predictions, out, context) -> rows written`: `predictions` streams
`seglab.inference.predict.Prediction`s (id, image path, probabilities, decided output)
one image at a time, in split order; `context` holds the run's classes and config and
the split. Every file is written through a temporary file and renamed, so a crash leaves
no partial file. The task says which formats it can write (`task.writers`).

    registry.py        WRITERS and WriteContext
    segmentation.py    coco_csv (competition A), png
    rle.py             rle (competition B: image_name,class,rle)
    classification.py  maskstatus (competition C info.csv), id_label, probs
"""

from seglab.submission import classification, rle, segmentation  # noqa: F401  (register)
from seglab.submission.registry import WRITERS, WriteContext

__all__ = ["WRITERS", "WriteContext"]
