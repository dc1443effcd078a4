"""Built-in example data: a small COCO dataset in the competition-A layout.

Textured backgrounds with overlapping shapes; one shape kind per category, with a
class colour plus jitter so a small model learns it in a minute on a CPU. Category
ids start at 0 (as in the trash competition) so the id -> class map is exercised;
polygons, compressed RLE (rings, which have holes) and uncompressed RLE all appear.
Deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CATEGORIES = [
    {"id": 0, "name": "disc", "supercategory": "shape"},
    {"id": 1, "name": "square", "supercategory": "shape"},
    {"id": 2, "name": "triangle", "supercategory": "shape"},
    {"id": 3, "name": "ring", "supercategory": "shape"},
    {"id": 4, "name": "bar", "supercategory": "shape"},
    {"id": 5, "name": "star", "supercategory": "shape"},
]
COLORS = np.array([[220, 60, 60], [60, 170, 60], [60, 90, 220], [230, 200, 40], [180, 70, 200], [40, 200, 210]], np.float32)
FOLDERS = ("batch_01_vt", "batch_02_vt", "batch_03_vt")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    low = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
    smooth = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 0.35, (size, size, 3)).astype(np.float32)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None] * rng.uniform(-0.6, 0.6)
    img = 110 + 28 * smooth + 18 * grain + 30 * ramp
    for _ in range(rng.integers(2, 6)):  # stray lines so edges alone do not give objects away
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), tuple(float(v) for v in rng.uniform(60, 170, 3)), 1)
    return img


def _outline(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """The shape's outer polygon as [N, 2] (x, y) points."""
    if kind in ("disc", "ring"):
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif kind == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * r * 0.8
    elif kind == "triangle":
        t = np.array([90, 210, 330]) * np.pi / 180
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif kind == "bar":
        pts = np.array([[-1, -0.28], [1, -0.28], [1, 0.28], [-1, 0.28]], np.float64) * r
    else:  # star
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T + [cx, cy]


def _fill(points: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: column-major run lengths starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _make_image(rng: np.random.Generator, size: int, ann_serial: list[int]) -> tuple[np.ndarray, list[dict]]:
    img = _background(rng, size)
    objects = []
    for _ in range(rng.integers(2, 6)):
        cat = int(rng.integers(0, len(CATEGORIES)))
        r = float(rng.uniform(0.09, 0.22) * size)
        if objects and rng.random() < 0.5:  # overlap a previous object on purpose
            px, py = objects[-1]["centre"]
            cx, cy = px + rng.uniform(-r, r), py + rng.uniform(-r, r)
        else:
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
        outer = _outline(CATEGORIES[cat]["name"], cx, cy, r, float(rng.uniform(0, 2 * np.pi)))
        mask = _fill(outer, size)
        if CATEGORIES[cat]["name"] == "ring":
            mask &= ~_fill(_outline("disc", cx, cy, r * 0.5, 0.0), size)
        if mask.sum() < 12:
            continue
        objects.append({"cat": cat, "mask": mask, "outer": outer, "centre": (cx, cy)})
    # Paint large first: the picture then agrees with the area_desc labelling rule.
    for obj in sorted(objects, key=lambda o: -o["mask"].sum()):
        colour = COLORS[obj["cat"]] + rng.uniform(-25, 25, 3)
        shade = rng.normal(0, 8, (size, size, 1))
        img = np.where(obj["mask"][..., None], colour + shade, img)
    anns = []
    for k, obj in enumerate(objects):
        ys, xs = np.nonzero(obj["mask"])
        ann = {"id": ann_serial[0], "category_id": CATEGORIES[obj["cat"]]["id"], "iscrowd": 0,
               "area": float(obj["mask"].sum()),
               "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]}
        ann_serial[0] += 1
        if CATEGORIES[obj["cat"]]["name"] == "ring":
            rle = mask_utils.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
            ann["segmentation"] = {"size": [size, size], "counts": rle["counts"].decode()}
        elif k % 4 == 3:
            ann["segmentation"] = _uncompressed_rle(obj["mask"])
            ann["iscrowd"] = 1
        else:
            ann["segmentation"] = [[round(float(v), 1) for v in np.clip(obj["outer"], 0, size - 1).ravel()]]
        anns.append(ann)
    return np.clip(img, 0, 255).astype(np.uint8), anns


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def make_coco_dataset(out: str | Path, n_train: int = 48, n_val: int = 16, n_test: int = 8, size: int = 128, seed: int = 0) -> dict[str, Path]:
    """Write train.json / val.json / test.json and their images under `out`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        images, annotations, serial = [], [], [0]
        for i in range(n):
            img, anns = _make_image(rng, size, serial)
            file_name = f"{FOLDERS[i % len(FOLDERS)]}/{split}_{i:04d}.jpg"
            (out / file_name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / file_name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append({"id": i, "file_name": file_name, "height": size, "width": size})
            for ann in anns:
                ann["image_id"] = i
            annotations.extend(anns)
        doc = {"info": {"description": f"seglab synthetic shapes ({split})"}, "images": images, "categories": CATEGORIES}
        if split != "test":
            doc["annotations"] = annotations
        paths[split] = out / f"{split}.json"
        _write_json(paths[split], doc)
    return paths
