"""Extra labelled sets appended to the training split (`data.extra_train`).

An extra set is a COCO JSON (typically written by `seglab pseudo`): its categories are
matched to the training classes *by name*, a category named `ignore` becomes
`ignore_index`, and unannotated pixels are class 0. Its `file_name`s are relative to
`data.root`, like the main splits. The training source becomes the concatenation of
the configured split and the extra sets; an extra image that is also in the
validation split is an error (test or pseudo-labelled images never reach validation).
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

from seglab.data.coco import read_coco
from seglab.data.labels import LabelSpec
from seglab.errors import DataError

IGNORE_NAME = "ignore"


def extra_labels(coco, labels: LabelSpec) -> LabelSpec:
    """The label spec of an extra set: category id -> training class by category name."""
    index = {name: i for i, name in enumerate(labels.classes)}
    mapping = {}
    for cat in coco.categories:
        name = str(cat.get("name"))
        if name == IGNORE_NAME:
            mapping[cat["id"]] = labels.ignore_index
        elif name in index:
            mapping[cat["id"]] = index[name]
        else:
            raise DataError(f"{coco.path}: category {name!r} is not a training class ({', '.join(labels.classes)}) nor 'ignore'")
    return LabelSpec(labels.classes, labels.ignore_index, mapping, labels.task)


class ConcatSource:
    """Several sources read as one, in order; each keeps its own label mapping."""

    def __init__(self, sources: list):
        self.sources = sources
        self.name = " + ".join(s.name for s in sources)
        self.has_masks = all(s.has_masks for s in sources)
        self.offsets = np.cumsum([0] + [len(s) for s in sources]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.sources[k], i - self.offsets[k]

    def sample_id(self, i):
        s, j = self._locate(i)
        return s.sample_id(j)

    def image_path(self, i):
        s, j = self._locate(i)
        return s.image_path(j)

    def original_size(self, i):
        s, j = self._locate(i)
        return s.original_size(j)

    def load_image(self, i):
        s, j = self._locate(i)
        return s.load_image(j)

    def load_mask(self, i):
        s, j = self._locate(i)
        return s.load_mask(j)

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        return [p for s in self.sources for p in s.problems(check_files, deep)]


def open_extra_sources(data_cfg, labels: LabelSpec | None) -> list:
    from seglab.data.sources import CocoSource

    sources = []
    for entry in data_cfg.extra_train:
        path = Path(entry) if Path(entry).is_absolute() else Path(data_cfg.root) / entry
        if labels is None:
            spec = None
        else:
            spec = extra_labels(read_coco(path, data_cfg.root), labels)
        # CocoSource reads its path from a config split; give it one that points at the extra set.
        one = data_cfg.model_copy(update={"train": str(path), "category_map": None, "remap": {}, "classes": None})
        source = CocoSource(one, "train", spec)
        if not source.has_masks:
            raise DataError(f"{path}: data.extra_train set has no 'annotations'")
        sources.append(source)
    return sources


def with_extra_sets(source, cfg, labels: LabelSpec | None):
    """The training source plus `data.extra_train`, checked against the validation split."""
    extras = open_extra_sources(cfg.data, labels)
    if not extras:
        return source
    check_not_in_val(extras, cfg, labels)
    return ConcatSource([source, *extras])


def check_not_in_val(extras: list, cfg, labels) -> None:
    if cfg.data.val is None and cfg.data.format == "coco":
        return
    from seglab.data.sources import SOURCES

    val = SOURCES.get(cfg.data.format, "data.format")(cfg.data, "val", None)
    val_ids = {val.sample_id(i) for i in range(len(val))}
    for extra in extras:
        for i in range(len(extra)):
            if extra.sample_id(i) in val_ids:
                raise DataError(
                    f"{extra.name}: image {extra.sample_id(i)!r} is also in the validation split {val.name}; "
                    "an extra training set must not contain validation images"
                )
