"""Segmentation submissions: competition A's CSV of class maps, and PNG class maps."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from seglab.data.cache import atomic_write_png
from seglab.errors import DataError
from seglab.io import atomic_open
from seglab.submission.registry import WRITERS, WriteContext


@WRITERS.register("coco_csv")
def write_coco_csv(predictions: Iterable, out: Path, ctx: WriteContext) -> int:
    """Competition A: `image_id,PredictionString`, the class map resized (nearest) to
    submission.size and flattened row-major into space-separated class indices."""
    size = tuple(ctx.cfg.submission.size)
    count = 0
    with atomic_open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image_id", "PredictionString"])
        for p in predictions:
            class_map = ctx.kind.class_map(p.output)
            if class_map is None:
                raise DataError(f"--format coco_csv writes class maps; {p.id} has a {ctx.kind.name} prediction (use rle or png)")
            small = cv2.resize(class_map, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            writer.writerow([p.id, " ".join(map(str, small.ravel().tolist()))])
            count += 1
    return count


@WRITERS.register("png")
def write_png_folder(predictions: Iterable, out: Path, ctx: WriteContext) -> int:
    """PNGs at each image's original size, at the image's relative path: a class map
    (multiclass), or, where classes overlap, one 0/255 PNG per class in a folder per image
    (multilabel).

    Written whole or not at all (`seglab.paths.OutputFolder`): into a temporary sibling
    folder that replaces `out` at the end, so a killed predict leaves no folder that looks
    complete and files of an earlier prediction never mix in. Names are the images'
    relative paths, confined to `out`; two images mapping to one name are an error."""
    from seglab.paths import OutputFolder, confined_name

    with OutputFolder(out, "predict --format png") as folder:
        for p in predictions:
            # An id from outside data.root (data.allow_outside_root) is written by its confined form.
            stem = Path(confined_name(p.id)).with_suffix("").as_posix()
            class_map = ctx.kind.class_map(p.output)
            if class_map is None:  # classes overlap: one mask per class
                for name, mask in ctx.kind.class_masks(p.output, ctx.classes):
                    atomic_write_png(folder.path(f"{stem}/{safe_name(name)}.png", f"image {p.id!r}"), mask.astype(np.uint8) * 255)
            elif ctx.palette:
                write_palette_png(folder.path(f"{stem}.png", f"image {p.id!r}"), class_map, len(ctx.classes))
            else:
                atomic_write_png(folder.path(f"{stem}.png", f"image {p.id!r}"), class_map)
            folder.count += 1
    return folder.count


def write_palette_png(path: Path, class_map: np.ndarray, num_classes: int) -> None:
    """A class map as a palette PNG (PIL mode "P"): the stored values are the class indices,
    unchanged (still a class map for PIL / `np.array(Image.open(...))`), and any image viewer
    shows them in the report's class colours instead of near-black greys."""
    from PIL import Image

    from seglab.visualization.figures import class_palette

    if num_classes > 256:
        raise DataError(f"--palette: a palette PNG holds at most 256 classes, the run has {num_classes} (drop --palette)")
    image = Image.fromarray(class_map.astype(np.uint8), mode="P")
    colours = np.zeros((256, 3), np.uint8)
    colours[:num_classes] = class_palette(num_classes)
    colours[num_classes:] = 255  # ignore / out of range: white, as in the panels
    image.putpalette(colours.ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        image.save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def read_coco_csv(path: str | Path, size: tuple[int, int] = (256, 256), expected_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a competition-A submission back, checking every row's shape and, given the
    test split's image ids in order (`expected_ids`), the row count, ids and order."""
    csv.field_size_limit(sys.maxsize)
    rows: dict[str, np.ndarray] = {}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: submission file not found")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["image_id", "PredictionString"]:
            raise DataError(f"{path}: line 1: header is {header}, expected ['image_id', 'PredictionString']")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise DataError(f"{path}: line {line}: expected 2 columns, got {len(row)}")
            if row[0] in rows:
                raise DataError(f"{path}: line {line}: image {row[0]!r} appears twice")
            try:
                values = np.array(row[1].split(), dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}: line {line} ({row[0]}): PredictionString holds a non-integer value") from None
            if values.size != size[0] * size[1]:
                raise DataError(f"{path}: line {line} ({row[0]}): {values.size} values, expected {size[0] * size[1]}")
            rows[row[0]] = values.reshape(size)
    if expected_ids is not None:
        check_rows(path, list(rows), expected_ids)
    return rows


def check_rows(path: Path, ids: list[str], expected_ids: list[str]) -> None:
    """The submission has one row per test image, in the test file's order."""
    have, want_set = set(ids), set(expected_ids)
    if len(ids) != len(expected_ids):
        missing = [i for i in expected_ids if i not in have]
        extra = [i for i in ids if i not in want_set]
        raise DataError(
            f"{path}: {len(ids)} rows, the test split has {len(expected_ids)} images"
            + (f"; missing e.g. {missing[:3]}" if missing else "") + (f"; not in the test split e.g. {extra[:3]}" if extra else "")
        )
    for line, (got, want) in enumerate(zip(ids, expected_ids), start=2):
        if got != want:
            what = "is not in the test split" if got not in want_set else f"is out of order (expected {want!r})"
            raise DataError(f"{path}: line {line}: image {got!r} {what}")
