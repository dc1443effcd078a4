"""Pseudo-labels: a labelled training set from confident predictions on unlabelled images.

`seglab pseudo` streams the (ensemble-averaged, TTA) probabilities of each image at its
original size; the task keeps what is confident and writes a set `data.extra_train`
reads back. For segmentation that is an ordinary COCO JSON:

- one annotation per class present (compressed RLE of that class's pixels), category
  named after the training class; for multiclass, class 0 is the unannotated rest and
  pixels whose winning probability is below the threshold form one annotation of the
  category named `ignore` (`extra_train` maps it to ignore_index by name);
- an image whose share of confident decisions is below --min-confident is dropped;
- `file_name`s relative to the reference config's `data.root`, as in its splits.

Images stream one at a time; only the (small) RLE strings are kept until the file is
written. Classification writes `path,label,confidence` (seglab.tasks.classification).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seglab.data.painting import coco_rle
from seglab.data.sources.combined import IGNORE_NAME
from seglab.io import write_json


def mask_annotations(masks: dict[int, np.ndarray], image_id: int, next_id: int) -> list[dict]:
    """COCO annotations (compressed RLE), one per category id with a non-empty mask."""
    anns = []
    for category, region in masks.items():
        if not region.any():
            continue
        segmentation, bbox = coco_rle(region)
        anns.append({
            "id": next_id + len(anns), "image_id": image_id, "category_id": int(category), "iscrowd": 0,
            "area": float(region.sum()), "bbox": bbox, "segmentation": segmentation,
        })
    return anns


def categories(names: list[str]) -> list[dict]:
    """The categories of a pseudo-label file: the task's names in order (ids from 1), then `ignore`."""
    cats = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    return cats + [{"id": len(cats) + 1, "name": IGNORE_NAME}]


def relative_file_name(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
    except ValueError:  # another drive
        return str(Path(path).resolve())


def write_coco_pseudo_labels(predictions, out, ref_cfg, names: list[str], confident, threshold: float,
                             min_confident: float) -> dict:
    """Write the COCO pseudo-label file of categories `names`; `confident(probs)` gives
    ({category id: mask}, confident share) of one image."""
    out = Path(out)
    path = out if out.suffix == ".json" else out / "pseudo.json"
    images, annotations, dropped, seen, confident_total = [], [], [], 0, 0.0
    for sample_id, image_path, probs in predictions:
        seen += 1
        masks, share = confident(probs)
        if share < min_confident:
            dropped.append(sample_id)
            continue
        confident_total += share
        image_id = len(images)
        h, w = probs.shape[-2:]
        images.append({"id": image_id, "file_name": relative_file_name(image_path, Path(ref_cfg.data.root)), "height": int(h), "width": int(w)})
        annotations.extend(mask_annotations(masks, image_id, len(annotations)))
    summary = {
        "threshold": threshold, "min_confident": min_confident, "images_seen": seen,
        "images_kept": len(images), "images_dropped": len(dropped),
        "mean_confident_share_kept": confident_total / len(images) if images else None,
        "data_root": str(ref_cfg.data.root),
    }
    write_json(path, {"info": {"description": "seglab pseudo-labels", **summary, "dropped": dropped},
                      "images": images, "annotations": annotations, "categories": categories(names)})
    summary["path"] = str(path.resolve())
    return summary


def write_pseudo_labels(members, out, split: str = "test", threshold: float = 0.9, min_confident: float = 0.5,
                        data_config=None, batch_size: int | None = None) -> dict:
    """Predict `split` with the members and write the task's pseudo-label set; returns a summary."""
    from seglab.errors import ConfigError
    from seglab.inference.predict import predictions, reference

    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: must be in [0, 1]")
    if not 0.0 <= min_confident <= 1.0:
        raise ConfigError(f"--min-confident {min_confident}: must be in [0, 1]")
    run = members[0].run
    ref = reference(members, data_config)
    stream = ((p.id, p.image_path, p.probs) for p in predictions(members, split, ref, batch_size, space="train"))  # pseudo-labels train
    summary = run.task.write_pseudo_labels(stream, out, ref.cfg, ref.labels, threshold, min_confident, run.thresholds)
    return {"split": split, "members": [m.name for m in members], **summary}
