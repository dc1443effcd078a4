"""Classification data: three layouts read into one list of samples per split.

A reader turns a config split into `Sample`s (image path, class index or None, group,
id) plus one line per problem found; the dataset decodes and augments. Layouts:

- `imagefolder`: `<split>/<class name>/**/*.jpg`; an unlabelled (test) split is any
  folder of images, searched recursively.
- `csv`: a CSV with a path column (relative to data.root) and a label column (class
  name or index); the label column is optional in the test CSV.
- `maskstatus` (competition C): `<split>/train.csv` + `<split>/images/<id>_<gender>_<race>_<age>/<mask kind>.*`
  for labelled splits, `<split>/info.csv` (ImageID, ans) + `<split>/images/` for the test split.

Without `data.val`, the validation split is one fold of a StratifiedGroupKFold over the
train split: groups are persons (maskstatus), the CSV's group column, or single images,
so no person's images are ever on both sides. Pseudo-labelled images (data.classification
.pseudo_labels) join the training side only.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from seglab.classification import maskstatus
from seglab.data.dataset import read_image
from seglab.data.labels import LabelSpec
from seglab.data.sources import IMAGE_EXTENSIONS
from seglab.data.transforms import build_transform, make_transform
from seglab.errors import ConfigError, DataError, DataValidationError, SeglabError
from seglab.registry import Registry

READERS = Registry("classification data format")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int | None
    group: str
    id: str


@dataclass
class Split:
    name: str
    samples: list[Sample]
    problems: list[str]

    @property
    def has_labels(self) -> bool:
        return bool(self.samples) and all(s.label is not None for s in self.samples)

    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} (header: {header})")
    return rows


def _class_index(value: str, classes: list[str]) -> int | None:
    value = str(value).strip()
    if value in classes:
        return classes.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(classes):
        return int(value)
    return None


# ---------------------------------------------------------------- readers


@READERS.register("imagefolder")
class ImageFolderReader:
    @staticmethod
    def classes(data_cfg) -> list[str]:
        if data_cfg.classes:
            return list(data_cfg.classes)
        folder = data_cfg.split_path("train") or data_cfg.split_path("val")
        if folder is None or not folder.is_dir():
            raise ConfigError(f"data.train: imagefolder class folders not found at {folder} (or give data.classes)")
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    @staticmethod
    def read(data_cfg, split: str, classes: list[str]) -> Split:
        folder = data_cfg.split_path(split)
        if not folder.is_dir():
            raise DataError(f"data.{split}: folder not found: {folder}")
        if split == "test":
            return Split(str(folder), [Sample(p, None, p.relative_to(folder).as_posix(), p.relative_to(folder).as_posix())
                                       for p in _images_under(folder)], [])
        samples, problems = [], []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if sub.name not in classes:
                problems.append(f"{sub}: folder {sub.name!r} is not a class (classes: {', '.join(classes)})")
                continue
            for p in _images_under(sub):
                rel = p.relative_to(folder).as_posix()
                samples.append(Sample(p, classes.index(sub.name), rel, rel))
        return Split(str(folder), samples, problems)


@READERS.register("csv")
class CsvReader:
    @staticmethod
    def classes(data_cfg) -> list[str]:
        if data_cfg.classes:
            return list(data_cfg.classes)
        path = data_cfg.split_path("train")
        if path is None:
            raise ConfigError("data.classes: the csv format needs data.classes or a data.train CSV to read the labels from")
        col = data_cfg.classification.label_column
        values = sorted({r[col].strip() for r in _read_csv(path, (col,))})
        if values and all(v.isdigit() for v in values):
            return [str(i) for i in range(max(int(v) for v in values) + 1)]
        return values

    @staticmethod
    def read(data_cfg, split: str, classes: list[str]) -> Split:
        path = data_cfg.split_path(split)
        cc = data_cfg.classification
        rows = _read_csv(path, (cc.path_column,) + ((cc.label_column,) if split != "test" else ()))
        samples, problems = [], []
        for line, row in enumerate(rows, start=2):
            rel = row[cc.path_column].strip()
            label = None
            if row.get(cc.label_column) not in (None, "") and split != "test":
                label = _class_index(row[cc.label_column], classes)
                if label is None:
                    problems.append(f"{path}: line {line}: label {row[cc.label_column]!r} is not a class (classes: {', '.join(classes[:8])}...)")
                    continue
            elif split != "test":
                problems.append(f"{path}: line {line}: empty label")
                continue
            group = row[cc.group_column].strip() if cc.group_column and row.get(cc.group_column) else rel
            samples.append(Sample(_resolve(data_cfg, rel), label, group, rel))
        return Split(str(path), samples, problems)


@READERS.register("maskstatus")
class MaskStatusReader:
    @staticmethod
    def classes(data_cfg) -> list[str]:
        names = maskstatus.class_names(data_cfg.classification.age_bounds)
        if data_cfg.classes and list(data_cfg.classes) != names:
            raise ConfigError("data.classes: the maskstatus classes are fixed by the encoding; leave data.classes empty")
        return names

    @staticmethod
    def read(data_cfg, split: str, classes: list[str]) -> Split:
        folder = data_cfg.split_path(split)
        if split == "test":
            return MaskStatusReader._read_eval(folder)
        bounds = data_cfg.classification.age_bounds
        images = folder / "images"
        if not images.is_dir():
            raise DataError(f"data.{split}: {images}: folder not found (expected <split>/images/<id>_<gender>_<race>_<age>/)")
        table = folder / "train.csv"
        if table.is_file():
            rows = [(r["path"].strip(), r.get("gender"), r.get("age"), f"{table}: line {i}")
                    for i, r in enumerate(_read_csv(table, ("path",)), start=2)]
        else:  # the folder names carry everything
            rows = [(p.name, None, None, str(p)) for p in sorted(images.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        samples, problems = [], []
        for name, gender, age, where in rows:
            try:
                person, folder_gender, folder_age = maskstatus.parse_person(name)
                gender = (gender or folder_gender).strip()
                age = int(str(age if age not in (None, "") else folder_age).strip())
            except ValueError as e:
                problems.append(f"{where}: {e}")
                continue
            if not (images / name).is_dir():
                problems.append(f"{where}: person folder not found: {images / name}")
                continue
            # Hidden files (macOS `._mask1.jpg` forks were in the real data) are not images.
            files = {p.stem: p for p in (images / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")}
            missing = [k for k in maskstatus.MASK_KINDS if k not in files]
            if missing:
                problems.append(f"{images / name}: missing image(s) {', '.join(missing)}")
            for kind in maskstatus.MASK_KINDS:
                if kind not in files:
                    continue
                try:
                    label = maskstatus.label_of(kind, gender, age, bounds)
                except ValueError as e:
                    problems.append(f"{where}: {e}")
                    break
                samples.append(Sample(files[kind], label, person, f"{name}/{files[kind].name}"))
        return Split(str(folder), samples, problems)

    @staticmethod
    def _read_eval(folder: Path) -> Split:
        table = folder / "info.csv"
        rows = _read_csv(table, ("ImageID",))
        samples, problems, seen = [], [], set()
        for line, row in enumerate(rows, start=2):
            image_id = row["ImageID"].strip()
            if image_id in seen:
                problems.append(f"{table}: line {line}: duplicate ImageID {image_id!r}")
            seen.add(image_id)
            samples.append(Sample(folder / "images" / image_id, None, image_id, image_id))
        return Split(str(table), samples, problems)


def _resolve(data_cfg, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(data_cfg.root) / p


# ---------------------------------------------------------------- splits


def resolve_labels(cfg) -> LabelSpec:
    classes = READERS.get(cfg.data.format, "data.format").classes(cfg.data)
    if len(classes) < 2:
        raise ConfigError(f"data.classes: need at least 2 classes, got {classes}")
    return LabelSpec(tuple(classes), cfg.data.ignore_index, {}, task="classification")


def fold_indices(labels: np.ndarray, groups: list[str], n_splits: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of one StratifiedGroupKFold fold: groups never straddle the two."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise DataError(f"cannot make {n_splits} folds from {n_groups} groups (persons); lower data.classification.n_splits")
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        folds = list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(
            np.zeros(len(labels)), labels, groups))
    return folds[fold]


def read_pseudo_labels(data_cfg, classes: list[str]) -> Split:
    path = _resolve(data_cfg, data_cfg.classification.pseudo_labels)
    rows = _read_csv(path, ("path", "label"))
    samples, problems = [], []
    for line, row in enumerate(rows, start=2):
        label = _class_index(row["label"], classes)
        if label is None:
            problems.append(f"{path}: line {line}: label {row['label']!r} is not a class")
            continue
        samples.append(Sample(_resolve(data_cfg, row["path"].strip()), label, f"pseudo:{row['path']}", row["path"].strip()))
    return Split(str(path), samples, problems)


def load_split(cfg, split: str, labels: LabelSpec) -> Split:
    """The samples of a split; without data.val, train and val are two sides of one fold."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    data, reader = cfg.data, READERS.get(cfg.data.format, "data.format")
    classes = list(labels.classes)
    carve = split in ("train", "val") and data.val is None
    source = "train" if carve else split
    if getattr(data, source) is None:
        raise ConfigError(f"data.{source} is not set in the config")
    result = reader.read(data, source, classes)
    if carve:
        cc = data.classification
        if not result.samples:
            raise DataError(f"{result.name}: no labelled images found")
        try:
            tr, va = fold_indices(result.labels(), [s.group for s in result.samples], cc.n_splits, cc.fold, cfg.seed)
        except DataError as e:  # keep the reader's problems: they are often the reason
            raise DataValidationError(result.problems + [str(e)]) from None
        keep = tr if split == "train" else va
        result = Split(f"{result.name} (fold {cc.fold}/{cc.n_splits} {split})", [result.samples[i] for i in keep], result.problems)
    if split == "train" and data.classification.pseudo_labels:
        extra = read_pseudo_labels(data, classes)
        result = Split(result.name, result.samples + extra.samples, result.problems + extra.problems)
    return result


