"""COCO segmentation files (competition A): read, check, rasterise (`seglab.data.painting`),
apply data.corrections to them, and the `coco` source.

Masks are rasterised once per (annotation file content, label spec, paint order) and
cached (`seglab.data.cache`), so polygons are never re-rasterised epoch after epoch: class
maps for the multiclass task, C x H x W bit-packed masks for the multilabel one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import Field

from seglab.config.schema import Options
from seglab.data.bitmasks import BitmaskCache
from seglab.data.cache import ArrayCache, default_cache_dir
from seglab.data.corrections import Applied, Corrections, class_of, load_corrections
from seglab.data.images import read_image
from seglab.data.labels import LabelSpec, resolve_coco_labels
from seglab.data.painting import annotation_mask, ordered_layers, paint_classes, paint_instances
from seglab.data.sources.base import Source
from seglab.data.sources.registry import SOURCES
from seglab.errors import ConfigError, DataError
from seglab.io import read_json
from seglab.paths import inside, outside_root_problem

MAX_SIDE = 65535  # larger than any real image; beyond it a size is a typo, not a photo
RELABELLED = "seglab_relabel"  # the class index a corrected annotation takes (data.corrections; read by annotation_class)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class CocoFile:
    path: Path
    root: Path
    images: list[dict]
    annotations: dict[int, list[dict]]  # image id -> its annotations, in file order
    categories: list[dict]
    content_hash: str
    has_annotations: bool  # test files have no 'annotations' key at all

    @property
    def label(self) -> str:
        """The file as problems name it: its path under data.root's folder when it is there
        (`train/_annotations.coco.json`: per-split folders often share one file name)."""
        try:
            return str(self.path.resolve().relative_to(Path(self.configured_root).resolve()))
        except (ValueError, OSError, TypeError):  # not under data.root, or no root given
            return self.path.name

    configured_root: Path | None = None  # data.root (the images' root may be the JSON's folder)

    def record(self, index: int) -> dict:
        return self.images[index]

    def where(self, image: dict) -> str:
        return f"{self.label}: image {image.get('id')} ({image.get('file_name')!r})"


def image_root(path: Path, root: Path, images: list[dict], probe: int = 5) -> Path:
    """Where a split's `file_name`s are relative to: data.root, or the JSON's own folder
    when the split lives in a folder of its own (the Roboflow export layout:
    `train/_annotations.coco.json` beside `train/*.jpg`). The JSON's folder is chosen only
    when none of the first `probe` images is under data.root and all of them are beside
    the JSON, so one decision holds for the whole split."""
    here = path.parent
    if not images or here.resolve() == Path(root).resolve():
        return Path(root)
    names = [img.get("file_name") for img in images[:probe] if isinstance(img.get("file_name"), str)]
    if names and not any((Path(root) / n).is_file() for n in names) and all((here / n).is_file() for n in names):
        return here
    return Path(root)


def _load_json(path: Path) -> tuple[dict, bytes]:
    doc, data = read_json(path, "annotation file")
    if not isinstance(doc, dict):
        raise DataError(f"{path}: the top level must be an object with images/annotations/categories")
    return doc, data


def _records(doc: dict, key: str, path: Path, required: bool) -> list[dict]:
    value = doc.get(key)
    if value is None:
        if required:
            raise DataError(f"{path}: missing '{key}' list")
        return []
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise DataError(f"{path}: '{key}' must be a list of objects")
    return value


def read_coco(path: str | Path, root: str | Path) -> CocoFile:
    """Parse a COCO file; structural problems that make it unusable raise DataError at once."""
    path = Path(path)
    doc, data = _load_json(path)
    images = _records(doc, "images", path, required=True)
    categories = _records(doc, "categories", path, required=False)
    anns = _records(doc, "annotations", path, required=False)
    for i, img in enumerate(images):
        for key, kind in (("id", int), ("file_name", str), ("height", int), ("width", int)):
            if not isinstance(img.get(key), kind) or isinstance(img.get(key), bool):
                raise DataError(f"{path.name}: images[{i}] (id {_short(img.get('id'))}): '{key}' missing or not {kind.__name__}")
        if not (0 < img["height"] <= MAX_SIDE and 0 < img["width"] <= MAX_SIDE):
            raise DataError(f"{path.name}: image {img['id']}: implausible size {img['height']}x{img['width']} (height and width must be 1..{MAX_SIDE})")
    for i, cat in enumerate(categories):
        if not _is_int(cat.get("id")):
            raise DataError(f"{path.name}: categories[{i}]: 'id' missing or not an integer")
    by_image: dict[int, list[dict]] = {}
    for i, ann in enumerate(anns):
        if not _is_int(ann.get("image_id")):
            raise DataError(f"{path.name}: annotations[{i}] (id {_short(ann.get('id'))}): 'image_id' missing or not an integer")
        by_image.setdefault(ann["image_id"], []).append(ann)
    return CocoFile(path, image_root(path, Path(root), images), images, by_image, categories, hashlib.sha1(data).hexdigest(),
                    "annotations" in doc, Path(root))


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_coco(coco: CocoFile, labels: LabelSpec | None, check_files: bool = True, deep: bool = False,
                  allow_outside_root=False) -> list[str]:
    """Every problem found, one line each, naming the file, the record and what is wrong.

    `deep` decodes every image fully (finds truncated or corrupt files of any format;
    slower). Without it, images are opened for their size and JPEGs checked for an end.
    """
    from PIL import Image

    from seglab.data.images import header_size, image_decode_problem, truncated_jpeg

    problems: list[str] = []
    missing: list[tuple[str, str]] = []  # (problem line, file_name)
    name = coco.label
    if not coco.images:
        problems.append(f"{name}: empty split (no images)")
    cat_seen: set[int] = set()
    for i, cat in enumerate(coco.categories):
        if cat["id"] in cat_seen:
            problems.append(f"{name}: categories[{i}]: duplicate category id {cat['id']}")
        cat_seen.add(cat["id"])
    seen: dict[int, int] = {}
    for i, img in enumerate(coco.images):
        if img["id"] in seen:
            problems.append(f"{name}: images[{i}]: duplicate image id {img['id']} (also images[{seen[img['id']]}])")
        seen[img["id"]] = i
        outside = outside_root_problem(img["file_name"], coco.where(img), allow_outside_root, coco.root)
        if outside:
            problems.append(outside)
            continue
        if not check_files:
            continue
        file = coco.root / img["file_name"]
        if not file.is_file():
            missing.append((f"{coco.where(img)}: image file not found: {file}", img["file_name"]))
            continue
        try:
            with Image.open(file) as im:
                h, w = header_size(im)  # as the loader sees it: EXIF orientation applied
        except Exception as e:  # PIL raises many types for broken files
            problems.append(f"{coco.where(img)}: unreadable image {file}: {e}")
            continue
        if (h, w) != (img["height"], img["width"]):
            problems.append(f"{coco.where(img)}: image is {h}x{w} but the record says {img['height']}x{img['width']}")
            continue
        broken = image_decode_problem(file) if deep else ("JPEG data ends early" if truncated_jpeg(file) else None)
        if broken:
            problems.append(f"{coco.where(img)}: truncated or corrupt image {file}: {broken}")

    known_cats = {c["id"] for c in coco.categories}
    images_by_id = {img["id"]: img for img in coco.images}
    ann_ids: set = set()
    for image_id, anns in coco.annotations.items():
        img = images_by_id.get(image_id)
        for ann in anns:
            ann_id = ann.get("id")
            where = f"{name}: annotation {_short(ann_id)} (image {image_id})"
            if isinstance(ann_id, (int, str)):
                if ann_id in ann_ids:
                    problems.append(f"{where}: duplicate annotation id")
                ann_ids.add(ann_id)
            if img is None:
                problems.append(f"{where}: image id {image_id} is not in 'images'")
                continue
            cat = ann.get("category_id")
            if not _is_int(cat) or cat not in known_cats:
                problems.append(f"{where}: unknown category id {_short(cat)} (known: {sorted(known_cats)})")
            elif labels is not None and cat not in labels.source_to_class:
                problems.append(f"{where}: category id {cat} has no class in the label map")
            problem = segmentation_problem(ann.get("segmentation"), img["height"], img["width"])
            if problem:
                problems.append(f"{where}: {problem}")
    return missing_summary(coco, missing) + problems


def missing_summary(coco: CocoFile, missing: list[tuple[str, str]], shown: int = 3) -> list[str]:
    """A few missing images one line each; more as one line with examples and the likely fix."""
    if len(missing) <= shown:
        return [line for line, _ in missing]
    examples = ", ".join(repr(name) for _, name in missing[:shown])
    return [f"{coco.label}: {len(missing)} of {len(coco.images)} image files not found under {coco.root} (e.g. {examples}); "
            f"file_name is read relative to data.root (or to the JSON's folder when the split has a folder of its own): "
            f"check data.root"]


def segmentation_problem(seg, height: int, width: int) -> str | None:
    """Why a COCO `segmentation` value cannot be rasterised on a height x width image, or None.

    Everything pycocotools would choke on (or crash in C on: RLE counts that overrun the
    mask, vertices absurdly far away) is caught here first.
    """
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        inside = False
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
                return f"polygon {k} is not a list of numbers"
            if len(poly) % 2:
                return f"polygon {k} has an odd number of coordinates ({len(poly)})"
            if len(poly) < 6:
                return f"polygon {k} has {len(poly) // 2} points (needs at least 3)"
            if not all(isinstance(v, int) or math.isfinite(v) for v in poly):
                return f"polygon {k} has a non-finite coordinate"
            xs, ys = poly[0::2], poly[1::2]
            # Outside is common (annotation tools overshoot); ten image sizes away is a broken value, and
            # pycocotools would allocate memory for every pixel of the way there.
            m = 10 * max(height, width) + 1000
            if min(xs) < -m or max(xs) > width + m or min(ys) < -m or max(ys) > height + m:
                far = next((x, y) for x, y in zip(xs, ys) if not (-m <= x <= width + m and -m <= y <= height + m))
                return f"polygon {k} has a vertex far outside the {height}x{width} image: {_short(far)}"
            if max(xs) >= 0 and min(xs) <= width and max(ys) >= 0 and min(ys) <= height:
                inside = True
        if not inside:
            return f"polygon lies entirely outside the {height}x{width} image"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            return "RLE without a valid 'size' [height, width]"
        if list(size) != [height, width]:
            return f"RLE size {size} differs from the image size [{height}, {width}]"
        if isinstance(counts, list):
            if not all(isinstance(v, int) and v >= 0 for v in counts):
                return "uncompressed RLE counts must be non-negative integers"
            if sum(counts) != height * width:
                return f"RLE counts sum to {sum(counts)}, not height*width = {height * width}"
        elif isinstance(counts, str) and counts:
            runs = decode_rle_string(counts)
            if runs is None:
                return "compressed RLE 'counts' is not a valid COCO RLE string"
            if any(v < 0 for v in runs) or sum(runs) != height * width:
                return f"compressed RLE decodes to runs summing to {sum(runs)}, not height*width = {height * width}"
        else:
            return "RLE 'counts' must be a non-empty string or a list of integers"
        return None
    return f"segmentation must be a polygon list or an RLE object, got {type(seg).__name__}"


def decode_rle_string(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString), or None
    when it is not one. pycocotools does not check: bad runs overrun its buffer in C."""
    runs: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n or k >= 7:  # 7 chars hold 35 bits: more than any run; beyond, C's shifts overflow
                return None
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def annotation_class(ann: dict, labels: LabelSpec) -> int | None:
    """An annotation's class index: a correction's (data.corrections) if it has one, else its category's."""
    if ann.get(RELABELLED) is not None:
        return ann[RELABELLED]
    cat = ann.get("category_id")
    return labels.source_to_class.get(cat) if _is_int(cat) else None


