"""Per-image polygon JSON (the hand-bone X-ray layout).

    <root>/<image_dir>/ID001/image1661130828152_R.png
    <root>/<json_dir>/ID001/image1661130828152_R.json
        {"annotations": [{"label": "finger-1", "points": [[x, y], ...]}, ...]}

`image_dir` and `json_dir` are this layout's options (`data.polygons`). Labels are class
names from `data.classes` (after `data.remap`). The natural target is
a C x H x W boolean mask (bones overlap); the multiclass task paints the same
polygons into one class map by `data.paint_order`, with class 0 Background.

A split (`data.train`, `data.val`, `data.test`) is one of:
- a text file, one entry per line: an ID folder (`ID001`: all its images) or an image
  path relative to `<root>/<image_dir>` (`ID001/image1661130828152_R.png`);
- a folder holding `<image_dir>` (and `<json_dir>` if labelled), e.g. `.` for every
  image under root or `../test` for the test set; a folder of images without an
  `<image_dir>` inside is taken as the image folder itself (no labels).
Sample ids are image paths relative to their image folder; the first folder is the
group (the person) that splits keep together.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import Field

from seglab.config.schema import Options
from seglab.data.cache import ArrayCache, default_cache_dir, file_digest
from seglab.data.corrections import Applied, SampleFix, class_of, load_corrections
from seglab.data.images import IMAGE_EXTENSIONS, image_size, image_decode_problem, read_image
from seglab.data.labels import LabelSpec, apply_remap
from seglab.data.painting import fill_polygon, ordered_layers, paint_classes, paint_instances, polygon_mask
from seglab.data.sources.base import Source
from seglab.data.sources.registry import SOURCES
from seglab.errors import ConfigError, DataError
from seglab.io import read_json
from seglab.paths import inside


def find_images(folder: Path) -> list[str]:
    """Image paths under `folder` (recursive), relative and POSIX-style, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def resolve_polygon_labels(data_cfg) -> LabelSpec:
    if not data_cfg.classes:
        raise ConfigError("data.classes is required for the polygons format (the JSON labels are class names)")
    classes = list(data_cfg.classes)
    if len(set(classes)) != len(classes):
        raise ConfigError(f"data.classes: duplicate class names {sorted({c for c in classes if classes.count(c) > 1})}")
    if data_cfg.ignore_index < len(classes):
        raise ConfigError(f"data.ignore_index {data_cfg.ignore_index} collides with class index {data_cfg.ignore_index}")
    kept, final = apply_remap(classes, {i: i for i in range(len(classes))}, data_cfg.remap, data_cfg.ignore_index)
    return LabelSpec(tuple(kept), data_cfg.ignore_index, final, "binary_masks")


def read_polygon_json(path: Path) -> tuple[list[dict], bytes]:
    """The annotation list of one label file and its raw bytes (for the cache key)."""
    doc, data = read_json(path, "label file")
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise DataError(f"{path}: expected an object with an 'annotations' list of objects")
    return anns, data


def polygon_problem(points, height: int, width: int) -> str | None:
    """Why `points` cannot be rasterised on a height x width image, or None."""
    if not isinstance(points, list) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
        for p in points
    ):
        return "'points' must be a list of [x, y] number pairs"
    if len(points) < 3:
        return f"polygon has {len(points)} points (needs at least 3)"
    if not all(isinstance(v, int) or math.isfinite(v) for p in points for v in p):
        return "polygon has a non-finite coordinate"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    # As for COCO: ten image sizes away is a broken value (and would wrap around when cast to int32 to draw).
    m = 10 * max(height, width) + 1000
    if min(xs) < -m or max(xs) > width + m or min(ys) < -m or max(ys) > height + m:
        return f"polygon has a vertex far outside the {height}x{width} image"
    if max(xs) < 0 or min(xs) > width or max(ys) < 0 or min(ys) > height:
        return f"polygon lies entirely outside the {height}x{width} image"
    return None


# ---------------------------------------------------------------------- data.corrections on polygon data


def fix_polygons(anns: list[dict], fix: SampleFix | None, labels, where) -> list[tuple[int, dict, int | None]]:
    """(index in the file, annotation, class index or None = its own label) of one polygon
    JSON, dropped ones left out."""
    if fix is None:
        return [(k, a, None) for k, a in enumerate(anns)]
    if fix.image_records():
        r = fix.image_records()[0]
        raise DataError(f"{r.where}: {r.kind} needs an annotation index on polygon data")
    wanted = fix.annotation_records()
    for k, r in wanted.items():
        if not isinstance(k, int) or not 0 <= k < len(anns):
            raise DataError(f"{r.where}: {where} has no annotations[{k}] (it has {len(anns)})")
    out = []
    for k, ann in enumerate(anns):
        r = wanted.get(k)
        if r is None:
            out.append((k, ann, None))
        elif r.action == "relabel":
            out.append((k, ann, class_of(r, labels.classes)))
    return out


