"""`seglab viz pred RUN --split val|test`: a trained run's predictions drawn on a split's
images (mmseg's `--show-dir`), with the errors where the split has labels. The
predictions are exactly what `predict` writes (original size, TTA, thresholds,
post-processing); the panels are the validation panels' drawing code.

Dense outputs (class maps, C x H x W masks drawn as their topmost class) get one panel
per image; one class per image (classification) gets a captioned gallery.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from seglab.data.preview import drawable
from seglab.visualization.figures import (_class_legend, _tile_grid, _unique, class_palette, overlay, prediction_panel,
                                          safe_filename, save_png)


def draw_predictions(members, split: str, ref, out_dir, limit: int | None = 16) -> list[Path]:
    """PNGs under out_dir for the first `limit` images of `split`; returns their paths."""
    from seglab.data import open_source
    from seglab.inference.predict import predictions

    source = open_source(ref.cfg, split, ref.labels)
    index_of = {source.sample_id(i): i for i in range(len(source))}
    labelled = getattr(source, "has_targets", False)
    labels = ref.labels
    out_dir, used, paths, gallery = Path(out_dir), set(), [], []
    dense_names = ["none", *labels.classes] if labels.target == "binary_masks" else list(labels.classes)
    palette = class_palette(len(dense_names))
    for p in itertools.islice(predictions(members, split, ref), limit):
        i = index_of[p.id]
        image = np.asarray(source.load_image(i))
        target = np.asarray(source.load_target(i)) if labelled else None
        output = np.asarray(p.output)
        if output.ndim == 0:  # one class per image: into the gallery
            true = f"true {labels.classes[int(target)]}\n" if target is not None else ""
            gallery.append((image, f"{p.id[-28:]}\n{true}pred {labels.classes[int(output)]}"))
            continue
        pred = drawable(output)
        if target is not None:
            panel = prediction_panel(image, drawable(target), pred, dense_names, labels.ignore_index, title=p.id, palette=palette)
        else:
            legend = _class_legend(pred, pred, dense_names, palette, labels.ignore_index)
            panel = _tile_grid([(image, "image"), (overlay(image, pred, palette, labels.ignore_index), "prediction")], 2,
                               p.id, legend, tile_px=400)
        paths.append(save_png(panel, out_dir / _unique(f"pred_{safe_filename(p.id)}", used)))
    if gallery:
        grid = _tile_grid(gallery, min(6, len(gallery)), f"{split}: predictions", tile_px=184, caption_lines=3)
        paths.append(save_png(grid, out_dir / "predictions.png"))
    return paths
