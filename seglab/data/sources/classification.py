"""Image-classification layouts: one class per image.

- `imagefolder`: `<split>/<class name>/**/*.jpg`; an unlabelled (test) split is any
  folder of images, searched recursively.
- `csv`: a CSV with a path column (relative to data.root) and a label column (class
  name or index), optionally a group column; the label column is optional in the test CSV.
- `maskstatus` (competition C): `<split>/train.csv` + `<split>/images/<id>_<gender>_<race>_<age>/<mask kind>.*`
  for labelled splits, `<split>/info.csv` (ImageID, ans) + `<split>/images/` for the test split.
  Its classes have facets (mask, gender, age band), so the metric also reports their accuracies.

A source reads its split once into `Sample`s and keeps the problems it found, so
`seglab data validate` lists them all; the image files are checked by `problems()`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import Field, field_validator

from seglab.config.schema import Options
from seglab.data import maskstatus
from seglab.data.corrections import FACET_ACTIONS, Applied, Corrections, Record, class_of, load_corrections
from seglab.data.images import IMAGE_EXTENSIONS, image_size, image_decode_problem, images_under, read_image, truncated_jpeg
from seglab.data.labels import LabelSpec
from seglab.data.sources.base import Source
from seglab.data.sources.registry import SOURCES
from seglab.errors import ConfigError, DataError
from seglab.paths import outside_problem, outside_root_problem, split_folders


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int | None
    group: str | None
    id: str


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[dict]:
    """The rows of a CSV with a header, as dicts; a row with fewer or more values than the
    header has columns is a DataError naming its line (a cut last row is the common case)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = []
            for values in reader:
                if not values or values == [""]:
                    continue  # a blank line
                if len(values) != len(header):
                    raise DataError(f"{path}: line {reader.line_num}: {len(values)} value(s), the header has {len(header)} column(s)")
                rows.append(dict(zip(header, values)))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} (header: {header})")
    return rows


def is_index(text: str) -> bool:
    """ASCII digits only (str.isdigit() also accepts '²' or '٣', which int() refuses or reads as
    another number), and short: no class list is a billion long, and int() refuses thousands of digits."""
    return text.isascii() and text.isdigit() and len(text) < 10


def class_index(value: str, classes: list[str]) -> int | None:
    value = str(value).strip()
    if value in classes:
        return classes.index(value)
    if is_index(value) and int(value) < len(classes):
        return int(value)
    return None


# ---------------------------------------------------------------------- data.corrections on image classes


def fix_samples(samples: list[Sample], corrections: Corrections | None, classes, applied: Applied,
                age_bounds=None) -> list[Sample]:
    """Classification samples with drops and new labels (age_bounds given: mask-status facets too)."""
    if corrections is None:
        return samples
    fixes = corrections.match([s.id for s in samples], applied)
    out = []
    for i, sample in enumerate(samples):
        fix = fixes.get(i)
        if fix is None:
            out.append(sample)
            continue
        if fix.drop:
            continue
        label = sample.label
        for r in fix.records:
            if r.annotation is not None:
                raise DataError(f"{r.where}: classification data has no annotations (remove 'annotation')")
            if r.action == "relabel":
                label = class_index(r.value, list(classes))
                if label is None:
                    class_of(r, classes)
        facets = [r for r in fix.records if r.action in FACET_ACTIONS]
        if facets:
            if age_bounds is None:
                raise DataError(f"{facets[0].where}: {facets[0].action} is a mask-status field; this data has none")
            label = set_facets(label, facets, age_bounds)
        out.append(replace(sample, label=label))
    return out


def set_facets(label: int, records: list[Record], age_bounds) -> int:
    """A mask-status class with the mask / gender / age records applied."""
    mask, gender, band = maskstatus.decode(label)
    for r in records:
        if r.action == "mask":
            mask = maskstatus.MASK_NAMES.index(r.value)
        elif r.action == "gender":
            gender = maskstatus.GENDERS[r.value]
        else:
            band = maskstatus.age_band(r.value, tuple(age_bounds))
    return maskstatus.encode(mask, gender, band)