def validate_data(cfg, labels: LabelSpec, splits=SPLITS, check_files: bool = True) -> list[str]:
    """Every problem of the configured splits, one line each; [] when usable."""
    problems: list[str] = []
    for split in splits:
        if getattr(cfg.data, split) is None and not (split == "val" and cfg.data.train is not None):
            continue
        try:
            s = load_split(cfg, split, labels)
        except DataValidationError as e:
            problems.extend(e.problems)
            continue
        except SeglabError as e:
            problems.append(str(e))
            continue
        problems.extend(s.problems)
        if not s.samples:
            problems.append(f"{s.name}: empty split ({split})")
        if check_files:
            problems.extend(f"{s.name}: {x.id}: image file not found: {x.path}" for x in s.samples if not x.path.is_file())
    return list(dict.fromkeys(problems))  # train and val read the same folder when val is carved from it


def check_data(cfg, labels: LabelSpec, splits) -> None:
    problems = validate_data(cfg, labels, splits)
    if problems:
        raise DataValidationError(problems)


# ---------------------------------------------------------------- datasets


class ClassificationDataset(Dataset):
    """Items: {"image": uint8 [3, H, W], "label": int64 (if labelled), "id": str, "index": int}."""

    def __init__(self, split: Split, transform, with_labels: bool = True):
        if with_labels and not split.has_labels:
            raise DataError(f"{split.name}: split has no labels")
        self.split, self.transform, self.with_labels = split, transform, with_labels

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.split.samples[i]
        image = self.transform(image=read_image(s.path, f"{self.split.name}: {s.id}"))["image"]
        item = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "id": s.id, "index": i}
        if self.with_labels:
            item["label"] = torch.tensor(s.label, dtype=torch.int64)
        return item


