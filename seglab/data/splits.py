"""The one splitter: k folds of a training set, written as `folds.csv`.

Used by `seglab data split`, `seglab kfold` and `data.fold` (validate on a fold of
train) alike, for every task and layout. Per sample:

- a group, kept whole in one fold: `kfold.group_regex` on the sample id, a
  `kfold.group_csv` table, else the data's own (polygons: the ID folder; maskstatus: the
  person; csv: `data.csv.group_column`); no group = every sample its own;
- a stratification key: the task's (which classes the sample holds; segmentation images
  hold several, so stratification is multi-label, iterstrat's MultilabelStratifiedKFold),
  or the strata of `kfold.stratify` columns of a per-group metadata table (numeric
  columns cut into quantile bins; `ID001` matches `1`).

`strategy: auto` is stratified_group when the samples have groups, else stratified;
stratified_group stratifies the groups by the union of their samples' keys.
`folds.csv` holds `sample_id,group,fold,stratum`, one row per sample.
"""

from __future__ import annotations

import csv
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from seglab.errors import ConfigError, DataError
from seglab.io import atomic_open

STRATEGIES = ("auto", "random", "stratified", "group", "stratified_group")
FOLDS_HEADER = ["sample_id", "group", "fold", "stratum"]


@dataclass
class Folds:
    ids: list[str]
    groups: list[str]
    fold: np.ndarray
    strategy: str
    strata: list[str] | None = None

    @property
    def k(self) -> int:
        return int(self.fold.max()) + 1

    def summary(self) -> list[dict]:
        out = []
        for k in range(self.k):
            row = {"images": int((self.fold == k).sum()), "groups": len({g for g, f in zip(self.groups, self.fold) if f == k})}
            if self.strata:
                row["strata"] = dict(Counter(s for s, f in zip(self.strata, self.fold) if f == k))
            out.append(row)
        return out

    def write(self, path: Path) -> Path:
        with atomic_open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FOLDS_HEADER)
            for i, sid in enumerate(self.ids):
                w.writerow([sid, self.groups[i], int(self.fold[i]), self.strata[i] if self.strata else ""])
        return path


def read_folds(path: Path, ids: list[str]) -> np.ndarray:
    """The fold of each of `ids` from a folds.csv; every id must have exactly one row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: folds file not found (data.folds; write one with `seglab data split`)")
    table: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or header[:3] != FOLDS_HEADER[:3]:
                raise DataError(f"{path}: line 1: header is {header}, expected {FOLDS_HEADER}")
            for line, row in enumerate(reader, start=2):
                if len(row) < 3 or not row[2].strip().isdigit():
                    raise DataError(f"{path}: line {line}: expected sample_id,group,fold with an integer fold")
                if row[0] in table:
                    raise DataError(f"{path}: line {line}: sample {row[0]!r} appears twice")
                table[row[0]] = int(row[2])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e})") from None
    missing = [sid for sid in ids if sid not in table]
    if missing:
        raise DataError(f"{path}: no fold for {len(missing)} sample(s) of the training split, e.g. {missing[:3]} "
                        "(folds of another data set? write them again with `seglab data split`)")
    return np.array([table[sid] for sid in ids], dtype=np.int64)


# ------------------------------------------------------------------ assigning folds


def assign_folds(source, labels, task, cfg, k: int | None = None, seed: int | None = None) -> Folds:
    """Folds of every sample of `source` from the config's kfold section (and seed)."""
    kcfg = cfg.kfold
    k = k or kcfg.folds
    seed = cfg.seed if seed is None else seed
    ids = [source.sample_id(i) for i in range(len(source))]
    if not ids:
        raise DataError(f"{source.name}: empty split, nothing to split")
    if len(set(ids)) != len(ids):
        twice = [i for i, n in Counter(ids).items() if n > 1]
        raise DataError(f"{source.name}: sample {twice[0]!r} appears twice; cannot assign samples to folds")
    groups = group_keys(source, ids, kcfg, cfg.data)
    strategy = kcfg.strategy
    if strategy == "auto":
        strategy = "stratified_group" if groups is not None else "stratified"
    if strategy in ("group", "stratified_group") and groups is None:
        raise ConfigError(f"kfold.strategy {strategy}: the samples have no groups (set kfold.group_regex or kfold.group_csv)")
    strata = None
    if strategy in ("stratified", "stratified_group"):
        if kcfg.stratify:
            by_group = strata_for_groups(groups or ids, read_table(cfg.data.resolve(kcfg.metadata)), kcfg.metadata_id_column,
                                         kcfg.stratify, kcfg.bins, str(cfg.data.resolve(kcfg.metadata)))
            strata = [by_group[g] for g in (groups or ids)]
            names = sorted(set(strata))
            key = np.array([[s == n for n in names] for s in strata], dtype=np.int64)
        else:
            key = np.asarray(task.stratification_key(source, labels), dtype=np.int64)
    else:
        key = np.zeros((len(ids), 1), dtype=np.int64)
    fold = make_folds(key, k, strategy, seed, groups)
    return Folds(ids, groups or list(ids), fold, strategy, strata)


