"""Data: from the organiser's files to batches of uint8 images and targets, for every task.

`resolve_labels` gives the class list (the layout's, as the task trains on it),
`open_source` a split's source (a fold of train when `data.fold` is set, plus
`data.extra_train`), `build_dataset` its dataset, `collect_problems` every problem
found before training.
"""

from __future__ import annotations

from pathlib import Path

from seglab.data.labels import LabelSpec
from seglab.data.sources.combined import ConcatSource, SubsetSource, open_extra_sources, with_extra_sets
from seglab.data.sources.registry import SOURCES
from seglab.errors import ConfigError, DataValidationError, SeglabError

SPLITS = ("train", "val", "test")


def resolve_labels(cfg) -> LabelSpec:
    """The layout's natural class list, then the task's view of it (Background or not)."""
    from seglab.task import get_task

    task = get_task(cfg.task)
    source = SOURCES.get(cfg.data.format, "data.format")
    source.check_target(task.target, task.name, cfg.data.format)
    return task.adapt_labels(source.resolve_labels(cfg.data))


def open_source(cfg, split: str, labels: LabelSpec | None):
    """The source of one split: the configured one, or with `data.fold` that fold of train
    (val) or the other folds (train); train also gets `data.extra_train`."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    data = cfg.data
    if split in ("train", "val") and data.fold is not None:
        source = fold_source(cfg, split, labels)
    else:
        source = SOURCES.get(data.format, "data.format")(data, split, labels)
    if split == "train" and data.extra_train:
        extras = open_extra_sources(data, labels)
        source = with_extra_sets(source, extras, validation_ids(cfg, labels) if extras else None)
    return source


def fold_source(cfg, split: str, labels: LabelSpec | None):
    from seglab.data.splits import assign_folds, read_folds
    from seglab.task import get_task

    pool = SOURCES.get(cfg.data.format, "data.format")(cfg.data, "train", labels)
    ids = [pool.sample_id(i) for i in range(len(pool))]
    if cfg.data.folds is not None:
        fold = read_folds(cfg.data.resolve(cfg.data.folds), ids)
    else:
        if labels is None:
            raise ConfigError("data.fold: folds are made from the class list, which could not be resolved")
        fold = assign_folds(pool, labels, get_task(cfg.task), cfg).fold
    k = cfg.data.fold
    if k > fold.max():
        raise ConfigError(f"data.fold: {k} is out of range for the {int(fold.max()) + 1} folds of {cfg.data.folds or 'kfold.folds'}")
    keep = [i for i, f in enumerate(fold) if (f == k) == (split == "val")]
    return SubsetSource(pool, keep, f"{pool.name} (fold {k} {split})")


def validation_ids(cfg, labels: LabelSpec | None) -> set[str] | None:
    """Sample ids of the validation split (None when there is none)."""
    if cfg.data.val is None and cfg.data.fold is None:
        return None
    val = open_source(cfg, "val", labels)
    return {val.sample_id(i) for i in range(len(val))}


def build_dataset(cfg, split: str, labels: LabelSpec, train: bool = False, with_targets: bool | None = None):
    """The split's LabDataset (`train`: with the training augmentation)."""
    # The training stack (torch, albumentations) loads here, not when the config reads the layouts.
    from seglab.data.batch_augment import pastes_objects
    from seglab.data.cache import ArrayCache, default_cache_dir
    from seglab.data.dataset import LabDataset
    from seglab.data.transforms import build_transform

    source = open_source(cfg, split, labels)
    size = cfg.data.image_size
    resized = None
    if cfg.data.cache_images and size is not None:
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
        resized = ArrayCache(cache_dir, f"resized/{Path(source.name.split(' ')[0]).stem}", *source.cache_key,
                             f"{size[0]}x{size[1]}", compress=False)
    transform = build_transform(cfg.augment, size if resized is None else None, train=train)
    with_targets = source.has_targets if with_targets is None else with_targets
    instances = train and with_targets and labels.kind.uses_object_ids and pastes_objects(cfg.augment.batch)
    return LabDataset(source, transform, with_targets, resized, size, with_instances=instances)


def _configured(cfg, split: str) -> bool:
    if getattr(cfg.data, split) is not None:
        return True
    if split in ("train", "val") and cfg.data.fold is not None:
        return cfg.data.train is not None
    return SOURCES.get(cfg.data.format, "data.format").unset_split_is_everything


