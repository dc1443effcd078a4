"""`seglab viz pred RUN --split val|test`: a trained run's predictions drawn on a split's
images (mmseg's `--show-dir`), with the errors where the split has labels. The
predictions are exactly what `predict` writes (original size, TTA, thresholds,
post-processing); the target kind draws them (`TargetKind.prediction_pictures`: a panel
per image for dense outputs, one captioned gallery for image classes).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from seglab.visualization.figures import _unique, save_png


def draw_predictions(members, split: str, ref, out_dir, limit: int | None = 16) -> list[Path]:
    """PNGs under out_dir for the first `limit` images of `split`; returns their paths."""
    from seglab.data import open_source
    from seglab.inference.predict import predictions

    source = open_source(ref.cfg, split, ref.labels)
    index_of = {source.sample_id(i): i for i in range(len(source))}

    def samples():
        for p in itertools.islice(predictions(members, split, ref), limit):
            i = index_of[p.id]
            target = np.asarray(source.load_target(i)) if source.has_targets else None
            yield p.id, np.asarray(source.load_image(i)), target, np.asarray(p.output)

    out_dir, used = Path(out_dir), set()
    return [save_png(picture, out_dir / _unique(stem, used))
            for stem, picture in ref.labels.kind.prediction_pictures(samples(), ref.labels, split)]