class TwoViewDataset(Dataset):
    """Unlabelled images for consistency training: {"weak": uint8 [3,H,W], "strong": uint8 [3,H,W]}."""

    def __init__(self, paths: list[Path], weak, strong):
        if not paths:
            raise DataError("classification.uda: no unlabelled images found")
        self.paths, self.weak, self.strong = paths, weak, strong

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        image = read_image(self.paths[i], "unlabelled image")
        views = {k: t(image=image)["image"] for k, t in (("weak", self.weak), ("strong", self.strong))}
        return {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for k, v in views.items()}


def build_dataset(cfg, split: str, labels: LabelSpec, train: bool = False, with_labels: bool | None = None) -> ClassificationDataset:
    s = load_split(cfg, split, labels)
    if not s.samples:
        raise DataError(f"{s.name}: empty split ({split})")
    transform = build_transform(cfg.augment, cfg.data.image_size, train=train)
    return ClassificationDataset(s, transform, s.has_labels if with_labels is None else with_labels)


def view_transform(specs: list[dict], image_size, where: str) -> A.Compose:
    from seglab.config import TransformSpec

    ops = [A.Resize(height=image_size[0], width=image_size[1])]
    ops += [make_transform(TransformSpec(**spec), f"{where}[{i}]") for i, spec in enumerate(specs)]
    return A.Compose(ops)


def unlabelled_dataset(cfg, labels: LabelSpec) -> TwoViewDataset:
    uda = cfg.classification.uda
    if uda.unlabelled:
        folder = _resolve(cfg.data, uda.unlabelled)
        if not folder.is_dir():
            raise DataError(f"classification.uda.unlabelled: folder not found: {folder}")
        paths = _images_under(folder)
    else:
        if cfg.data.test is None:
            raise ConfigError("classification.uda: give uda.unlabelled or data.test (its images are the unlabelled set)")
        paths = [s.path for s in load_split(cfg, "test", labels).samples]
    size = cfg.data.image_size
    return TwoViewDataset(paths, view_transform(uda.weak, size, "classification.uda.weak"),
                          view_transform(uda.strong, size, "classification.uda.strong"))


def class_counts(split: Split, num_classes: int) -> np.ndarray:
    return np.bincount(split.labels(), minlength=num_classes)


def weighted_sampler(split: Split, num_classes: int, seed: int) -> WeightedRandomSampler:
    """Each class drawn equally often on average: sample weight 1 / (its class's count)."""
    counts = class_counts(split, num_classes)
    weights = 1.0 / counts[split.labels()]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights), replacement=True, generator=generator)
