"""Classification submissions: one row per image, in the split's order.

- `maskstatus`: the organiser's `eval/info.csv` copied with `ans` filled (class index),
  rows and other columns kept as they are.
- `id_label`: a generic `id,label` CSV (label = class name).
- `probs`: `id` plus one probability column per class (for later ensembling or analysis).
"""

from __future__ import annotations

import csv
from pathlib import Path

from seglab.errors import DataError
from seglab.io import atomic_open
from seglab.submission.registry import WRITERS, WriteContext


@WRITERS.register("maskstatus")
def write_info_csv(predictions, out: Path, ctx: WriteContext) -> int:
    """Competition C: info.csv (ImageID, ans) with ans = predicted class index, in info.csv order."""
    answers = {p.id: int(p.output) for p in predictions}
    data = ctx.cfg.data
    info = Path(data.split_path(ctx.split)) / "info.csv" if data.format == "maskstatus" and ctx.split == "test" else None
    if info is None or not info.is_file():  # not the organiser's test split: write the same two columns
        with atomic_open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "ans"])
            w.writerows([image_id, ans] for image_id, ans in answers.items())
        return len(answers)
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
def write_id_label(predictions, out: Path, ctx: WriteContext) -> int:
    """`id,label`: each image's predicted class name."""
    count = 0
    with atomic_open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for p in predictions:
            w.writerow([p.id, ctx.classes[int(p.output)]])
            count += 1
    return count


@WRITERS.register("probs")
def write_probs(predictions, out: Path, ctx: WriteContext) -> int:
    """`id` plus one probability column per class (for later ensembling or analysis)."""
    count = 0
    with atomic_open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + list(ctx.classes))
        for p in predictions:
            w.writerow([p.id] + [f"{v:.6f}" for v in p.probs.tolist()])
            count += 1
    return count