class PolygonOptions(Options):
    image_dir: str = Field("images", description="folder of images under root (the hand-bone layout: DCM)")
    json_dir: str = Field("outputs_json", description="folder of per-image label JSON under root, mirroring image_dir")


@SOURCES.register("polygons")
class PolygonSource(Source):
    """Images plus one polygon JSON per image (hand-bone layout); see the module docstring."""

    targets = ("binary_masks", "class_map")
    options = PolygonOptions

    def __init__(self, data_cfg, split: str, labels: LabelSpec | None = None):
        root, options = Path(data_cfg.root), self.options_in(data_cfg)
        self.image_root, self.json_root = root / options.image_dir, root / options.json_dir
        path = data_cfg.split_path(split)
        if path is None:
            raise ConfigError(f"data.{split} is not set in the config")
        self.name = str(path)
        if path.is_dir():
            if (path / options.image_dir).is_dir():
                self.image_root, self.json_root = path / options.image_dir, path / options.json_dir
            else:
                self.image_root, self.json_root = path, path.parent / options.json_dir
            self.ids = find_images(self.image_root)
        elif not path.is_file():
            raise DataError(f"{path}: split list or folder not found (data.{split})")
        if not self.image_root.is_dir():
            raise DataError(f"{self.image_root}: image folder not found (data.root / data.polygons.image_dir)")
        self.allow_outside_root = data_cfg.allow_outside_root
        if path.is_file():
            self.ids = self._read_list(path)
        corrections = load_corrections(data_cfg, split)
        self.applied = Applied()  # the data.corrections records this split took
        fixes = corrections.match(self.ids, self.applied) if corrections else {}
        self.fixes = {self.ids[i]: fix for i, fix in fixes.items() if not fix.drop}
        self.ids = [sid for i, sid in enumerate(self.ids) if not (i in fixes and fixes[i].drop)]
        self.has_targets = self.json_root.is_dir()
        self.labels = labels
        self.paint_order = data_cfg.paint_order
        self.class_of_name = {name: i for i, name in enumerate(data_cfg.classes or [])}
        if labels is not None:
            cache_dir = Path(data_cfg.cache_dir) if data_cfg.cache_dir else default_cache_dir()
            # Keyed by the label spec (classes, remap, task) and paint order; per file by its content.
            key = (labels.fingerprint(), self.paint_order, json.dumps(sorted(self.class_of_name.items())),
                   *(corrections.cache_part() if corrections else ()))
            self.class_map_cache = ArrayCache(cache_dir, "masks/polygons", *key)
            self.instance_cache = ArrayCache(cache_dir, "instances/polygons", *key)
            # Per-file content is in each entry's key; the resized cache keys on the json folder too.
            self.cache_key = (str(self.json_root.resolve()),) + key

    def _read_list(self, path: Path) -> list[str]:
        ids: list[str] = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            target = inside(self.image_root, entry, f"{path}: line {line_no}", self.allow_outside_root)
            if target.is_dir():
                found = find_images(target)
                if not found:
                    raise DataError(f"{path}: line {line_no}: folder {entry!r} holds no images")
                ids.extend(f"{entry.rstrip('/')}/{rel}" for rel in found)
            elif target.is_file():
                ids.append(Path(entry).as_posix())
            else:
                raise DataError(f"{path}: line {line_no}: no image or ID folder {entry!r} in {self.image_root}")
        twice = [i for i, n in Counter(ids).items() if n > 1]
        if twice:
            raise DataError(f"{path}: image {twice[0]!r} is listed twice")
        return ids

    @staticmethod
    def resolve_labels(data_cfg) -> LabelSpec:
        return resolve_polygon_labels(data_cfg)

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, i: int) -> str:
        return self.ids[i]

    def group(self, i: int) -> str:
        """The person: the ID folder the image lies in (the image itself when there is none)."""
        return self.ids[i].split("/")[0]

    def image_path(self, i: int) -> Path:
        return self.image_root / self.ids[i]

    def json_path(self, i: int) -> Path:
        return (self.json_root / self.ids[i]).with_suffix(".json")

    def original_size(self, i: int) -> tuple[int, int]:
        return image_size(self.image_path(i), f"{self.name}: {self.ids[i]}")

    def load_image(self, i: int) -> np.ndarray:
        return read_image(self.image_path(i), f"{self.name}: {self.ids[i]}")

    def target_stamp(self, i: int) -> str:
        return file_digest(self.json_path(i))

    def load_target(self, i: int) -> np.ndarray:
        """C x H x W booleans (multilabel), rasterised from the label file at every load, or a
        class map [H, W] (multiclass), from the cache.

        Multi-label masks are not cached: at 2048 px, reading 29 bit-packed compressed
        channels back (about 38 ms) cost more than parsing and rasterising the polygons
        (5 to 12 ms; benchmarks/fullres.py). A class map is painted from one mask per
        polygon, which costs more than reading it back."""
        path = self.json_path(i)
        size = self.original_size(i)
        if self.labels.target == "binary_masks":
            return self.rasterise(self.corrected(i, read_polygon_json(path)[0]), size, path)
        return self.class_map_cache.get(self._entry(i, size),
                                        lambda: self.rasterise(self.corrected(i, read_polygon_json(path)[0]), size, path))

    def _entry(self, i: int, size: tuple[int, int]) -> str:
        """Image i's cache entry: its id, its label file's content and its size."""
        try:
            data = self.json_path(i).read_bytes()
        except OSError:
            data = b""  # read_polygon_json names the problem when the entry is made
        return f"{self.ids[i]}|{hashlib.sha1(data).hexdigest()}|{size}"

    def corrected(self, i: int, anns: list[dict]) -> list[tuple[int, dict, int | None]]:
        """Image i's annotations after data.corrections: (index, annotation, corrected class or None)."""
        return fix_polygons(anns, self.fixes.get(self.ids[i]), self.labels, self.json_path(i))

    def annotation_masks(self, i: int) -> list[tuple[int, int, np.ndarray]]:
        """(index in the JSON, class, [H, W] boolean mask) of image i's annotations after
        corrections (what `seglab data corrections-template` checks one by one)."""
        anns, _ = read_polygon_json(self.json_path(i))
        h, w = self.original_size(i)
        corrected, out = self.corrected(i, anns), []
        for (k, _, _), (cls, pts) in zip(corrected, self._polygons(corrected, (h, w), self.json_path(i))):
            out.append((k, cls, polygon_mask(pts, (h, w))))
        return out

    def _polygons(self, anns: list[tuple[int, dict, int | None]], size: tuple[int, int], where: Path) -> list[tuple[int, np.ndarray]]:
        h, w = size
        out = []
        for k, ann, corrected in anns:
            label = ann.get("label")
            if not isinstance(label, str) or label not in self.class_of_name:
                raise DataError(f"{where}: annotations[{k}]: unknown label {label!r} (not in data.classes)")
            problem = polygon_problem(ann.get("points"), h, w)
            if problem:
                raise DataError(f"{where}: annotations[{k}] ({label}): {problem}")
            cls = self.labels.source_to_class[self.class_of_name[label]] if corrected is None else corrected
            out.append((cls, np.round(np.asarray(ann["points"], np.float64)).astype(np.int32)))
        return out

    def rasterise(self, anns: list[tuple[int, dict, int | None]], size: tuple[int, int], where: Path) -> np.ndarray:
        h, w = size
        polys = self._polygons(anns, size, where)
        if self.labels.target == "binary_masks":
            mask = np.zeros((self.labels.num_classes, h, w), np.uint8)
            for cls, pts in polys:
                if cls < self.labels.num_classes:  # remapped to ignore: no channel
                    fill_polygon(mask[cls], pts)
            return mask.view(bool)  # 0/1 bytes are booleans: no copy (121 MB at 29 x 2048 x 2048)
        return paint_classes(size, self._layers(polys, size), self.labels)

    def _layers(self, polys: list[tuple[int, np.ndarray]], size: tuple[int, int]) -> list[tuple[np.ndarray, int]]:
        """The polygons as (mask, class), in the order they are painted (`data.paint_order`)."""
        return ordered_layers([polygon_mask(pts, size) for _, pts in polys], [cls for cls, _ in polys], self.paint_order)

    def load_instances(self, i: int) -> np.ndarray:
        """Object ids [H, W] matching the class map (one per polygon, `paint_instances`): what
        copy-paste with `unit: instance` pastes one by one; cached like the class map."""
        path, size = self.json_path(i), self.original_size(i)

        def paint() -> np.ndarray:
            polys = self._polygons(self.corrected(i, read_polygon_json(path)[0]), size, path)
            return paint_instances(size, self._layers(polys, size))

        return self.instance_cache.get(self._entry(i, size), paint)

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        problems = [] if self.ids else [f"{self.name}: empty split (no images)"]
        if not check_files:
            return problems
        for i, sample in enumerate(self.ids):
            try:
                h, w = self.original_size(i)
            except DataError as e:
                problems.append(str(e))
                continue
            broken = image_decode_problem(self.image_path(i)) if deep else None
            if broken:
                problems.append(f"{self.name}: {sample}: {broken}")
            if not self.has_targets:
                continue
            try:
                anns, _ = read_polygon_json(self.json_path(i))
                if self.labels is not None:
                    fix_polygons(anns, self.fixes.get(sample), self.labels, self.json_path(i))  # bad indices, classes
            except DataError as e:
                problems.append(f"{self.name}: {sample}: {e}")
                continue
            for k, ann in enumerate(anns):
                label = ann.get("label")
                if not isinstance(label, str) or label not in self.class_of_name:
                    problems.append(f"{self.json_path(i)}: annotations[{k}]: unknown label {label!r} (not in data.classes)")
                    continue
                problem = polygon_problem(ann.get("points"), h, w)
                if problem:
                    problems.append(f"{self.json_path(i)}: annotations[{k}] ({label}): {problem}")
        return problems
