"""Pseudo-labels: a labelled COCO set from confident predictions on unlabelled images.

The (ensemble-averaged, TTA) probabilities of each image are turned into a class map;
a pixel whose confidence (the winning class's probability) is below the threshold
becomes *ignore*; an image with too small a share of confident pixels is dropped.
The output is an ordinary COCO JSON that `data.extra_train` adds to training:

- one annotation per class present (compressed RLE of that class's confident pixels),
  category named after the training class; class 0 is the unannotated rest;
- one annotation of the category named `ignore` covering the unconfident pixels
  (any COCO reader maps it with `category_map: {<its id>: ignore}`; `extra_train`
  does it by name);
- `file_name`s relative to the reference config's `data.root`, as in its splits.

Images stream one at a time; only the (small) RLE strings are kept until the file is
written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from seglab.data.extra import IGNORE_NAME
from seglab.errors import ConfigError
from seglab.io import write_json


def confident_class_map(probs: torch.Tensor, threshold: float, ignore_index: int) -> tuple[np.ndarray, float]:
    """Class map [H, W] of probabilities [C, H, W] with unconfident pixels set to ignore_index,
    and the share of confident pixels."""
    conf, cls = probs.max(0)
    keep = conf >= threshold
    out = torch.where(keep, cls, torch.full_like(cls, ignore_index))
    dtype = np.uint8 if max(ignore_index, probs.shape[0] - 1) <= 255 else np.uint16
    return out.cpu().numpy().astype(dtype), float(keep.float().mean())


def class_map_annotations(class_map: np.ndarray, image_id: int, num_classes: int, ignore_index: int, ignore_category: int, next_id: int) -> list[dict]:
    """COCO annotations (compressed RLE) for classes 1..C-1 and the ignore region of a class map."""
    anns = []
    for cls, category in [(c, c) for c in range(1, num_classes)] + [(ignore_index, ignore_category)]:
        region = class_map == cls
        if not region.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
        anns.append({
            "id": next_id + len(anns), "image_id": image_id, "category_id": category, "iscrowd": 0,
            "area": float(region.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        })
    return anns


def _relative_file_name(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
    except ValueError:  # another drive
        return str(Path(path).resolve())


def write_pseudo_labels(members, out: str | Path, split: str = "test", threshold: float = 0.9, min_confident: float = 0.5,
                        data_config=None, device: str | None = None, batch_size: int | None = None) -> dict:
    """Predict `split` with the members, write the pseudo-labelled COCO JSON; returns a summary."""
    from seglab.ensemble import iter_member_probs, load_members, reference

    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: must be in [0, 1]")
    if not 0.0 <= min_confident <= 1.0:
        raise ConfigError(f"--min-confident {min_confident}: must be in [0, 1]")
    out = Path(out)
    path = out if out.suffix == ".json" else out / "pseudo.json"
    members = load_members(members, device)
    ref_cfg, labels = reference(members, data_config)
    ignore_category = labels.num_classes  # ids 1..C-1 are the classes
    categories = [{"id": c, "name": labels.classes[c]} for c in range(1, labels.num_classes)]
    categories.append({"id": ignore_category, "name": IGNORE_NAME})
    images, annotations, dropped, seen, confident_total = [], [], [], 0, 0.0
    for sample_id, index, probs, _, dataset in iter_member_probs(members, split, data_config, device, batch_size):
        seen += 1
        class_map, share = confident_class_map(probs, threshold, labels.ignore_index)
        if share < min_confident:
            dropped.append(sample_id)
            continue
        confident_total += share
        image_id = len(images)
        # COCO ids are already file names relative to data.root; other layouts: the image's path.
        coco = getattr(dataset.source, "coco", None)
        file_name = sample_id if coco is not None else _relative_file_name(dataset.source.image_path(index), Path(ref_cfg.data.root))
        h, w = class_map.shape
        images.append({"id": image_id, "file_name": file_name, "height": int(h), "width": int(w)})
        annotations.extend(class_map_annotations(class_map, image_id, labels.num_classes, labels.ignore_index, ignore_category, len(annotations)))
    summary = {
        "split": split, "threshold": threshold, "min_confident": min_confident, "images_seen": seen,
        "images_kept": len(images), "images_dropped": len(dropped),
        "mean_confident_share_kept": confident_total / len(images) if images else None,
        "members": [m.name for m in members], "data_root": str(ref_cfg.data.root),
    }
    write_json(path, {
        "info": {"description": "seglab pseudo-labels", **summary, "dropped": dropped},
        "images": images, "annotations": annotations, "categories": categories,
    })
    summary["path"] = str(path.resolve())
    return summary