def group_keys(source, ids: list[str], kcfg, data_cfg) -> list[str] | None:
    if kcfg.group_regex:
        return groups_from_regex(ids, kcfg.group_regex)
    if kcfg.group_csv:
        return groups_from_csv(ids, data_cfg.resolve(kcfg.group_csv), kcfg.group_csv_id, kcfg.group_column)
    own = [source.group(i) for i in range(len(ids))]
    if all(g is None for g in own):
        return None
    return [g if g is not None else sid for g, sid in zip(own, ids)]


def groups_from_regex(ids: list[str], pattern: str) -> list[str]:
    rx = re.compile(pattern)
    out = []
    for sid in ids:
        m = rx.search(sid)
        if m is None:
            raise DataError(f"kfold.group_regex {pattern!r} does not match sample {sid!r}")
        out.append(m.group(1) if m.groups() else m.group(0))
    return out


def groups_from_csv(ids: list[str], path: Path, id_column: str, group_column: str) -> list[str]:
    rows = read_table(path)
    for col in (id_column, group_column):
        if rows and col not in rows[0]:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(rows[0])})")
    table = {row[id_column]: row[group_column] for row in rows}
    out = []
    for sid in ids:
        key = sid if sid in table else Path(sid).stem if Path(sid).stem in table else Path(sid).name
        if key not in table:
            raise DataError(f"{path}: no row for sample {sid!r} (column {id_column!r})")
        out.append(table[key])
    return out


def make_folds(key: np.ndarray, k: int, strategy: str, seed: int, groups: list[str] | None = None) -> np.ndarray:
    """Fold number (0..k-1) of every sample: the sample is in that fold's validation set.

    key: [N, K] 0/1, what stratification keeps balanced (which classes each sample holds).
    """
    n = len(key)
    if n < k:
        raise DataError(f"k-fold: {n} samples cannot make {k} folds")
    fold = np.full(n, -1, dtype=np.int64)
    x = np.zeros((n, 1))
    if strategy == "random":
        from sklearn.model_selection import KFold

        splits = KFold(k, shuffle=True, random_state=seed).split(x)
    elif strategy == "stratified":
        splits = _multilabel_splits(key, k, seed)
    elif strategy in ("group", "stratified_group"):
        names, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        if len(names) < k:
            raise DataError(f"k-fold: {len(names)} groups cannot make {k} folds")
        if strategy == "group":
            from sklearn.model_selection import GroupKFold

            splits = GroupKFold(k, shuffle=True, random_state=seed).split(x, groups=inverse)
        else:
            group_key = np.zeros((len(names), key.shape[1]), dtype=key.dtype)
            np.maximum.at(group_key, inverse, key)
            group_fold = np.full(len(names), -1)
            for f, (_, val) in enumerate(_multilabel_splits(group_key, k, seed)):
                group_fold[val] = f
            return group_fold[inverse]
    else:
        raise ConfigError(f"unknown k-fold strategy {strategy!r} (use one of {', '.join(STRATEGIES)})")
    for f, (_, val) in enumerate(splits):
        fold[val] = f
    return fold


def _multilabel_splits(key: np.ndarray, k: int, seed: int):
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y = np.asarray(key, dtype=np.int64)
    return MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y)


# ------------------------------------------------------------------ metadata tables


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV or XLSX table as {column: text}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: table not found")
    if path.suffix.lower() == ".xlsx":
        return _read_xlsx(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str) or v is None}
                    for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e})") from None


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


def strata_for_groups(groups, table: list[dict[str, str]], id_column: str, columns, bins: int = 3,
                      where: str = "metadata") -> dict[str, str]:
    """group -> stratum label ("sex=F|age1"), one per group, from the table's columns."""
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
