"""From the organiser's label ids to training class indices, explicitly.

A `LabelSpec` says which source label (COCO category id, PNG pixel value, polygon label)
becomes which training class, and in which form targets come (`target`, the name of a
target kind, `seglab.kinds`: "class_map" [H, W], "binary_masks" C x H x W booleans, or
"class", one per image).
It is resolved once from the config and the data, saved in the run folder as
labels.json, and used by every dataset, metric and writer. `facets` name parts of a
composite class (competition C: mask, gender and age band), each a value per class.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from seglab.errors import ConfigError


@dataclass(frozen=True)
class LabelSpec:
    classes: tuple[str, ...]
    ignore_index: int
    source_to_class: dict[int, int] = field(default_factory=dict)
    target: str = "class_map"
    facets: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def kind(self):
        """The target kind object (`seglab.kinds`) these labels' targets are."""
        from seglab.kinds import target_kind

        return target_kind(self.target)

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "classes": list(self.classes),
            "ignore_index": self.ignore_index,
            "source_to_class": {str(k): v for k, v in sorted(self.source_to_class.items())},
            **({"facets": {k: list(v) for k, v in self.facets.items()}} if self.facets else {}),
        }

    @classmethod
    def from_json(cls, d: dict) -> "LabelSpec":
        return cls(
            classes=tuple(d["classes"]),
            ignore_index=int(d["ignore_index"]),
            source_to_class={int(k): int(v) for k, v in d.get("source_to_class", {}).items()},
            target=d.get("target", "class_map"),
            facets={k: tuple(v) for k, v in d.get("facets", {}).items()},
        )


def apply_remap(classes: list[str], mapping: dict[int, int | str], remap: dict[str, str], ignore_index: int) -> tuple[list[str], dict[int, int]]:
    """Drop the classes named in `remap`, send their labels to the target class or 'ignore', renumber."""
    for src, dst in remap.items():
        if src not in classes:
            raise ConfigError(f"data.remap: {src!r} is not a class (classes: {', '.join(classes)})")
        if dst != "ignore" and (dst not in classes or dst in remap):
            raise ConfigError(f"data.remap.{src}: target {dst!r} must be a kept class or 'ignore'")
    kept = [c for c in classes if c not in remap]
    new_index = {name: i for i, name in enumerate(kept)}

    def final(old: int | str) -> int:
        if old == "ignore":
            return ignore_index
        name = classes[old]
        target = remap.get(name, name)
        return ignore_index if target == "ignore" else new_index[target]

    return kept, {src: final(old) for src, old in mapping.items()}


def _check_classes(classes: list[str], ignore_index: int) -> None:
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise ConfigError(f"data.classes: duplicate class names {dup}")
    if len(classes) < 2:
        raise ConfigError("data.classes: need at least 2 classes (background and one object class)")
    if ignore_index < len(classes):
        raise ConfigError(f"data.ignore_index {ignore_index} collides with class index {ignore_index} ({classes[ignore_index]!r})")


def resolve_coco_labels(data_cfg, categories: list[dict], source: str, category_map: dict | None = None) -> LabelSpec:
    """Category id -> class index, from `category_map` (data.coco.category_map) if given, else
    by class name (data.classes), else Background + JSON order."""
    cat_ids = [c["id"] for c in categories]
    dup = sorted({i for i in cat_ids if cat_ids.count(i) > 1})
    if dup:
        from seglab.errors import DataError

        raise DataError(f"{source}: category id {dup[0]} appears more than once in 'categories'")
    names = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    classes = list(data_cfg.classes) if data_cfg.classes else ["Background"] + [names[i] for i in cat_ids]
    _check_classes(classes, data_cfg.ignore_index)

    if category_map is not None:
        mapping: dict[int, int | str] = dict(category_map)
        unmapped = [i for i in cat_ids if i not in mapping]
        if unmapped:
            listed = ", ".join(f"{i} ({names[i]!r})" for i in unmapped)
            raise ConfigError(f"data.coco.category_map: no entry for category id {listed} of {source}")
        stray = [i for i in mapping if i not in names]
        if stray:
            raise ConfigError(f"data.coco.category_map: category id {stray} is not in the categories of {source} (ids: {cat_ids})")
        for cid, idx in mapping.items():
            if idx != "ignore" and not 0 <= idx < len(classes):
                raise ConfigError(f"data.coco.category_map.{cid}: class index {idx} out of range for {len(classes)} classes")
    elif data_cfg.classes:
        missing = [names[i] for i in cat_ids if names[i] not in classes]
        if missing:
            raise ConfigError(
                f"data.classes does not match {source}: categories {missing} are not in data.classes; "
                "name them there or give data.coco.category_map"
            )
        mapping = {i: classes.index(names[i]) for i in cat_ids}
    else:
        mapping = {cid: pos + 1 for pos, cid in enumerate(cat_ids)}

    classes, final = apply_remap(classes, mapping, data_cfg.remap, data_cfg.ignore_index)
    return LabelSpec(tuple(classes), data_cfg.ignore_index, final)