class SampleSource(Source):
    """A split read into a list of samples; subclasses fill `samples` and `found`."""

    targets = ("class",)

    def __init__(self, data_cfg, split: str, labels: LabelSpec | None = None):
        self.labels, self.split = labels, split
        path = data_cfg.split_path(split)
        if path is None:
            raise ConfigError(f"data.{split} is not set in the config")
        self.name = str(path)
        self.cache_key = (self.name,)
        classes = list(labels.classes) if labels is not None else self._classes_or_none(data_cfg)
        self.samples, self.found = self.read(data_cfg, path, split, classes)
        self.applied = Applied()  # the data.corrections records this split took
        self.samples = fix_samples(self.samples, load_corrections(data_cfg, split), classes, self.applied,
                                   self.age_bounds(data_cfg))
        self.has_targets = bool(self.samples) and all(s.label is not None for s in self.samples)

    def _classes_or_none(self, data_cfg) -> list[str]:
        try:
            return list(self.resolve_labels(data_cfg).classes)
        except (ConfigError, DataError):
            return []

    @classmethod
    def resolve_labels(cls, data_cfg) -> LabelSpec:
        classes = cls.classes(data_cfg)
        if len(classes) < 2:
            raise ConfigError(f"data.classes: need at least 2 classes, got {classes}")
        return LabelSpec(tuple(classes), data_cfg.ignore_index, {}, "class", cls.facets(data_cfg))

    @staticmethod
    def facets(data_cfg) -> dict[str, tuple[int, ...]]:
        return {}

    @staticmethod
    def age_bounds(data_cfg) -> tuple[int, int] | None:
        """The age bands of mask-status classes (what an `age` correction is banded by); None elsewhere."""
        return None

    def __len__(self) -> int:
        return len(self.samples)

    def sample_id(self, i: int) -> str:
        return self.samples[i].id

    def group(self, i: int) -> str | None:
        return self.samples[i].group

    def image_path(self, i: int) -> Path:
        return self.samples[i].path

    def original_size(self, i: int) -> tuple[int, int]:
        return image_size(self.image_path(i), f"{self.name}: {self.sample_id(i)}")

    def load_image(self, i: int):
        return read_image(self.image_path(i), f"{self.name}: {self.sample_id(i)}")

    def load_target(self, i: int) -> int:
        return self.samples[i].label

    def classes_present(self, i: int) -> set[int]:
        return {self.samples[i].label}

    def problems(self, check_files: bool = True, deep: bool = False) -> list[str]:
        problems = list(self.found)
        if not self.samples:
            problems.append(f"{self.name}: empty split ({self.split})")
        for s in self.samples if check_files else ():
            if not s.path.is_file():
                problems.append(f"{self.name}: {s.id}: image file not found: {s.path}")
                continue
            broken = image_decode_problem(s.path) if deep else ("JPEG data ends early" if truncated_jpeg(s.path) else None)
            if broken:
                problems.append(f"{self.name}: {s.id}: truncated or corrupt image {s.path}: {broken}")
        return problems


@SOURCES.register("imagefolder")
class ImageFolderSource(SampleSource):
    @staticmethod
    def classes(data_cfg) -> list[str]:
        if data_cfg.classes:
            return list(data_cfg.classes)
        folder = data_cfg.split_path("train") or data_cfg.split_path("val")
        if folder is None or not folder.is_dir():
            raise ConfigError(f"data.train: imagefolder class folders not found at {folder} (or give data.classes)")
        # A folder without images is not a class: a class the model could never see would shift every index after it.
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and images_under(p))

    @staticmethod
    def read(data_cfg, folder: Path, split: str, classes: list[str]):
        if not folder.is_dir():
            raise DataError(f"data.{split}: folder not found: {folder}")
        if split == "test":
            return [Sample(p, None, None, p.relative_to(folder).as_posix()) for p in images_under(folder)], []
        samples, problems = [], []
        loose = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if loose:
            problems.append(f"{folder}: {len(loose)} image(s) lie loose in the split folder, outside any class folder "
                            f"(e.g. {loose[0]!r}); move them into <class>/ or remove them")
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            images = images_under(sub)
            if not images:
                continue  # an empty folder is not a class (see `classes`); nothing to read
            if sub.name not in classes:
                problems.append(f"{sub}: folder {sub.name!r} is not a class (classes: {', '.join(classes)})")
                continue
            samples.extend(Sample(p, classes.index(sub.name), None, p.relative_to(folder).as_posix()) for p in images)
        return samples, problems


