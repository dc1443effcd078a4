"""Cross-validation splits of a training set: random, stratified, group, stratified-group.

Segmentation images carry several classes, so stratification is multi-label: each
image is the vector "which classes appear in it", split with iterative
stratification (iterstrat's MultilabelStratifiedKFold) so that rare classes land in
every fold. With a group key (a regex on the sample id, or a column of a CSV) images
of one group (one patient, one person's two hands, one capture batch) stay in one
fold; stratified-group stratifies the groups by the union of their images' classes.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seglab.errors import ConfigError, DataError

STRATEGIES = ("auto", "random", "stratified", "group", "stratified_group")


class KFoldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    folds: int = Field(5, ge=2, description="k-fold: number of folds (`seglab kfold --folds` overrides)")
    strategy: Literal["auto", "random", "stratified", "group", "stratified_group"] = Field(
        "auto", description="k-fold split: auto = stratified_group with a group key, else stratified (multi-label on classes present)"
    )
    group_regex: str | None = Field(
        None, description="k-fold group key: regex on the sample id (file_name); group = first capture group, e.g. '^(ID\\d+)/'"
    )
    group_csv: str | None = Field(None, description="k-fold group key from a CSV (relative to data.root) with an id and a group column")
    group_csv_id: str = Field("file_name", description="group_csv: column holding the sample id (file_name, or its stem)")
    group_column: str | None = Field(None, description="group_csv: column holding the group")

    @field_validator("group_regex")
    @classmethod
    def _regex(cls, v):
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.group_csv and not self.group_column:
            raise ValueError("kfold.group_csv needs kfold.group_column")
        if self.group_csv and self.group_regex:
            raise ValueError("give kfold.group_regex or kfold.group_csv, not both")
        if self.strategy in ("group", "stratified_group") and not (self.group_regex or self.group_csv):
            raise ValueError(f"kfold.strategy {self.strategy} needs a group key (kfold.group_regex or kfold.group_csv)")
        return self

    @property
    def has_groups(self) -> bool:
        return bool(self.group_regex or self.group_csv)

    def resolved_strategy(self) -> str:
        if self.strategy != "auto":
            return self.strategy
        return "stratified_group" if self.has_groups else "stratified"


# ------------------------------------------------------------------ group keys


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
    if not path.is_file():
        raise DataError(f"{path}: kfold.group_csv not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for col in (id_column, group_column):
            if col not in (reader.fieldnames or []):
                raise DataError(f"{path}: no column {col!r} (columns: {reader.fieldnames})")
        table = {row[id_column]: row[group_column] for row in reader}
    out = []
    for sid in ids:
        key = sid if sid in table else Path(sid).stem if Path(sid).stem in table else Path(sid).name
        if key not in table:
            raise DataError(f"{path}: no row for sample {sid!r} (column {id_column!r})")
        out.append(table[key])
    return out


def group_keys(ids: list[str], kcfg: KFoldConfig, root: str | Path) -> list[str] | None:
    if kcfg.group_regex:
        return groups_from_regex(ids, kcfg.group_regex)
    if kcfg.group_csv:
        path = Path(kcfg.group_csv)
        return groups_from_csv(ids, path if path.is_absolute() else Path(root) / path, kcfg.group_csv_id, kcfg.group_column)
    return None


# ------------------------------------------------------------------ splitting


def make_folds(presence: np.ndarray, k: int, strategy: str, seed: int, groups: list[str] | None = None) -> np.ndarray:
    """Fold number (0..k-1) of every sample: the sample is in that fold's validation set.

    presence: [N, C] 0/1, which classes appear in each sample.
    """
    n = len(presence)
    if n < k:
        raise DataError(f"k-fold: {n} images cannot make {k} folds")
    fold = np.full(n, -1, dtype=np.int64)
    x = np.zeros((n, 1))
    if strategy == "random":
        from sklearn.model_selection import KFold

        splits = KFold(k, shuffle=True, random_state=seed).split(x)
    elif strategy == "stratified":
        splits = _multilabel_splits(presence, k, seed)
    elif strategy in ("group", "stratified_group"):
        if groups is None:
            raise ConfigError(f"kfold.strategy {strategy} needs a group key")
        names, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        if len(names) < k:
            raise DataError(f"k-fold: {len(names)} groups cannot make {k} folds")
        if strategy == "group":
            from sklearn.model_selection import GroupKFold

            splits = GroupKFold(k).split(x, groups=inverse)
        else:
            group_presence = np.zeros((len(names), presence.shape[1]), dtype=presence.dtype)
            np.maximum.at(group_presence, inverse, presence)
            group_fold = np.full(len(names), -1)
            for f, (_, val) in enumerate(_multilabel_splits(group_presence, k, seed)):
                group_fold[val] = f
            return group_fold[inverse]
    else:
        raise ConfigError(f"unknown k-fold strategy {strategy!r} (use one of {', '.join(STRATEGIES)})")
    for f, (_, val) in enumerate(splits):
        fold[val] = f
    return fold


def _multilabel_splits(presence: np.ndarray, k: int, seed: int):
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y = np.asarray(presence, dtype=np.int64)
    # A class present in every image (background) carries no information; iterstrat does not mind it.
    return MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y)


def class_presence(source, labels) -> np.ndarray:
    """[N, C] 0/1: which classes appear in each image of a source.

    For COCO it reads the annotations' categories (no image or mask is decoded);
    otherwise the label maps.
    """
    n, c = len(source), labels.num_classes
    out = np.zeros((n, c), dtype=np.int64)
    coco = getattr(source, "coco", None)
    for i in range(n):
        if coco is not None:
            anns = coco.annotations.get(coco.images[i]["id"], [])
            classes = {labels.source_to_class.get(a.get("category_id"), labels.ignore_index) for a in anns}
        else:
            classes = set(np.unique(source.load_mask(i)).tolist())
        for cls in classes:
            if 0 <= cls < c:
                out[i, cls] = 1
    return out