def validate_data(cfg, labels: LabelSpec | None, splits=SPLITS, check_files: bool = True, deep: bool = False) -> list[str]:
    """All problems in the configured splits, one line each; [] when the data is usable.

    `labels` may be None (the class list could not be resolved): every other check still runs.
    `deep` decodes every image fully to find truncated or corrupt files.
    """
    problems: list[str] = []
    opened = {}
    for split in splits:
        if not _configured(cfg, split):
            continue
        try:
            opened[split] = open_source(cfg, split, labels)
            problems.extend(collapse_missing(opened[split].problems(check_files, deep), split))
        except DataValidationError as e:
            problems.extend(e.problems)
        except SeglabError as e:
            problems.append(str(e))
            if split in ("train", "val") and cfg.data.fold is not None:
                problems.extend(_pool_problems(cfg, labels, check_files, deep))
    # A labelmap split left unset means "every image": such a split overlaps by definition, not by mistake.
    named = {k: v for k, v in opened.items() if getattr(cfg.data, k) is not None or (k != "test" and cfg.data.fold is not None)}
    problems.extend(overlap_problems(named))
    if cfg.data.corrections and any(s in splits for s in ("train", "val")):
        try:
            problems.extend(corrections_summary(cfg, labels)[1])
        except SeglabError as e:
            problems.append(str(e))
    return list(dict.fromkeys(problems))  # a fold shares its pool's file: listed once


def collapse_missing(problems: list[str], split: str, shown: int = 3) -> list[str]:
    """Many "image file not found" lines of one split as one line with a few examples and the
    likely fix (a wrong data.root moves every image at once)."""
    missing = [p for p in problems if ": image file not found: " in p]
    if len(missing) <= shown:
        return problems
    examples = ", ".join(p.rsplit(": image file not found: ", 1)[1] for p in missing[:shown])
    summary = (f"data.{split}: {len(missing)} image files not found (e.g. {examples}); "
               f"paths are read relative to data.root: check data.root")
    return [summary] + [p for p in problems if ": image file not found: " not in p]


def overlap_problems(sources: dict) -> list[str]:
    """Splits that share an image file or a group (a person): a validation or test score
    measured on images the model trained on (or on the same person) is silently optimistic.
    Extra training sets (pseudo-labels of the test images) are left out on purpose."""
    seen: dict[str, tuple[dict, dict]] = {}
    for split, source in sources.items():
        base = source.sources[0] if isinstance(source, ConcatSource) else source
        files, groups = {}, {}
        for i in range(len(base)):
            try:
                files.setdefault(str(Path(base.image_path(i)).resolve()), base.sample_id(i))
            except (SeglabError, OSError):
                continue  # a name the reader refuses is reported by the source itself
            group = base.group(i)
            if group is not None:
                groups.setdefault(group, base.sample_id(i))
        seen[split] = (files, groups)
    problems = []
    names = list(seen)
    for a_index, a in enumerate(names):
        for b in names[a_index + 1:]:
            shared = [seen[b][0][f] for f in seen[a][0] if f in seen[b][0]]
            if shared:
                problems.append(f"data.{a} and data.{b} share {len(shared)} image file(s), e.g. {shared[0]!r}: "
                                "a split must not contain images of another")
                continue
            people = [g for g in seen[a][1] if g in seen[b][1]]
            if people:
                problems.append(f"data.{a} and data.{b} share {len(people)} group(s) (person/ID), e.g. {people[0]!r} "
                                f"({seen[a][1][people[0]]!r} and {seen[b][1][people[0]]!r}): keep each group in one split")
    return problems


def corrections_summary(cfg, labels: LabelSpec | None) -> tuple[dict[str, int], list[str]]:
    """data.corrections records applied per kind over the labelled splits (train, val; with
    data.fold the train pool), and one problem per record that matched no image."""
    from seglab.data.corrections import load_corrections, summarise

    corrections = load_corrections(cfg.data, "train")
    if corrections is None:
        return {}, []
    splits = ("train",) if cfg.data.fold is not None else ("train", "val")
    applied = [SOURCES.get(cfg.data.format, "data.format")(cfg.data, s, labels).applied
               for s in splits if _configured(cfg, s)]
    return summarise(corrections, applied)


def _pool_problems(cfg, labels: LabelSpec | None, check_files: bool, deep: bool) -> list[str]:
    """The training pool's own problems when its folds could not be made (bad rows are often why)."""
    try:
        return SOURCES.get(cfg.data.format, "data.format")(cfg.data, "train", labels).problems(check_files, deep)
    except SeglabError:
        return []  # the pool itself does not open: that error is already listed


def collect_problems(cfg, splits=SPLITS, deep: bool = False) -> tuple[LabelSpec | None, list[str]]:
    """The class list and every problem found before training, config-level and data-level
    together, so `seglab data validate` and `train` list them all at once."""
    problems: list[str] = []
    labels = None
    try:
        labels = resolve_labels(cfg)
    except SeglabError as e:
        problems.append(str(e))
    problems.extend(validate_data(cfg, labels, splits, deep=deep))
    return labels, list(dict.fromkeys(problems))


def check_data(cfg, labels: LabelSpec, splits) -> None:
    problems = validate_data(cfg, labels, splits)
    if problems:
        raise DataValidationError(problems)
