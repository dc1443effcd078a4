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
    source = SOURCES.get(cfg.data.format, "data.format")(cfg.data, split, labels)
    if split == "train" and getattr(cfg.data, "extra_train", None):
        from seglab.data.extra import with_extra_sets

        source = with_extra_sets(source, cfg, labels)
    return source


def build_dataset(cfg, split: str, labels: LabelSpec, train: bool = False, with_masks: bool | None = None) -> SegmentationDataset:
    source = open_source(cfg, split, labels)
    transform = build_transform(cfg.augment, cfg.data.image_size, train=train)
    return SegmentationDataset(source, transform, source.has_masks if with_masks is None else with_masks)


def validate_data(cfg, labels: LabelSpec, splits=("train", "val", "test"), check_files: bool = True) -> list[str]:
    """All problems in the configured splits, one line each; [] when the data is usable."""
    problems: list[str] = []
    for split in splits:
        if getattr(cfg.data, split) is None and cfg.data.format == "coco":
            continue
        try:
            problems.extend(open_source(cfg, split, labels).problems(check_files))
        except SeglabError as e:
            problems.append(str(e))
    return problems


def check_data(cfg, labels: LabelSpec, splits) -> None:
    problems = validate_data(cfg, labels, splits)
    if problems:
        raise DataValidationError(problems)
