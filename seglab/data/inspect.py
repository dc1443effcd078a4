"""`seglab data inspect`: what is in a COCO file before anyone trains on it."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

from seglab.data.corrections import Applied, read_corrections, summarise
from seglab.data.painting import annotation_mask, paint_sequence
from seglab.data.sources.coco import annotation_class, fix_coco, read_coco, segmentation_problem, validate_coco
from seglab.data.labels import LabelSpec


def inspect_coco(json_path: str | Path, root: str | Path | None = None, paint_order: str = "area_desc", labels: LabelSpec | None = None,
                 corrections: str | Path | None = None) -> dict:
    """Counts per class, pixel share per class, overlapping pixels per class pair, sizes, problems
    (after a corrections file, when one is given: its records are counted per kind)."""
    json_path = Path(json_path)
    coco = read_coco(json_path, root if root is not None else json_path.parent)
    names = {c["id"]: str(c.get("name", c["id"])) for c in coco.categories}
    if labels is None:
        labels = LabelSpec(("Background",) + tuple(names[c["id"]] for c in coco.categories), 255,
                           {c["id"]: i + 1 for i, c in enumerate(coco.categories)})
    applied, unmatched = {}, []
    if corrections is not None:
        fixes = read_corrections(Path(corrections))
        taken = Applied()
        coco = fix_coco(coco, fixes, labels, taken)
        applied, unmatched = summarise(fixes, [taken])
    class_name = lambda idx: labels.classes[idx] if idx < labels.num_classes else "ignore"
    ann_per_class: Counter = Counter()
    images_per_class: Counter = Counter()
    pixels = np.zeros(max(labels.num_classes, labels.ignore_index + 1), dtype=np.int64)
    overlap: Counter = Counter()
    sizes: Counter = Counter()
    by_id = {img["id"]: img for img in coco.images}
    for img in coco.images:
        h, w = img["height"], img["width"]
        sizes[(h, w)] += 1
        masks, classes = [], []
        for ann in coco.annotations.get(img["id"], []):
            cls = annotation_class(ann, labels)
            if cls is None or segmentation_problem(ann.get("segmentation"), h, w):
                continue  # reported in problems
            masks.append(annotation_mask(ann["segmentation"], h, w))
            classes.append(cls)
            ann_per_class[class_name(cls)] += 1
        for cls in set(classes):
            images_per_class[class_name(cls)] += 1
        painted = np.zeros((h, w), dtype=np.int64)
        for i in paint_sequence(masks, classes, paint_order):
            painted[masks[i]] = classes[i]
        pixels += np.bincount(painted.ravel(), minlength=pixels.size)[: pixels.size]
        for i, j in combinations(range(len(masks)), 2):
            shared = int(np.logical_and(masks[i], masks[j]).sum())
            if shared:
                pair = tuple(sorted((class_name(classes[i]), class_name(classes[j]))))
                overlap[pair] += shared
    total = int(pixels.sum())
    orphans = sum(len(a) for k, a in coco.annotations.items() if k not in by_id)
    return {
        "file": str(json_path),
        "images": len(coco.images),
        "annotations": sum(len(a) for a in coco.annotations.values()),
        "orphan_annotations": orphans,
        "classes": list(labels.classes),
        "annotations_per_class": dict(ann_per_class),
        "images_per_class": dict(images_per_class),
        "pixel_share": {class_name(i): int(n) / total for i, n in enumerate(pixels) if n and total},
        "overlap_pixels": {f"{a} / {b}": n for (a, b), n in overlap.most_common()},
        "image_sizes": {f"{h}x{w}": n for (h, w), n in sizes.most_common()},
        "corrections": applied,
        "problems": validate_coco(coco, labels, check_files=True) + unmatched,
    }


def format_inspection(report: dict) -> str:
    lines = [f"{report['file']}: {report['images']} images, {report['annotations']} annotations"]
    lines.append("\nclass                    annotations  images  pixel share")
    for name in report["classes"]:
        lines.append(
            f"{name:<24} {report['annotations_per_class'].get(name, 0):>11}  {report['images_per_class'].get(name, 0):>6}"
            f"  {100 * report['pixel_share'].get(name, 0.0):10.3f}%"
        )
    lines.append("\noverlapping pixels (claimed by two annotations), per class pair:")
    lines.extend(f"  {pair:<40} {n:>10}" for pair, n in report["overlap_pixels"].items())
    if not report["overlap_pixels"]:
        lines.append("  none")
    lines.append("\nimage sizes: " + ", ".join(f"{s} x{n}" for s, n in report["image_sizes"].items()))
    if report.get("corrections"):
        lines.append("\ncorrections applied: " + ", ".join(f"{k} {n}" for k, n in report["corrections"].items()))
    lines.append(f"\nproblems: {len(report['problems'])}")
    lines.extend(f"  - {p}" for p in report["problems"][:50])
    if len(report["problems"]) > 50:
        lines.append(f"  ... and {len(report['problems']) - 50} more")
    return "\n".join(lines)
