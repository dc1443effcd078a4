"""Label corrections: known mistakes in the organiser's labels fixed at load time, never
by editing their files (`data.corrections: FILE`).

A corrections file (YAML: a list of mappings; CSV: the same keys as columns; `#` lines
are comments) holds one record per fix:

    image       sample id (COCO file_name, polygon/imagefolder/csv/maskstatus sample id) or
                a folder of them (a polygon ID folder, a mask-status person folder)
    annotation  COCO annotation id, or the index in a polygon JSON's 'annotations' list;
                omitted for image-level records
    action      relabel | drop | mask | gender | age
    value       relabel: a training class name; mask: wear, incorrect or not_worn;
                gender: male or female; age: years (banded by data.maskstatus.age_bounds)
    note        free text, ignored

With `annotation`, relabel/drop change that annotation; without it, drop removes the
image and relabel sets a classification image's class; mask/gender/age change one facet
of a mask-status class. Records apply to the labelled splits (train, val, folds), never
to test: a submission covers every test image.

The record format, reading, matching and the checks every layout shares live here; each
layout applies the records its own way, beside its reader (`fix_coco` in coco.py,
`fix_polygons` in polygons.py, `fix_samples` in classification.py; a layout whose only
fix is an image drop uses `fix_ids`). A record that no image of train/val matches is a
problem listed by `seglab data validate` and by the preflight of `train`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seglab.data import maskstatus
from seglab.errors import DataError
from seglab.io import UniqueKeyLoader

FIELDS = ("image", "annotation", "action", "value", "note")
ACTIONS = ("relabel", "drop", "mask", "gender", "age")
FACET_ACTIONS = ("mask", "gender", "age")
KINDS = ("relabel annotation", "drop annotation", "drop image", "relabel image", "mask", "gender", "age")


@dataclass(frozen=True)
class Record:
    where: str          # "FILE: line N", for messages
    image: str
    annotation: int | str | None
    action: str
    value: str | int | None

    @property
    def kind(self) -> str:
        if self.action in FACET_ACTIONS:
            return self.action
        return f"{self.action} {'annotation' if self.annotation is not None else 'image'}"

    @property
    def slot(self) -> tuple:
        """What the record changes; two records on one slot of one sample contradict."""
        if self.annotation is not None:
            return ("annotation", self.annotation)
        return ("image", self.action if self.action in FACET_ACTIONS else "label")


def _conflict(a: Record, b: Record) -> bool:
    if a.slot == b.slot:
        return True
    if "drop image" in (a.kind, b.kind):
        return True  # a dropped image has nothing left to fix
    # A whole new class and a facet of the class are two answers to one question.
    whats = {a.slot, b.slot}
    return ("image", "label") in whats and any(("image", f) in whats for f in FACET_ACTIONS)


@dataclass
class SampleFix:
    """Every record that applies to one sample."""

    records: list[Record] = field(default_factory=list)

    @property
    def drop(self) -> bool:
        return any(r.kind == "drop image" for r in self.records)

    def annotation_records(self) -> dict:
        return {r.annotation: r for r in self.records if r.annotation is not None}

    def image_records(self) -> list[Record]:
        return [r for r in self.records if r.annotation is None and r.kind != "drop image"]


@dataclass
class Applied:
    """What one source took from the corrections file: the records that matched, counted by kind."""

    lines: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)

    def add(self, record: Record) -> None:
        if record.where not in self.lines:
            self.lines.add(record.where)
            self.counts[record.kind] += 1


class Corrections:
    def __init__(self, path: Path, records: list[Record], content: bytes):
        self.path, self.records = path, records
        self.fingerprint = hashlib.sha1(content).hexdigest()

    def cache_part(self) -> tuple[str, ...]:
        """What a mask cache key gains: the file's content (changed corrections, new masks)."""
        return (f"corrections:{self.fingerprint}",)

    def match(self, sample_ids: list[str], applied: Applied) -> dict[int, SampleFix]:
        """Sample index -> its fix, for the samples some record names (by id or by a folder
        above the id). Contradictory records meeting on one sample are an error."""
        index = {sid: i for i, sid in enumerate(sample_ids)}
        under: dict[str, list[int]] = {}
        for i, sid in enumerate(sample_ids):
            parts = sid.split("/")
            for k in range(1, len(parts)):
                under.setdefault("/".join(parts[:k]), []).append(i)
        fixes: dict[int, SampleFix] = {}
        for r in self.records:
            key = r.image.strip("/")
            hits = [index[key]] if key in index else under.get(key, [])
            if hits and r.annotation is not None and key not in index:
                raise DataError(f"{r.where}: {r.image!r} is a folder; an annotation record names one image")
            for i in hits:
                fix = fixes.setdefault(i, SampleFix())
                for other in fix.records:
                    if _conflict(other, r):
                        raise DataError(f"{r.where}: contradicts {other.where} (both change {sample_ids[i]!r}); keep one")
                fix.records.append(r)
                applied.add(r)
        return fixes


