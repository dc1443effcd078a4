"""Competition B submissions: `image_name,class,rle`, one row per image x class.

RLE is the Kaggle convention: the mask at its original size is flattened row-major
(C order), and the runs of 1s are written as "start length" pairs with 1-based
starts, separated by spaces; an empty mask is an empty string. `image_name` is the
image's file name (no ID folder), as the organiser's sample submission has it.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence

import numpy as np

from seglab.errors import DataError
from seglab.io import atomic_open
from seglab.submission.registry import WRITERS, WriteContext

HEADER = ["image_name", "class", "rle"]


def encode_rle(mask: np.ndarray) -> str:
    """Boolean [H, W] -> "start length ..." (row-major, 1-based starts)."""
    pixels = np.concatenate([[0], np.asarray(mask, dtype=np.uint8).ravel(order="C"), [0]])
    runs = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs.tolist()))


def decode_rle(rle: str, size: tuple[int, int], where: str = "rle") -> np.ndarray:
    """ "start length ..." -> boolean [H, W]; malformed, overlapping or out-of-range runs are errors."""
    h, w = size
    values = rle.split()
    if len(values) % 2:
        raise DataError(f"{where}: odd number of values ({len(values)}); expected start/length pairs")
    try:
        numbers = np.array(values, dtype=np.int64)
    except ValueError:
        raise DataError(f"{where}: non-integer value in the RLE") from None
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if len(starts):
        if starts.min() < 0 or lengths.min() < 1:
            raise DataError(f"{where}: starts must be >= 1 and lengths >= 1")
        ends = starts + lengths
        if ends.max() > h * w:
            raise DataError(f"{where}: a run ends at pixel {int(ends.max())}, beyond the {h}x{w} image")
        if (starts[1:] < ends[:-1]).any():
            raise DataError(f"{where}: runs are not sorted or overlap")
    flat = np.zeros(h * w + 1, dtype=np.int8)
    np.add.at(flat, starts, 1)
    np.add.at(flat, starts + lengths, -1)
    return np.cumsum(flat[:-1]).astype(bool).reshape(h, w)


@WRITERS.register("rle")
def write_rle_csv(predictions: Iterable, out: Path, ctx: WriteContext) -> int:
    """Competition B: `image_name,class,rle` at the original size, rows image by image in class
    order: every class a decision has a mask of (`kind.class_masks`; a class map's Background,
    the rest of the image, has no row)."""
    count = 0
    with atomic_open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for p in predictions:
            name = Path(p.id).name
            for cls, mask in ctx.kind.class_masks(np.asarray(p.output), list(ctx.classes)):
                writer.writerow([name, cls, encode_rle(mask)])
            count += 1
    return count


def iter_rle_csv(path: str | Path, size: tuple[int, int]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(image_name, class, mask [H, W]) for every row, checking the header and each RLE."""
    csv.field_size_limit(sys.maxsize)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != HEADER:
            raise DataError(f"{path}: line 1: header is {header}, expected {HEADER}")
        seen = set()
        for line, row in enumerate(reader, start=2):
            if len(row) != 3:
                raise DataError(f"{path}: line {line}: expected 3 columns, got {len(row)}")
            if (row[0], row[1]) in seen:
                raise DataError(f"{path}: line {line}: second row for image {row[0]!r}, class {row[1]!r}")
            seen.add((row[0], row[1]))
            yield row[0], row[1], decode_rle(row[2], size, f"{path}: line {line} ({row[0]}, {row[1]})")


def read_rle_csv(path: str | Path, size: tuple[int, int], classes: Sequence[str]) -> dict[str, np.ndarray]:
    """image_name -> C x H x W booleans in `classes` order (a class with no row is empty)."""
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, np.ndarray] = {}
    for name, cls, mask in iter_rle_csv(path, size):
        if cls not in index:
            raise DataError(f"{path}: image {name!r}: unknown class {cls!r}")
        out.setdefault(name, np.zeros((len(classes), *size), dtype=bool))[index[cls]] = mask
    return out


def decode_to_pngs(path: str | Path, out_dir: str | Path, size: tuple[int, int]) -> int:
    """`seglab data rle-decode`: one 0/255 PNG per row, OUT/<image stem>/<class>.png, written
    whole or not at all (see `seglab.paths.OutputFolder`); image names are confined to OUT."""
    from seglab.data.cache import atomic_write_png
    from seglab.paths import OutputFolder, outside_problem

    with OutputFolder(out_dir, "data rle-decode") as folder:
        for line, (name, cls, mask) in enumerate(iter_rle_csv(path, size), start=2):
            where = f"{path}: line {line} ({name!r}, {cls!r})"
            problem = outside_problem(name)
            if problem:
                raise DataError(f"{where}: image name {problem}; nothing was written")
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cls)
            stem = PurePosixPath(name.replace("\\", "/")).stem
            atomic_write_png(folder.path(f"{stem}/{safe}.png", where), mask.astype(np.uint8) * 255)
            folder.count += 1
    return folder.count