def resolve_value_labels(data_cfg, value_map: dict | None, ignore_value: int | None) -> LabelSpec:
    """Label-map PNGs: pixel value -> class index (identity unless `value_map`,
    data.labelmap.mask_value_map, says otherwise; `ignore_value` is void)."""
    if not data_cfg.classes:
        raise ConfigError("data.classes is required for the labelmap format (PNG values carry no names)")
    classes = list(data_cfg.classes)
    _check_classes(classes, data_cfg.ignore_index)
    mapping: dict[int, int | str] = dict(value_map or {i: i for i in range(len(classes))})
    if ignore_value is not None:
        mapping.setdefault(ignore_value, "ignore")
    for value, idx in mapping.items():
        if not 0 <= value <= 65535:
            raise ConfigError(f"data.labelmap.mask_value_map: pixel value {value} out of range")
        if idx != "ignore" and not 0 <= idx < len(classes):
            raise ConfigError(f"data.labelmap.mask_value_map.{value}: class index {idx} out of range for {len(classes)} classes")
    classes, final = apply_remap(classes, mapping, data_cfg.remap, data_cfg.ignore_index)
    return LabelSpec(tuple(classes), data_cfg.ignore_index, final)


@dataclass(frozen=True)
class ClassMerge:
    """Training classes -> the submission's (`submission.classes`): a team may split a grab-bag
    class (UNKNOWN) into several training classes and merge them back when predicting.

    `index[c]` is the submission class of training class c. A merged class sits where its
    first member sits in the training list; classes no group names map to themselves.
    """

    train: LabelSpec
    submission: LabelSpec
    index: tuple[int, ...]

    def groups(self) -> list[list[int]]:
        """The training classes of each submission class."""
        return [[c for c, s in enumerate(self.index) if s == k] for k in range(self.submission.num_classes)]


def class_merge(labels: LabelSpec, merge_map: dict[str, list[str]] | None) -> ClassMerge | None:
    """The merge `submission.classes` describes for these training classes (None: no merge)."""
    if not merge_map:
        return None
    group_of: dict[str, str] = {}
    for target, members in merge_map.items():
        if not members:
            raise ConfigError(f"submission.classes.{target}: an empty list (name the training classes it merges)")
        for name in members:
            if name not in labels.classes:
                raise ConfigError(f"submission.classes.{target}: {name!r} is not a training class ({', '.join(labels.classes)})")
            if name in group_of:
                raise ConfigError(f"submission.classes: {name!r} is in both {group_of[name]!r} and {target!r}")
            group_of[name] = target
    for target in merge_map:
        if target in labels.classes and group_of.get(target) != target:
            raise ConfigError(f"submission.classes: {target!r} is also a training class outside its group; "
                              "add it to the group or give the group another name")
    names: list[str] = []
    index = []
    for c in labels.classes:
        name = group_of.get(c, c)
        if name not in names:
            names.append(name)
        index.append(names.index(name))
    to_class = {src: (index[c] if c < len(index) else c) for src, c in labels.source_to_class.items()}
    # A facet survives where every merged group agrees on its value (a mask-status class merge rarely does).
    facets = {}
    for facet, values in labels.facets.items():
        merged = {}
        for c, k in enumerate(index):
            merged.setdefault(k, set()).add(values[c])
        if all(len(v) == 1 for v in merged.values()):
            facets[facet] = tuple(next(iter(merged[k])) for k in range(len(names)))
    return ClassMerge(labels, LabelSpec(tuple(names), labels.ignore_index, to_class, labels.target, facets), tuple(index))
