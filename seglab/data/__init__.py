"""Data: from the organiser's files to batches of uint8 images and class maps."""

from __future__ import annotations

from seglab.data.dataset import SegmentationDataset
from seglab.data.labels import LabelSpec
from seglab.data.sources import SOURCES
from seglab.data.transforms import build_transform
from seglab.errors import ConfigError, DataValidationError, SeglabError

SPLITS = ("train", "val", "test")


def resolve_labels(cfg) -> LabelSpec:
    return SOURCES.get(cfg.data.format, "data.format").resolve_labels(cfg.data)


def open_source(cfg, split: str, labels: LabelSpec | None):
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    if getattr(cfg.data, split) is None and cfg.data.format == "coco":
        raise ConfigError(f"data.{split} is not set in the config")
    return SOURCES.get(cfg.data.format, "data.format")(cfg.data, split, labels)


def build_dataset(cfg, split: str, labels: LabelSpec, train: bool = False, with_masks: bool | None = None) -> SegmentationDataset:
    source = open_source(cfg, split, labels)
    transform = build_transform(cfg.augment, cfg.data.image_size, train=train)
    return SegmentationDataset(source, transform, source.has_masks if with_masks is None else with_masks)


def validate_data(cfg, labels: LabelSpec | None, splits=SPLITS, check_files: bool = True, deep: bool = False) -> list[str]:
    """All problems in the configured splits, one line each; [] when the data is usable.

    `labels` may be None (the class list could not be resolved): every other check still runs.
    `deep` decodes every image fully to find truncated or corrupt files.
    """
    problems: list[str] = []
    for split in splits:
        if getattr(cfg.data, split) is None and cfg.data.format == "coco":
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
