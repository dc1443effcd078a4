"""Classification output writers: one row per image, in the split's order.

- `maskstatus`: the organiser's `eval/info.csv` copied with `ans` filled (class index),
  rows and other columns kept as they are.
- `id_label`: a generic `id,label` CSV (label = class name).
- `probs`: `id` plus one probability column per class (for later ensembling or analysis).
- `pseudo`: `path,label,confidence` for images whose top probability reaches
  classification.pseudo_threshold; feed it back as data.classification.pseudo_labels.

Every file is written through a temporary file and renamed (seglab.io.atomic_open).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglab.errors import DataError
from seglab.io import atomic_open
from seglab.registry import Registry

WRITERS = Registry("classification submission format")


@dataclass
class WriteContext:
    classes: list[str]
    data: object  # the run's DataConfig
    split: str
    pseudo_threshold: float = 0.9


@WRITERS.register("maskstatus")
def write_info_csv(samples, probs: np.ndarray, out: Path, ctx: WriteContext) -> int:
    """Competition C: info.csv (ImageID, ans) with ans = predicted class index, in info.csv order."""
    answers = {s.id: int(p) for s, p in zip(samples, probs.argmax(1))}
    info = Path(ctx.data.split_path(ctx.split)) / "info.csv" if ctx.data.format == "maskstatus" and ctx.split == "test" else None
    if info is None or not info.is_file():  # not the organiser's test split: write the same two columns
        with atomic_open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "ans"])
            w.writerows([s.id, answers[s.id]] for s in samples)
        return len(samples)
    with open(info, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    if "ans" not in header:
        header.append("ans")
    missing = [r["ImageID"] for r in rows if r["ImageID"].strip() not in answers]
    if missing:
        raise DataError(f"{info}: no prediction for {len(missing)} image(s), e.g. {missing[:3]}")
    with atomic_open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "ans": answers[r["ImageID"].strip()]})
    return len(rows)


@WRITERS.register("id_label")
def write_id_label(samples, probs: np.ndarray, out: Path, ctx: WriteContext) -> int:
    with atomic_open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows([s.id, ctx.classes[int(p)]] for s, p in zip(samples, probs.argmax(1)))
    return len(samples)


@WRITERS.register("probs")
def write_probs(samples, probs: np.ndarray, out: Path, ctx: WriteContext) -> int:
    with atomic_open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + ctx.classes)
        w.writerows([s.id] + [f"{v:.6f}" for v in row] for s, row in zip(samples, probs))
    return len(samples)


@WRITERS.register("pseudo")
def write_pseudo_labels(samples, probs: np.ndarray, out: Path, ctx: WriteContext) -> int:
    """Confident predictions as training labels; paths relative to data.root when they lie under it."""
    root = Path(ctx.data.root).resolve()
    count = 0
    with atomic_open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "confidence"])
        for s, row in zip(samples, probs):
            top = int(row.argmax())
            if row[top] < ctx.pseudo_threshold:
                continue
            path = s.path.resolve()
            rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else os.fspath(path)
            w.writerow([rel, ctx.classes[top], f"{row[top]:.4f}"])
            count += 1
    return count
