"""The GPU check's data: the trashbags folder, its carried subset, and tiny made-up COCO
data for the smoke run (benchmarks/gpu_check.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def joint_coco(train: Path, val: Path, work: Path) -> tuple[Path, Path, Path]:
    """Train and val COCO files under one root: seglab reads image paths relative to data.root,
    and the trashbags splits are separate folders. Written into `work`, inputs untouched."""
    root = Path(os.path.commonpath([train.resolve(), val.resolve()]))
    out = []
    for split, folder in (("train", train), ("val", val)):
        doc = json.loads((folder / "annotations.json").read_text())
        prefix = folder.resolve().relative_to(root)
        for image in doc["images"]:
            image["file_name"] = str(prefix / image["file_name"])
        path = work / f"{split}.json"
        path.write_text(json.dumps(doc))
        out.append(path)
    return out[0], out[1], root


def make_tiny_coco(folder: Path, n: int, size: int, seed: int) -> Path:
    """A tiny COCO split laid out like the trashbags data (annotations.json + images/):
    noise images with one filled rectangle of class 1 or 2 each, coloured by class."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        cat = 1 + i % 2
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = x0 + size // 3, y0 + size // 3
        img[y0:y1, x0:x1] = (200, 60, 60) if cat == 1 else (60, 60, 200)
        name = f"images/{i:03d}.jpg"
        cv2.imwrite(str(folder / name), img)
        images.append({"id": i, "file_name": name, "width": size, "height": size})
        annotations.append({"id": i, "image_id": i, "category_id": cat, "iscrowd": 0, "area": float((x1 - x0) * (y1 - y0)),
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    cats = [{"id": 1, "name": "general_trashbag"}, {"id": 2, "name": "other_trashbag"}]
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return folder


def find_data(explicit: str | None) -> Path | None:
    """The trashbags folder (train/ and valid/ inside): --data, the carried copy
    (benchmarks/gpu_data/trashbags, made by --prepare-data), or the shared data beside the repository."""
    for candidate in ([Path(explicit)] if explicit else []) + [HERE / "gpu_data" / "trashbags", ROOT / "shared" / "data" / "trashbags",
                                                             ROOT.parent / "shared" / "data" / "trashbags"]:
        if (candidate / "train" / "annotations.json").is_file() and (candidate / "valid" / "annotations.json").is_file():
            return candidate
    return None


def prepare_data(source: Path, target: Path, train_images: int) -> None:
    """Copy the trashbags valid split and the first `train_images` training images (with their
    annotations) to `target`, small enough to travel to the GPU machine with the wheels."""
    for split, limit in (("train", train_images), ("valid", None)):
        doc = json.loads((source / split / "annotations.json").read_text())
        doc["images"] = doc["images"][:limit] if limit else doc["images"]
        keep = {img["id"] for img in doc["images"]}
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
        (target / split / "images").mkdir(parents=True, exist_ok=True)
        for img in doc["images"]:
            if Path(img["file_name"]).is_absolute() or ".." in Path(img["file_name"]).parts:
                raise SystemExit(f"{source / split / 'annotations.json'}: image {img['id']}: file_name {img['file_name']!r} "
                                 "leaves the split's folder")
            shutil.copy2(source / split / img["file_name"], target / split / img["file_name"])
        (target / split / "annotations.json").write_text(json.dumps(doc))
        print(f"{target / split}: {len(doc['images'])} images, {len(doc['annotations'])} annotations")