def load_corrections(data_cfg, split: str) -> Corrections | None:
    """The configured corrections for a labelled split; None without data.corrections or for test."""
    if not getattr(data_cfg, "corrections", None) or split == "test":
        return None
    return read_corrections(data_cfg.resolve(data_cfg.corrections))


_READ: dict[tuple, Corrections] = {}


def read_corrections(path: Path) -> Corrections:
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the corrections file (data.corrections): {e.strerror or e}") from None
    key = (str(path.resolve()), hashlib.sha1(content).hexdigest())
    if key not in _READ:  # every split and fold asks; the file is parsed once
        raw = _csv_rows(path, content) if path.suffix.lower() == ".csv" else _yaml_rows(path, content)
        records = [_record(path, line, row) for line, row in raw]
        _check_contradictions(records)
        _READ[key] = Corrections(path, records, content)
    return _READ[key]


class _LineLoader(UniqueKeyLoader):
    """The config's safe, repeated-key-refusing loader, with each record's line number kept
    so that errors can name it."""


def _mapping_with_line(loader, node):
    return {"__line__": node.start_mark.line + 1, **loader.construct_mapping(node, deep=True)}


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _yaml_rows(path: Path, content: bytes) -> list[tuple[int, dict]]:
    try:
        doc = yaml.load(content.decode("utf-8"), Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        at = f": line {mark.line + 1}" if mark else ""
        raise DataError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if doc is None:
        return []
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise DataError(f"{path}: a corrections file is a list of records (- image: ..., action: ...)")
    return [(r.pop("__line__"), r) for r in doc]


def _csv_rows(path: Path, content: bytes) -> list[tuple[int, dict]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    kept = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not kept:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(line for _, line in kept))))
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in FIELDS]
    if unknown:
        raise DataError(f"{path}: line {kept[0][0]}: unknown column(s) {unknown} (columns: {', '.join(FIELDS)})")
    out = []
    for (n, _), row in zip(kept[1:], rows[1:]):
        if len(row) > len(header):
            raise DataError(f"{path}: line {n}: {len(row)} fields for {len(header)} columns")
        out.append((n, {h: v.strip() for h, v in zip(header, row) if v.strip() != ""}))
    return out


