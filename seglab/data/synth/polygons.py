"""Built-in example data in the hand-bone layout (competition B), small enough for a CPU.

    OUT/train/DCM/ID000/image..._L.png, image..._R.png      grayscale, two hands per person
    OUT/train/outputs_json/ID000/image..._L.json            {"annotations": [{"label", "points"}]}
    OUT/test/DCM/ID0NN/...                                   no labels
    OUT/train/train.txt, OUT/train/val.txt                  a split by person (ID folders)
    OUT/meta_data.csv                                       ID, age, sex per person

Each image holds several overlapping shapes of different classes; like bones on an
X-ray, overlapping shapes add their brightness, so the target is multi-label (a pixel
can belong to two classes). Some classes are absent from some images, so empty
ground truth occurs. Deterministic for a given seed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from seglab.data.synth.coco import _outline

CLASSES = ("disc", "square", "triangle", "bar", "star")
BRIGHTNESS = (70.0, 55.0, 85.0, 60.0, 75.0)


def class_names(num_classes: int | None = None) -> tuple[str, ...]:
    """The built-in five, or `num_classes` names cycling through their shapes (disc01, square02, ...)."""
    if num_classes is None:
        return CLASSES
    return tuple(f"{CLASSES[k % len(CLASSES)]}{k + 1:02d}" for k in range(num_classes))


def _densify(points: np.ndarray, n: int) -> np.ndarray:
    """The closed outline resampled to `n` points along its edges (annotation-tool density)."""
    closed = np.vstack([points, points[:1]]).astype(np.float64)
    seg = np.hypot(*np.diff(closed, axis=0).T)
    at = np.linspace(0, seg.sum(), n, endpoint=False)
    cum = np.concatenate([[0], np.cumsum(seg)])
    return np.stack([np.interp(at, cum, closed[:, 0]), np.interp(at, cum, closed[:, 1])], 1)


def _image(rng: np.random.Generator, size: int, names: tuple[str, ...] = CLASSES,
           points: int | None = None) -> tuple[np.ndarray, list[dict]]:
    low = cv2.resize(rng.normal(0, 1, (5, 5)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = 30 + 10 * low + rng.normal(0, 6, (size, size)).astype(np.float32)
    anns, centres = [], []
    # Many classes share the image as bones share a hand: smaller shapes, same total area.
    shrink = min(1.0, float(np.sqrt(len(CLASSES) / len(names))))
    for c, label in enumerate(names):
        name = CLASSES[c % len(CLASSES)]
        if rng.random() < 0.25:  # absent: empty ground truth for this class
            continue
        r = float(rng.uniform(0.12, 0.22) * size) * shrink
        if centres and rng.random() < 0.6:  # overlap a previous shape on purpose
            px, py = centres[-1]
            cx, cy = px + rng.uniform(-0.8, 0.8) * r, py + rng.uniform(-0.8, 0.8) * r
        else:
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
        cx, cy = float(np.clip(cx, r * 0.6, size - r * 0.6)), float(np.clip(cy, r * 0.6, size - r * 0.6))
        outline = _outline(name, cx, cy, r, float(rng.uniform(0, 2 * np.pi)))
        if points:
            outline = _densify(outline, points)
        pts = np.clip(np.round(outline).astype(np.int32), 0, size - 1)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [pts], 1)
        if mask.sum() < 12:
            continue
        if names is CLASSES:
            img += mask * (BRIGHTNESS[c] + rng.normal(0, 4, (size, size)).astype(np.float32))
        else:  # one noise field per shape at 2048 px costs seconds: noise only inside the shape
            inside = mask.astype(bool)
            img[inside] += BRIGHTNESS[c % len(BRIGHTNESS)] + rng.normal(0, 4, int(inside.sum())).astype(np.float32)
        centres.append((cx, cy))
        anns.append({"id": f"{label}-{len(anns)}", "type": "poly_seg", "attributes": {},
                     "points": pts.tolist(), "label": label})
    return np.clip(img, 0, 255).astype(np.uint8), anns


def make_polygon_dataset(out: str | Path, n_train_ids: int = 16, n_val_ids: int = 4, n_test_ids: int = 3,
                         size: int = 96, seed: int = 0, num_classes: int | None = None,
                         points: int | None = None) -> dict[str, Path]:
    """Write the layout above; returns the paths a config needs.

    `num_classes` (default: the five shapes) and `points` (vertices per polygon, default
    the shape's own few) make it as dense as the competition's: 29 bones, a few hundred
    vertices each (benchmarks/fullres.py); their names are `class_names(num_classes)`."""
    names = class_names(num_classes)
    out = Path(out)
    rng = np.random.default_rng(seed)
    serial = 1661130800000 + seed
    ids = {"train": [], "test": []}
    meta = []
    n_labelled = n_train_ids + n_val_ids
    for k in range(n_labelled + n_test_ids):
        split = "train" if k < n_labelled else "test"
        pid = f"ID{k:03d}"
        ids[split].append(pid)
        meta.append({"ID": k, "age": int(rng.integers(18, 70)), "sex": "F" if rng.random() < 0.5 else "M"})
        for hand in ("L", "R"):
            serial += 1
            img, anns = _image(rng, size, names, points)
            name = f"image{serial}_{hand}"
            img_path = out / split / "DCM" / pid / f"{name}.png"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img_path), img)
            if split == "train":
                json_path = out / split / "outputs_json" / pid / f"{name}.json"
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(json.dumps({"annotations": anns, "filename": f"{name}.png"}))
    train_ids, val_ids = ids["train"][:n_train_ids], ids["train"][n_train_ids:]
    (out / "train" / "train.txt").write_text("".join(f"{i}\n" for i in train_ids))
    (out / "train" / "val.txt").write_text("".join(f"{i}\n" for i in val_ids))
    with open(out / "meta_data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["ID", "age", "sex"])
        writer.writeheader()
        writer.writerows(meta)
    return {"root": out / "train", "train": out / "train" / "train.txt", "val": out / "train" / "val.txt",
            "test": out / "test", "metadata": out / "meta_data.csv"}