def _checked_class(coco: CocoFile, img: dict, ann: dict, labels: LabelSpec) -> int:
    """The class of an annotation about to be rasterised; its geometry and category checked
    (the rasterisers' own guard: validation has reported the same problems)."""
    where = f"{coco.path.name}: annotation {_short(ann.get('id'))} (image {img['id']})"
    problem = segmentation_problem(ann.get("segmentation"), img["height"], img["width"])
    if problem:
        raise DataError(f"{where}: {problem}")
    cls = annotation_class(ann, labels)
    if cls is None:
        raise DataError(f"{where}: unknown category id {_short(ann.get('category_id'))}")
    return cls


def painted_layers(coco: CocoFile, index: int, labels: LabelSpec, paint_order: str) -> tuple[tuple[int, int], list]:
    """(height, width) and image `index`'s annotations as (mask, class), in the order they
    are painted (later ones win overlapping pixels)."""
    img = coco.images[index]
    h, w = img["height"], img["width"]
    anns = coco.annotations.get(img["id"], [])
    masks, classes = [], []
    for ann in anns:
        classes.append(_checked_class(coco, img, ann, labels))
        masks.append(annotation_mask(ann["segmentation"], h, w))
    return (h, w), ordered_layers(masks, classes, paint_order)


def rasterise(coco: CocoFile, index: int, labels: LabelSpec, paint_order: str) -> np.ndarray:
    """The class map of image `index`: background 0, one class per pixel by `paint_order`."""
    size, layers = painted_layers(coco, index, labels, paint_order)
    return paint_classes(size, layers, labels)


