"""Sources made of other sources: a fold of one (`data.fold`), and the training split
plus extra labelled sets (`data.extra_train`).

An extra set is a COCO JSON (segmentation; typically written by `seglab pseudo`) or a
`path,label` CSV (classification). COCO categories are matched to the training classes
*by name*, a category named `ignore` becomes `ignore_index`, unannotated pixels are
class 0; file names are relative to `data.root`, like the main splits. An extra image
that is also in the validation split is an error (test or pseudo-labelled images never
reach validation).
"""

from __future__ import annotations

import bisect

import numpy as np

from seglab.data.labels import LabelSpec
from seglab.data.sources.base import Source
from seglab.data.sources.classification import LabelledCsv
from seglab.data.sources.coco import CocoSource, read_coco
from seglab.errors import DataError
from seglab.paths import split_folders

IGNORE_NAME = "ignore"


class _Delegating(Source):
    """Forwards every per-sample question of `Source` to (source, local index) pairs."""

    def _locate(self, i: int):
        raise NotImplementedError

    def sample_id(self, i):
        s, j = self._locate(i)
        return s.sample_id(j)

    def group(self, i):
        s, j = self._locate(i)
        return s.group(j)

    def image_path(self, i):
        s, j = self._locate(i)
        return s.image_path(j)

    def original_size(self, i):
        s, j = self._locate(i)
        return s.original_size(j)

    def load_image(self, i):
        s, j = self._locate(i)
        return s.load_image(j)

    def load_target(self, i):
        s, j = self._locate(i)
        return s.load_target(j)

    def load_instances(self, i):
        s, j = self._locate(i)
        return s.load_instances(j)

    def target_stamp(self, i):
        s, j = self._locate(i)
        return s.target_stamp(j)

    def classes_present(self, i):
        s, j = self._locate(i)
        return s.classes_present(j)

    def annotation_masks(self, i):
        s, j = self._locate(i)
        return s.annotation_masks(j)


class SubsetSource(_Delegating):
    """Some samples of a source, in its order (a fold of the training split)."""

    def __init__(self, source, indices: list[int], name: str):
        self.source, self.indices, self.name = source, list(indices), name
        self.labels, self.has_targets, self.cache_key = source.labels, source.has_targets, source.cache_key

    def __len__(self) -> int:
        return len(self.indices)

    def _locate(self, i: int):
        return self.source, self.indices[i]

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        return self.source.problems(check_files, deep)


class ConcatSource(_Delegating):
    """Several sources read as one, in order; each keeps its own label mapping."""

    def __init__(self, sources: list):
        self.sources = sources
        self.name = " + ".join(s.name for s in sources)
        self.labels = sources[0].labels
        self.has_targets = all(s.has_targets for s in sources)
        self.cache_key = tuple(k for s in sources for k in s.cache_key)
        self.offsets = np.cumsum([0] + [len(s) for s in sources]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.sources[k], i - self.offsets[k]

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        return [p for s in self.sources for p in s.problems(check_files, deep)]


def extra_labels(coco, labels: LabelSpec) -> LabelSpec:
    """The label spec of an extra COCO set: category id -> training class by category name."""
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
    return LabelSpec(labels.classes, labels.ignore_index, mapping, labels.target, labels.facets)


def open_extra_sources(data_cfg, labels: LabelSpec | None) -> list:
    sources = []
    for entry in data_cfg.extra_train:
        path = data_cfg.resolve(entry)
        if path.suffix.lower() == ".csv":
            if labels is None:
                continue  # read once the class list is known
            sources.append(LabelledCsv(data_cfg, path, labels))
            continue
        spec = None if labels is None else extra_labels(read_coco(path, data_cfg.root), labels)
        # CocoSource reads its path from a config split; give it one that points at the extra set.
        one = data_cfg.model_copy(update={"train": str(path), "remap": {}, "classes": None,
                                       "corrections": None})  # corrections name the organiser's data, not extra sets
        source = CocoSource(one, "train", spec)
        if not data_cfg.allow_outside_root:
            # A pseudo-label set names images of the config's own splits (e.g. a test folder
            # beside data.root): those folders, and only those, may be read from it.
            source.allow_outside_root = tuple(split_folders(data_cfg))
        if not source.has_targets:
            raise DataError(f"{path}: data.extra_train set has no 'annotations'")
        sources.append(source)
    return sources


def with_extra_sets(source, extras: list, val_ids: set[str] | None):
    """The training source plus the extra sets, none of which may hold a validation image."""
    if not extras:
        return source
    for extra in extras:
        for i in range(len(extra)):
            if val_ids is not None and extra.sample_id(i) in val_ids:
                raise DataError(
                    f"{extra.name}: image {extra.sample_id(i)!r} is also in the validation split; "
                    "an extra training set must not contain validation images"
                )
    return ConcatSource([source, *extras])