def _as_id(value):
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _record(path: Path, line: int, row: dict) -> Record:
    where = f"{path}: line {line}"
    unknown = [k for k in row if k not in FIELDS]
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown} (keys: {', '.join(FIELDS)})")
    image, action = row.get("image"), row.get("action")
    if not isinstance(image, (str, int)) or str(image).strip() == "":
        raise DataError(f"{where}: 'image' (a sample id or folder) is missing")
    if action not in ACTIONS:
        raise DataError(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
    annotation = _as_id(row.get("annotation"))
    if annotation is not None and (isinstance(annotation, bool) or not isinstance(annotation, (int, str))):
        raise DataError(f"{where}: annotation {annotation!r} must be an annotation id or index")
    value = row.get("value")
    if action == "drop":
        if value is not None:
            raise DataError(f"{where}: drop takes no value (got {value!r})")
    elif value is None or str(value).strip() == "":
        raise DataError(f"{where}: {action} needs a value")
    if action in FACET_ACTIONS:
        if annotation is not None:
            raise DataError(f"{where}: {action} changes an image's class; it takes no annotation")
        value = _facet_value(where, action, value)
    elif action == "relabel":
        value = str(value).strip()
    return Record(where, str(image).strip(), annotation, action, value)


def _facet_value(where: str, action: str, value):
    text = str(value).strip().lower()
    if action == "mask":
        if text not in maskstatus.MASK_NAMES:
            raise DataError(f"{where}: mask {value!r} is not one of {', '.join(maskstatus.MASK_NAMES)}")
        return text
    if action == "gender":
        if text not in maskstatus.GENDERS:
            raise DataError(f"{where}: gender {value!r} is not one of {', '.join(maskstatus.GENDERS)}")
        return text
    if not text.isdigit():
        raise DataError(f"{where}: age {value!r} is not a whole number of years")
    return int(text)


def _check_contradictions(records: list[Record]) -> None:
    seen: dict[str, list[Record]] = {}
    for r in records:
        for other in seen.get(r.image.strip("/"), []):
            if _conflict(other, r):
                raise DataError(f"{r.where}: contradicts {other.where} (both change {r.image!r}); keep one")
        seen.setdefault(r.image.strip("/"), []).append(r)


# ---------------------------------------------------------------------- what layouts share


def class_of(record: Record, classes) -> int:
    """The training class a relabel record names (a DataError when it names none)."""
    if record.value not in classes:
        shown = ", ".join(list(classes)[:12]) + (" ..." if len(classes) > 12 else "")
        raise DataError(f"{record.where}: relabel to {record.value!r}: not a training class ({shown})")
    return list(classes).index(record.value)


def only_images(fix: SampleFix, layout: str) -> None:
    """A DataError for any record but an image drop (layouts without annotations or image classes)."""
    for r in fix.records:
        if r.kind != "drop image":
            raise DataError(f"{r.where}: {layout} data takes only image drops here ({r.kind} is not possible)")


def fix_ids(ids: list[str], corrections: Corrections | None, applied: Applied, layout: str) -> list[int]:
    """Positions of the sample ids that stay, for layouts whose only fix is dropping an image."""
    if corrections is None:
        return list(range(len(ids)))
    fixes = corrections.match(ids, applied)
    for fix in fixes.values():
        only_images(fix, layout)
    return [i for i in range(len(ids)) if not (i in fixes and fixes[i].drop)]


def format_record(image: str, action: str, value=None, annotation=None) -> str:
    """One record as a YAML list item on one line (what `seglab data corrections-template` writes)."""
    import json

    parts = [f"image: {json.dumps(image)}"]
    if annotation is not None:
        parts.append(f"annotation: {json.dumps(annotation)}")
    parts.append(f"action: {action}")
    if value is not None:
        parts.append(f"value: {json.dumps(value)}")
    return "- {" + ", ".join(parts) + "}"


def summarise(corrections: Corrections, applied: list[Applied]) -> tuple[dict[str, int], list[str]]:
    """Records applied per kind over the labelled splits, and one problem per record nothing matched."""
    lines, counts = set(), Counter()
    for a in applied:
        for r in corrections.records:
            if r.where in a.lines and r.where not in lines:
                lines.add(r.where)
                counts[r.kind] += 1
    unmatched = [f"{r.where}: {r.image!r} matches no image of the labelled splits (train, val)"
                 for r in corrections.records if r.where not in lines]
    return {k: counts[k] for k in KINDS if counts[k]}, unmatched
