"""`seglab data split`: k folds that keep one person's images together.

The group of an image is its ID folder (the first folder of its sample id; an image
with no folder is its own group). Without a metadata table the folds come from
GroupKFold; with one (`--metadata meta.csv --stratify sex,age`), from
StratifiedGroupKFold on the per-person strata: text columns as they are, numeric
columns cut into quantile bins. Metadata IDs match folders exactly, or by their
number (`ID001` <-> `1`), as in the hand-bone metadata table.

Fold files are written in the split form the data format reads:
- polygons / labelmap: `fold{k}_train.txt`, `fold{k}_val.txt` (one sample id per line);
- coco: `fold{k}_train.json`, `fold{k}_val.json` (the pool's images and annotations);
plus `folds.csv` (sample_id, group, fold, stratum) for the record.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree

import numpy as np

from seglab.errors import ConfigError, DataError
from seglab.io import write_text


def sample_group(sample_id: str) -> str:
    parts = sample_id.replace("\\", "/").split("/")
    return parts[0] if len(parts) > 1 else sample_id


def group_folds(groups: Sequence[str], folds: int, seed: int = 0, strata: Sequence[str] | None = None) -> np.ndarray:
    """Fold index per sample; all samples of a group land in the same fold."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = len(set(groups))
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if n_groups < folds:
        raise DataError(f"{n_groups} groups cannot fill {folds} folds")
    x = np.zeros(len(groups))
    if strata is None:
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(x, groups=groups)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(x, list(strata), groups=groups)
    fold = np.full(len(groups), -1)
    for k, (_, val) in enumerate(splits):
        fold[val] = k
    return fold


