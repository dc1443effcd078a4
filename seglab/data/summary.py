"""What `seglab data validate` prints besides the problems: the label map actually used,
images per split and how unlabelled / void pixels are treated, so a wrong guess shows
before training instead of as a poor score after it."""

from __future__ import annotations

from pathlib import Path

from seglab.errors import ConfigError, SeglabError


def not_a_config_hint(path: str | Path) -> None:
    """`seglab data validate train.json`: the user meant the data file itself."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raise ConfigError(f"{path}: data validate takes a YAML config, not a data file; to look at a COCO file run "
                          f"`seglab data inspect {path}`, or write a config with data.train: {path.name} (see configs/demo.yaml)")


def label_map_lines(labels) -> list[str]:
    """Source label -> class index and name, one line; unmapped labels are named too."""
    if not labels.source_to_class:
        return [f"classes ({labels.num_classes}): " + ", ".join(f"{i} {c}" for i, c in enumerate(labels.classes))]
    pairs = []
    for source, index in sorted(labels.source_to_class.items()):
        name = labels.classes[index] if 0 <= index < labels.num_classes else f"ignore ({index})"
        pairs.append(f"{source} -> {index} {name}" if index < labels.num_classes else f"{source} -> {name}")
    return [f"label map (source id -> class): {', '.join(pairs)}",
            f"classes ({labels.num_classes}): " + ", ".join(f"{i} {c}" for i, c in enumerate(labels.classes))]


def split_counts(cfg, labels, splits=("train", "val", "test")) -> str:
    from seglab.data import _configured, open_source

    counts = []
    for split in splits:
        if not _configured(cfg, split):
            continue
        try:
            counts.append(f"{split} {len(open_source(cfg, split, labels))}")
        except SeglabError:
            continue  # not configured, or broken: the problems list says which
    return "images per split: " + (", ".join(counts) if counts else "none readable")


def void_lines(cfg, labels) -> list[str]:
    """How pixels without a class are treated: the target kind's rule (class 0, ignored
    pixels, classes that look like void) and the layout's own (a void PNG value)."""
    from seglab.data.sources.registry import SOURCES

    return labels.kind.void_lines(labels) + SOURCES.get(cfg.data.format, "data.format").notes(cfg.data)
