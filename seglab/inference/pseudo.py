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
from pycocotools import mask as mask_utils

from seglab.data.sources.combined import IGNORE_NAME
from seglab.io import write_json


def mask_annotations(masks: dict[int, np.ndarray], image_id: int, next_id: int) -> list[dict]:
    """COCO annotations (compressed RLE), one per category id with a non-empty mask."""
    anns = []
    for category, region in masks.items():
        if not region.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
        anns.append({
            "id": next_id + len(anns), "image_id": image_id, "category_id": int(category), "iscrowd": 0,
            "area": float(region.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        })
    return anns


def target_masks(target: np.ndarray, labels) -> dict[int, np.ndarray]:
    """Category id -> mask of a confident target: a class map (class c -> category c for
    c >= 1, ignore_index -> the ignore category) or C x H x W booleans (channel c -> c + 1)."""
    if target.ndim == 3:
        return {c + 1: target[c] for c in range(target.shape[0])}
    masks = {c: target == c for c in range(1, labels.num_classes)}
    masks[labels.num_classes] = target == labels.ignore_index
    return masks


def categories(labels) -> list[dict]:
    """Category ids of the pseudo-label file: class names in order (a class map's class 0
    is the unannotated rest, so it has none), then `ignore`."""
    names = list(labels.classes[1:] if labels.target == "class_map" else labels.classes)
    cats = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    return cats + [{"id": len(cats) + 1, "name": IGNORE_NAME}]


def relative_file_name(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
    except ValueError:  # another drive
        return str(Path(path).resolve())


def write_coco_pseudo_labels(predictions, out, ref_cfg, labels, confident, threshold: float, min_confident: float) -> dict:
    """Write the COCO pseudo-label file; `confident(probs)` gives (target, confident share)."""
    out = Path(out)
    path = out if out.suffix == ".json" else out / "pseudo.json"
    images, annotations, dropped, seen, confident_total = [], [], [], 0, 0.0
    for sample_id, image_path, probs in predictions:
        seen += 1
        target, share = confident(probs)
        if share < min_confident:
            dropped.append(sample_id)
            continue
        confident_total += share
        image_id = len(images)
        h, w = target.shape[-2:]
        images.append({"id": image_id, "file_name": relative_file_name(image_path, Path(ref_cfg.data.root)), "height": int(h), "width": int(w)})
        annotations.extend(mask_annotations(target_masks(target, labels), image_id, len(annotations)))
    summary = {
        "threshold": threshold, "min_confident": min_confident, "images_seen": seen,
        "images_kept": len(images), "images_dropped": len(dropped),
        "mean_confident_share_kept": confident_total / len(images) if images else None,
        "data_root": str(ref_cfg.data.root),
    }
    write_json(path, {"info": {"description": "seglab pseudo-labels", **summary, "dropped": dropped},
                      "images": images, "annotations": annotations, "categories": categories(labels)})
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