# ------------------------------------------------------------------ metadata


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV or XLSX table as {column: text}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metadata table not found")
    if path.suffix.lower() == ".xlsx":
        return _read_xlsx(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


def _read_xlsx(path: Path) -> list[dict[str, str]]:
    """The first sheet of an .xlsx workbook (values only), with the standard library."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    try:
        with zipfile.ZipFile(path) as z:
            shared = []
            if "xl/sharedStrings.xml" in z.namelist():
                root = ElementTree.fromstring(z.read("xl/sharedStrings.xml"))
                shared = ["".join(t.text or "" for t in si.iter(f"{{{ns['m']}}}t")) for si in root.findall("m:si", ns)]
            sheets = sorted(n for n in z.namelist() if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", n))
            if not sheets:
                raise DataError(f"{path}: no worksheet in the workbook")
            sheet = ElementTree.fromstring(z.read(sheets[0]))
    except (zipfile.BadZipFile, ElementTree.ParseError) as e:
        raise DataError(f"{path}: not a readable .xlsx file ({e})") from None
    rows: list[list[str]] = []
    for row in sheet.iter(f"{{{ns['m']}}}row"):
        values: dict[int, str] = {}
        for cell in row.findall("m:c", ns):
            col = _column_index(cell.get("r", ""))
            kind = cell.get("t")
            if kind == "inlineStr":
                text = "".join(t.text or "" for t in cell.iter(f"{{{ns['m']}}}t"))
            else:
                v = cell.find("m:v", ns)
                text = "" if v is None or v.text is None else v.text
                if kind == "s" and text:
                    text = shared[int(text)]
            values[col if col is not None else len(values)] = text.strip()
        rows.append([values.get(i, "") for i in range(max(values) + 1)] if values else [])
    rows = [r for r in rows if any(r)]
    if not rows:
        return []
    header = rows[0]
    return [{h: (r[i] if i < len(r) else "") for i, h in enumerate(header) if h} for r in rows[1:]]


def _column_index(ref: str) -> int | None:
    letters = re.match(r"[A-Z]+", ref)
    if not letters:
        return None
    n = 0
    for ch in letters.group():
        n = n * 26 + ord(ch) - 64
    return n - 1


def _number(text: str) -> int | None:
    digits = re.sub(r"\D", "", text)
    return int(digits) if digits else None


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def strata_for_groups(groups: Sequence[str], table: list[dict[str, str]], id_column: str,
                      columns: Sequence[str], bins: int = 3, where: str = "metadata") -> dict[str, str]:
    """group -> stratum label ("F|age1"), one per group, from the table's columns."""
    if not table:
        raise DataError(f"{where}: the table has no rows")
    known = list(table[0])
    for col in (id_column, *columns):
        if col not in known:
            raise DataError(f"{where}: no column {col!r} (columns: {', '.join(known)})")
    by_id = {row[id_column]: row for row in table}
    by_number = {_number(k): row for k, row in by_id.items() if _number(k) is not None}
    rows, missing = {}, []
    for g in sorted(set(groups)):
        row = by_id.get(g) or by_number.get(_number(g))
        if row is None:
            missing.append(g)
        else:
            rows[g] = row
    if missing:
        raise DataError(f"{where}: no row for {len(missing)} group(s), e.g. {missing[:5]} (column {id_column!r})")
    labels = {g: [] for g in rows}
    for col in columns:
        values = {g: rows[g][col] for g in rows}
        numbers = {g: _as_float(v) for g, v in values.items()}
        if all(n is not None for n in numbers.values()) and len(set(numbers.values())) > bins:
            edges = np.quantile(list(numbers.values()), np.linspace(0, 1, bins + 1)[1:-1])
            for g, n in numbers.items():
                labels[g].append(f"{col}{int(np.searchsorted(edges, n, side='right'))}")
        else:
            for g, v in values.items():
                labels[g].append(f"{col}={v}")
    return {g: "|".join(parts) for g, parts in labels.items()}


# ------------------------------------------------------------------ writing


def write_folds(source, fmt: str, out: str | Path, folds: int, seed: int = 0, group_by: str = "folder",
                metadata: str | Path | None = None, id_column: str = "ID", stratify: Sequence[str] = (),
                bins: int = 3) -> dict:
    """Assign the source's samples to folds and write the fold files; returns a summary."""
    out = Path(out)
    ids = [source.sample_id(i) for i in range(len(source))]
    if not ids:
        raise DataError(f"{source.name}: empty split, nothing to split")
    if group_by == "folder":
        groups = [source.group(i) if hasattr(source, "group") else sample_group(s) for i, s in enumerate(ids)]
    elif group_by == "none":
        groups = list(ids)
    else:
        raise ConfigError(f"--group-by must be 'folder' or 'none', got {group_by!r}")
    strata = None
    if stratify:
        if metadata is None:
            raise ConfigError("--stratify needs --metadata (a CSV or XLSX table with one row per ID)")
        by_group = strata_for_groups(groups, read_table(metadata), id_column, stratify, bins, str(metadata))
        strata = [by_group[g] for g in groups]
    fold = group_folds(groups, folds, seed, strata)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for k in range(folds):
        train_idx = [i for i in range(len(ids)) if fold[i] != k]
        val_idx = [i for i in range(len(ids)) if fold[i] == k]
        if fmt == "coco":
            files[k] = _write_coco_fold(source, out, k, train_idx, val_idx)
        else:
            for name, idx in (("train", train_idx), ("val", val_idx)):
                write_text(out / f"fold{k}_{name}.txt", "".join(f"{ids[i]}\n" for i in idx))
            files[k] = (out / f"fold{k}_train.txt", out / f"fold{k}_val.txt")
    rows = ["sample_id,group,fold,stratum\n"] + [
        f"{_csv(ids[i])},{_csv(groups[i])},{int(fold[i])},{_csv(strata[i] if strata else '')}\n" for i in range(len(ids))
    ]
    write_text(out / "folds.csv", "".join(rows))
    summary = {"folds": folds, "images": len(ids), "groups": len(set(groups)),
               "per_fold": [{"images": int((fold == k).sum()), "groups": len({g for g, f in zip(groups, fold) if f == k}),
                             **({"strata": dict(Counter(s for s, f in zip(strata, fold) if f == k))} if strata else {})}
                            for k in range(folds)],
               "files": {k: [str(p) for p in v] for k, v in files.items()}, "table": str(out / "folds.csv")}
    return summary


def _csv(text: str) -> str:
    return f'"{text}"' if any(ch in text for ch in ',"\n') else text


def _write_coco_fold(source, out: Path, k: int, train_idx: list[int], val_idx: list[int]) -> tuple[Path, Path]:
    doc = json.loads(source.coco.path.read_text())
    images = doc["images"]
    anns_by_image: dict = {}
    for ann in doc.get("annotations", []):
        anns_by_image.setdefault(ann.get("image_id"), []).append(ann)
    paths = []
    for name, idx in (("train", train_idx), ("val", val_idx)):
        chosen = [images[i] for i in idx]
        part = {key: value for key, value in doc.items() if key not in ("images", "annotations")}
        part["images"] = chosen
        if "annotations" in doc:
            part["annotations"] = [a for img in chosen for a in anns_by_image.get(img["id"], [])]
        path = out / f"fold{k}_{name}.json"
        write_text(path, json.dumps(part))
        paths.append(path)
    return tuple(paths)