class CsvOptions(Options):
    path_column: str = Field("path", description="column with the image path, relative to data.root")
    label_column: str = Field("label", description="column with the class (a name from data.classes, or an index)")
    group_column: str | None = Field(None, description="column naming each row's group (e.g. person id), kept together by splits; null = every row its own group")


@SOURCES.register("csv")
class CsvSource(SampleSource):
    options = CsvOptions

    @classmethod
    def classes(cls, data_cfg) -> list[str]:
        if data_cfg.classes:
            return list(data_cfg.classes)
        path = data_cfg.split_path("train")
        if path is None:
            raise ConfigError("data.classes: the csv format needs data.classes or a data.train CSV to read the labels from")
        col = cls.options_in(data_cfg).label_column
        values = sorted({r[col].strip() for r in read_csv_rows(path, (col,))})
        if values and all(is_index(v) for v in values):
            return [str(i) for i in range(max(int(v) for v in values) + 1)]
        return values

    @classmethod
    def read(cls, data_cfg, path: Path, split: str, classes: list[str]):
        return cls.read_table(data_cfg, path, split, classes, cls.options_in(data_cfg), data_cfg.allow_outside_root)

    @staticmethod
    def read_table(data_cfg, path: Path, split: str, classes: list[str], columns: CsvOptions, allow_outside):
        """The samples of a CSV whose columns `columns` names, and its problems; `allow_outside`
        as `seglab.paths.inside` takes it."""
        path_column, label_column, group_column = columns.path_column, columns.label_column, columns.group_column
        labelled = split != "test"
        rows = read_csv_rows(path, (path_column,) + ((label_column,) if labelled else ()))
        samples, problems, lines = [], [], {}
        for line, row in enumerate(rows, start=2):
            rel = (row[path_column] or "").strip()
            if not rel:
                problems.append(f"{path}: line {line}: empty {path_column}")
                continue
            if rel in lines:  # a repeated image is trained on twice, or predicted twice in a submission
                problems.append(f"{path}: line {line}: {path_column} {rel!r} is already on line {lines[rel]}")
                continue
            lines[rel] = line
            label = None
            if labelled:
                label = class_index(row[label_column] or "", classes) if (row[label_column] or "").strip() else None
                if label is None:
                    what = "empty label" if not (row[label_column] or "").strip() else f"label {row[label_column]!r} is not a class (classes: {', '.join(classes[:8])}...)"
                    problems.append(f"{path}: line {line}: {what}")
                    continue
            outside = outside_root_problem(rel, f"{path}: line {line}", allow_outside, Path(data_cfg.root))
            if outside:
                problems.append(outside)
                continue
            group = (row.get(group_column) or "").strip() or None if group_column else None
            samples.append(Sample(data_cfg.resolve(rel), label, group, rel))
        return samples, problems


class MaskStatusOptions(Options):
    age_bounds: tuple[int, int] = Field(
        (30, 60), description="age band edges [a, b]: age < a is band 0, a <= age < b band 1, age >= b band 2 (teams used 59 or 58 for b)"
    )

    @field_validator("age_bounds")
    @classmethod
    def _increasing(cls, v):
        if not 0 < v[0] < v[1]:
            raise ValueError(f"age_bounds must be two increasing positive ages, got {list(v)}")
        return v