def rasterise_coco_multilabel(coco, index: int, labels: LabelSpec) -> np.ndarray:
    """One channel per class: the union of that class's annotations (C x H x W booleans)."""
    img = coco.images[index]
    h, w = img["height"], img["width"]
    mask = np.zeros((labels.num_classes, h, w), dtype=bool)
    for ann in coco.annotations.get(img["id"], []):
        cls = _checked_class(coco, img, ann, labels)
        if cls < labels.num_classes:  # Background / ignore: no channel in a multi-label mask
            mask[cls] |= annotation_mask(ann["segmentation"], h, w)
    return mask


# ---------------------------------------------------------------------- data.corrections on COCO data


def fix_coco(coco: CocoFile, corrections: Corrections | None, labels, applied: Applied) -> CocoFile:
    """A COCO file with dropped images gone and annotation records applied (the file is untouched)."""
    if corrections is None:
        return coco
    fixes = corrections.match([img["file_name"] for img in coco.images], applied)
    if not fixes:
        return coco
    images, annotations = [], dict(coco.annotations)
    for i, img in enumerate(coco.images):
        fix = fixes.get(i)
        if fix is None:
            images.append(img)
            continue
        if fix.drop:
            annotations.pop(img["id"], None)
            continue
        if fix.image_records():
            r = fix.image_records()[0]
            raise DataError(f"{r.where}: {r.kind} needs an annotation id on COCO data")
        images.append(img)
        # Compared as text: a file may write annotation ids as strings, a CSV record always does.
        wanted = {str(k): r for k, r in fix.annotation_records().items()}
        anns = coco.annotations.get(img["id"], [])
        missing = [k for k, r in wanted.items() if k not in {str(a.get("id")) for a in anns}]
        if missing:
            ids = [a.get("id") for a in anns]
            r = wanted[missing[0]]
            raise DataError(f"{r.where}: image {img['file_name']!r} has no annotation {r.annotation!r} (its ids: {ids})")
        kept = []
        for ann in anns:
            r = wanted.get(str(ann.get("id")))
            if r is None:
                kept.append(ann)
            elif r.action == "relabel":
                cls = class_of(r, labels.classes) if labels is not None else None
                kept.append({**ann, RELABELLED: cls})
        annotations[img["id"]] = kept
    return replace(coco, images=images, annotations=annotations)


