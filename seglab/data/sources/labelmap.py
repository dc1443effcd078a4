"""Label-map PNGs: an image folder and a folder of label PNGs (one class index per
pixel), matched by file stem; optional split list files of stems."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import Field

from seglab.config.schema import Options
from seglab.data.cache import file_digest
from seglab.data.corrections import Applied, fix_ids, load_corrections
from seglab.data.images import (IMAGE_EXTENSIONS, image_decode_problem, image_size, label_header_problem, read_image,
                                read_label_map, truncated_jpeg)
from seglab.data.labels import LabelSpec, resolve_value_labels
from seglab.data.painting import mask_dtype
from seglab.data.sources.base import Source
from seglab.data.sources.registry import SOURCES
from seglab.errors import DataError


class LabelMapOptions(Options):
    image_dir: str = Field("images", description="folder of images under root")
    mask_dir: str = Field("masks", description="folder of label PNGs under root, matched by file stem")
    mask_ignore_value: int | None = Field(255, description="PNG value meaning void/ignore")
    mask_value_map: dict[int, Union[int, Literal["ignore"]]] | None = Field(
        None, description="PNG value -> class index (e.g. {0: 1, 255: 0}); default identity"
    )


@SOURCES.register("labelmap")
class LabelMapSource(Source):
    """Images in `image_dir`, one label PNG per image in `mask_dir` with the same stem.

    A split is a text file of stems (one per line) or null for every image found.
    """

    targets = ("class_map", "binary_masks")
    options = LabelMapOptions
    unset_split_is_everything = True

    def __init__(self, data_cfg, split: str, labels: LabelSpec | None = None):
        root, options = Path(data_cfg.root), self.options_in(data_cfg)
        self.image_dir, self.mask_dir = root / options.image_dir, root / options.mask_dir
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found (data.labelmap.image_dir)")
        images = {p.stem: p for p in sorted(self.image_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        list_path = data_cfg.split_path(split)
        self.name = str(list_path or self.image_dir)
        if list_path is None:
            stems = sorted(images)
        else:
            if not list_path.is_file():
                raise DataError(f"{list_path}: split list not found (data.{split})")
            stems = [s.strip() for s in list_path.read_text().splitlines() if s.strip() and not s.startswith("#")]
            stems = [Path(s).stem if Path(s).suffix.lower() in IMAGE_EXTENSIONS else s for s in stems]
        twice = sorted({s for s in stems if stems.count(s) > 1}) if len(set(stems)) != len(stems) else []
        if twice:
            raise DataError(f"{self.name}: {twice[0]!r} is listed twice (an image is one sample)")
        missing = [s for s in stems if s not in images]
        if missing:
            raise DataError(f"{self.name}: line {stems.index(missing[0]) + 1}: no image for {missing[0]!r} in {self.image_dir}")
        self.applied = Applied()  # the data.corrections records this split took
        kept = fix_ids([images[s].name for s in stems], load_corrections(data_cfg, split), self.applied, "labelmap")
        self.stems = [stems[i] for i in kept]
        self.images = images
        self.labels = labels
        self.has_targets = self.mask_dir.is_dir()
        if labels is not None:
            self.lut = self._lookup_table(labels)
            self.cache_key = (str(self.mask_dir.resolve()), labels.fingerprint())

    @classmethod
    def resolve_labels(cls, data_cfg) -> LabelSpec:
        options = cls.options_in(data_cfg)
        return resolve_value_labels(data_cfg, options.mask_value_map, options.mask_ignore_value)

    @classmethod
    def notes(cls, data_cfg) -> list[str]:
        value = cls.options_in(data_cfg).mask_ignore_value
        return [] if value is None else [f"label PNG value {value} is void: ignored (data.labelmap.mask_ignore_value)"]

    def _lookup_table(self, labels: LabelSpec) -> np.ndarray:
        # Unlisted PNG values map to a sentinel so a stray value is reported, not silently trained on.
        self.invalid = 65535
        lut = np.full(65536, self.invalid, dtype=np.uint16)
        for value, cls in labels.source_to_class.items():
            lut[value] = cls
        return lut

    def __len__(self) -> int:
        return len(self.stems)

    def sample_id(self, i: int) -> str:
        return self.images[self.stems[i]].name

    def image_path(self, i: int) -> Path:
        return self.images[self.stems[i]]

    def mask_path(self, i: int) -> Path:
        return self.mask_dir / f"{self.stems[i]}.png"

    def original_size(self, i: int) -> tuple[int, int]:
        return image_size(self.image_path(i), f"{self.name}: {self.stems[i]}")

    def load_image(self, i: int) -> np.ndarray:
        return read_image(self.image_path(i), f"{self.name}: {self.stems[i]}")

    def target_stamp(self, i: int) -> str:
        return file_digest(self.mask_path(i))

    def load_target(self, i: int) -> np.ndarray:
        path = self.mask_path(i)
        raw = read_label_map(path, f"{self.name}: {self.stems[i]}", self.original_size(i))
        mask = self.lut[raw]
        if (mask == self.invalid).any():
            bad = sorted(set(np.unique(raw[mask == self.invalid]).tolist()))[:5]
            raise DataError(f"{path}: pixel values {bad} are not in data.labelmap.mask_value_map / classes")
        mask = mask.astype(mask_dtype(self.labels))
        if self.labels.target == "binary_masks":  # one channel per class; ignore has none
            return np.stack([mask == c for c in range(self.labels.num_classes)])
        return mask

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        problems = [] if self.stems else [f"{self.name}: empty split (no images)"]
        for i, stem in enumerate(self.stems if check_files else []):
            files = [self.image_path(i)]
            label_ok = False
            if self.has_targets:
                if not self.mask_path(i).is_file():
                    problems.append(f"{self.name}: {stem}: label file not found: {self.mask_path(i)}")
                else:
                    files.append(self.mask_path(i))
                    label_ok = True
            for file in files:
                broken = image_decode_problem(file) if deep else ("JPEG data ends early" if truncated_jpeg(file) else None)
                if broken:
                    problems.append(f"{self.name}: {stem}: truncated or corrupt image {file}: {broken}")
                    label_ok = False
            if label_ok:
                # The header tells mode and size at once; --deep decodes every label map for its values too.
                try:
                    problem = label_header_problem(self.mask_path(i), self.original_size(i))
                    if problem is None and deep and self.labels is not None:
                        self.load_target(i)
                except DataError as e:
                    problem = str(e)
                if problem:
                    problems.append(problem)
        return problems