@SOURCES.register("maskstatus")
class MaskStatusSource(SampleSource):
    options = MaskStatusOptions

    @classmethod
    def classes(cls, data_cfg) -> list[str]:
        names = maskstatus.class_names(cls.age_bounds(data_cfg))
        if data_cfg.classes and list(data_cfg.classes) != names:
            raise ConfigError("data.classes: the maskstatus classes are fixed by the encoding; leave data.classes empty")
        return names

    @staticmethod
    def facets(data_cfg) -> dict[str, tuple[int, ...]]:
        return maskstatus.FACETS

    @classmethod
    def age_bounds(cls, data_cfg) -> tuple[int, int]:
        return tuple(cls.options_in(data_cfg).age_bounds)

    @classmethod
    def read(cls, data_cfg, folder: Path, split: str, classes: list[str]):
        if split == "test":
            return MaskStatusSource._read_eval(folder)
        bounds = cls.age_bounds(data_cfg)
        images = folder / "images"
        if not images.is_dir():
            raise DataError(f"data.{split}: {images}: folder not found (expected <split>/images/<id>_<gender>_<race>_<age>/)")
        table = folder / "train.csv"
        if table.is_file():
            rows = [(r["path"].strip(), r.get("gender"), r.get("age"), f"{table}: line {i}")
                    for i, r in enumerate(read_csv_rows(table, ("path",)), start=2)]
        else:  # the folder names carry everything
            rows = [(p.name, None, None, str(p)) for p in sorted(images.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        samples, problems, people = [], [], {}
        for name, gender, age, where in rows:
            if outside_problem(name) or "/" in name or "\\" in name:
                problems.append(f"{where}: path {name!r} is not a person folder name in {images}")
                continue
            try:
                person, folder_gender, folder_age = maskstatus.parse_person(name)
                gender = (gender or folder_gender).strip().lower()
                age_text = str(age if age not in (None, "") else folder_age).strip()
                if not is_index(age_text.lstrip("-")):
                    raise ValueError(f"age {age_text!r} is not a whole number")
                age = int(age_text)
            except ValueError as e:
                problems.append(f"{where}: {e}")
                continue
            if not 0 <= age <= maskstatus.MAX_AGE:
                problems.append(f"{where}: age {age} is not a plausible age (0..{maskstatus.MAX_AGE})")
                continue
            # The table and the folder name both say who the person is: a disagreement means one is wrong.
            if gender != folder_gender or age != folder_age:
                problems.append(f"{where}: the table says {gender}, {age} but the folder name {name!r} says {folder_gender}, {folder_age}")
                continue
            if person in people:
                problems.append(f"{where}: person {person} appears twice (also {people[person]}); one person must be one folder")
                continue
            people[person] = where
            if not (images / name).is_dir():
                problems.append(f"{where}: person folder not found: {images / name}")
                continue
            # Hidden files (macOS `._mask1.jpg` forks were in the real data) are not images.
            files = {p.stem: p for p in (images / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")}
            missing = [k for k in maskstatus.MASK_KINDS if k not in files]
            if missing:
                problems.append(f"{images / name}: missing image(s) {', '.join(missing)}")
            unknown = sorted(k for k in files if k not in maskstatus.MASK_KINDS)
            if unknown:
                problems.append(f"{images / name}: image(s) {', '.join(unknown)} are not a mask kind ({', '.join(maskstatus.MASK_KINDS)})")
            for kind in maskstatus.MASK_KINDS:
                if kind not in files:
                    continue
                try:
                    label = maskstatus.label_of(kind, gender, age, bounds)
                except ValueError as e:
                    problems.append(f"{where}: {e}")
                    break
                samples.append(Sample(files[kind], label, person, f"{name}/{files[kind].name}"))
        loose = [p.name for p in images.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
        if loose:
            problems.append(f"{images}: {len(loose)} image(s) lie loose in the folder, outside any person folder "
                            f"(e.g. {sorted(loose)[0]!r}); move them into <id>_<gender>_<race>_<age>/ or remove them")
        return samples, problems

    @staticmethod
    def _read_eval(folder: Path):
        table = folder / "info.csv"
        rows = read_csv_rows(table, ("ImageID",))
        samples, problems, seen = [], [], set()
        for line, row in enumerate(rows, start=2):
            image_id = (row["ImageID"] or "").strip()
            outside = outside_root_problem(image_id, f"{table}: line {line}", False) or (
                f"{table}: line {line}: ImageID {image_id!r} is not a file name in {folder / 'images'}" if "/" in image_id or "\\" in image_id else None)
            if outside:
                problems.append(outside)
                continue
            if image_id in seen:
                problems.append(f"{table}: line {line}: duplicate ImageID {image_id!r}")
            seen.add(image_id)
            samples.append(Sample(folder / "images" / image_id, None, None, image_id))
        return samples, problems


class LabelledCsv(SampleSource):
    """An extra labelled set for classification (`data.extra_train`, e.g. `seglab pseudo`'s
    output): a CSV with `path` (relative to data.root) and `label` (a class name) columns."""

    def __init__(self, data_cfg, path: Path, labels: LabelSpec):
        self.labels, self.split, self.name = labels, "train", str(path)
        self.cache_key = (self.name,)
        # A seglab-written set names images of the config's own splits: those folders may be read.
        allow = True if data_cfg.allow_outside_root else tuple(split_folders(data_cfg))
        self.samples, self.found = CsvSource.read_table(data_cfg, path, "train", list(labels.classes),
                                                        CsvOptions(path_column="path", label_column="label"), allow)
        self.has_targets = True