class CocoOptions(Options):
    category_map: dict[int, Union[int, Literal["ignore"]]] | None = Field(
        None, description="COCO category id -> class index (or 'ignore'); default: by class name, else JSON order from 1"
    )


@SOURCES.register("coco")
class CocoSource(Source):
    """A COCO JSON split; sample ids are the images' `file_name`s, in file order."""

    targets = ("class_map", "binary_masks")
    options = CocoOptions

    def __init__(self, data_cfg, split: str, labels: LabelSpec | None = None):
        path = data_cfg.split_path(split)
        if path is None:
            raise ConfigError(f"data.{split} is not set in the config")
        corrections = load_corrections(data_cfg, split)
        self.applied = Applied()  # the data.corrections records this split took
        self.coco: CocoFile = fix_coco(read_coco(path, data_cfg.root), corrections, labels, self.applied)
        self.name = str(path)
        self.labels = labels
        self.paint_order = data_cfg.paint_order
        self.allow_outside_root = data_cfg.allow_outside_root
        self.has_targets = self.coco.has_annotations
        if labels is not None:
            cache_dir = Path(data_cfg.cache_dir) if data_cfg.cache_dir else default_cache_dir()
            fixed = corrections.cache_part() if corrections else ()
            self.cache_key = (self.coco.content_hash, labels.fingerprint(), self.paint_order, *fixed)
            self.cache = ArrayCache(cache_dir, f"masks/{path.stem}", *self.cache_key)
            self.instance_cache = ArrayCache(cache_dir, f"instances/{path.stem}", *self.cache_key)
            self.bitmask_cache = BitmaskCache(cache_dir, path.stem, self.coco.content_hash, labels.fingerprint(), *fixed)

    @classmethod
    def resolve_labels(cls, data_cfg) -> LabelSpec:
        split = next((s for s in ("train", "val", "test") if getattr(data_cfg, s)), None)
        if split is None:
            raise ConfigError("data: give at least one of data.train / data.val / data.test")
        coco = read_coco(data_cfg.split_path(split), data_cfg.root)
        if not coco.categories:
            raise DataError(f"{coco.path}: no 'categories' to build the class list from")
        return resolve_coco_labels(data_cfg, coco.categories, coco.path.name, cls.options_in(data_cfg).category_map)

    def __len__(self) -> int:
        return len(self.coco.images)

    def sample_id(self, i: int) -> str:
        return self.coco.images[i]["file_name"]

    def image_path(self, i: int) -> Path:
        img = self.coco.images[i]
        return inside(self.coco.root, img["file_name"], self.coco.where(img), self.allow_outside_root)

    def original_size(self, i: int) -> tuple[int, int]:
        img = self.coco.images[i]
        return img["height"], img["width"]

    def load_image(self, i: int) -> np.ndarray:
        return read_image(self.image_path(i), self.coco.where(self.coco.images[i]), self.original_size(i))

    def load_target(self, i: int) -> np.ndarray:
        if self.labels.target == "binary_masks":  # C x H x W booleans, one channel per class
            return self.bitmask_cache.get(self.sample_id(i), lambda: rasterise_coco_multilabel(self.coco, i, self.labels))
        return self.cache.get(self.sample_id(i), lambda: rasterise(self.coco, i, self.labels, self.paint_order))

    def load_instances(self, i: int) -> np.ndarray:
        """Object ids [H, W] matching the class map (`paint_instances`): what copy-paste with
        `unit: instance` pastes one by one; cached like the class map, under the same key."""
        return self.instance_cache.get(self.sample_id(i), lambda: paint_instances(
            *painted_layers(self.coco, i, self.labels, self.paint_order)))

    def annotation_masks(self, i: int) -> list[tuple[int, int, np.ndarray]]:
        """(annotation id, class, [H, W] boolean mask) of image i's annotations after
        corrections (what `seglab data corrections-template` checks one by one)."""
        img = self.coco.images[i]
        h, w = img["height"], img["width"]
        return [(ann.get("id"), annotation_class(ann, self.labels), annotation_mask(ann["segmentation"], h, w))
                for ann in self.coco.annotations.get(img["id"], [])
                if annotation_class(ann, self.labels) is not None and not segmentation_problem(ann.get("segmentation"), h, w)]

    def classes_present(self, i: int) -> set[int]:
        """The classes of image i's annotations, read without rasterising anything."""
        anns = self.coco.annotations.get(self.coco.images[i]["id"], [])
        found = (annotation_class(a, self.labels) for a in anns)
        return {self.labels.ignore_index if c is None else c for c in found}

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        return validate_coco(self.coco, self.labels, check_files, deep, self.allow_outside_root)
