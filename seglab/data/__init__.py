"""Data: from the organiser's files to batches of uint8 images and class maps."""

from __future__ import annotations

from pathlib import Path

from seglab.data.dataset import ArrayCache, SegmentationDataset, default_cache_dir
from seglab.data.labels import LabelSpec
from seglab.data.sources import SOURCES
from seglab.data import polygons  # noqa: F401  (registers the "polygons" format)
from seglab.data.transforms import build_transform
from seglab.errors import ConfigError, DataValidationError, SeglabError

SPLITS = ("train", "val", "test")


def resolve_labels(cfg) -> LabelSpec:
    from seglab.tasks import get_task

    # The source's natural class list, then the task's view of it (Background or not).
    return get_task(cfg.task).adapt_labels(SOURCES.get(cfg.data.format, "data.format").resolve_labels(cfg.data))


def open_source(cfg, split: str, labels: LabelSpec | None):
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    if getattr(cfg.data, split) is None and cfg.data.format == "coco":
        raise ConfigError(f"data.{split} is not set in the config")
    source = SOURCES.get(cfg.data.format, "data.format")(cfg.data, split, labels)
    if split == "train" and getattr(cfg.data, "extra_train", None):
        from seglab.data.extra import with_extra_sets

        source = with_extra_sets(source, cfg, labels)
    return source


def build_dataset(cfg, split: str, labels: LabelSpec, train: bool = False, with_masks: bool | None = None) -> SegmentationDataset:
    source = open_source(cfg, split, labels)
    size = cfg.data.image_size
    resized = None
    if cfg.data.cache_images and size is not None:
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
        resized = ArrayCache(cache_dir, f"resized/{Path(source.name).stem}", *source.cache_key, f"{size[0]}x{size[1]}", compress=False)
    transform = build_transform(cfg.augment, size if resized is None else None, train=train)
    with_masks = source.has_masks if with_masks is None else with_masks
    return SegmentationDataset(source, transform, with_masks, resized, size)


def validate_data(cfg, labels: LabelSpec | None, splits=SPLITS, check_files: bool = True, deep: bool = False) -> list[str]:
    """All problems in the configured splits, one line each; [] when the data is usable.

    `labels` may be None (the class list could not be resolved): every other check still runs.
    `deep` decodes every image fully to find truncated or corrupt files.
    """
    problems: list[str] = []
    for split in splits:
        if getattr(cfg.data, split) is None and cfg.data.format in ("coco", "polygons"):
            continue
        try:
            problems.extend(open_source(cfg, split, labels).problems(check_files, deep))
        except SeglabError as e:
            problems.append(str(e))
    return problems


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
    # TODO(metadata): when the per-ID metadata table reader lands (competition B: age, sex,
    # weight, height per ID folder), report here every sample ID with no row in the table,
    # naming the table file and the ID, e.g. "meta.csv: no row for ID 'ID042' (train)".
    return labels, list(dict.fromkeys(problems))  # a file that fails twice is listed once


def check_data(cfg, labels: LabelSpec, splits) -> None:
    problems = validate_data(cfg, labels, splits)
    if problems:
        raise DataValidationError(problems)
