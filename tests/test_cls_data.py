"""Classification data: the three layouts, person-level folds, pseudo-labels, sampler."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.config import config_from_dict
from seglab.data import (
    build_dataset,
    check_data,
    open_source,
    resolve_labels,
    validate_data,
)
from seglab.data.maskstatus import label_of
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from seglab.errors import DataError


@pytest.fixture(scope="module")
def mask_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskstatus")
    make_maskstatus_dataset(root, n_train=15, n_eval=2, size=32, seed=1)
    return root


def cls_config(root, **data):
    return config_from_dict({"task": "classification", "data": {
        "format": "maskstatus", "root": str(root), "train": "train", "test": "eval", "image_size": [32, 32], **data}})


def load_split(cfg, split, labels):
    return open_source(cfg, split, labels)


def ids(source):
    return [source.sample_id(i) for i in range(len(source))]


def persons(source):
    return {source.group(i) for i in range(len(source))}


def targets(source):
    return [source.load_target(i) for i in range(len(source))]


@pytest.mark.parametrize("n_splits", [3, 5])
def test_person_level_folds_never_leak_a_person(mask_root, n_splits):
    all_persons, val_union = None, []
    for fold in range(n_splits):
        cfg = config_from_dict({"task": "classification", "kfold": {"folds": n_splits}, "data": {
            "format": "maskstatus", "root": str(mask_root), "train": "train", "test": "eval", "image_size": [32, 32],
            "fold": fold}})
        labels = resolve_labels(cfg)
        train, val = load_split(cfg, "train", labels), load_split(cfg, "val", labels)
        assert not persons(train) & persons(val), "a person is on both sides"
        assert len(train) + len(val) == 15 * 7
        all_persons = all_persons or persons(train) | persons(val)
        assert persons(train) | persons(val) == all_persons
        val_union.append(persons(val))
        # all seven images of a person stay together
        for group in persons(val):
            assert sum(val.group(i) == group for i in range(len(val))) == 7
    assert set().union(*val_union) == all_persons and sum(map(len, val_union)) == len(all_persons)


def test_maskstatus_reader_labels_from_folders_and_skips_hidden_files(mask_root):
    cfg = cls_config(mask_root, val="train")  # read the whole train folder as one split
    labels = resolve_labels(cfg)
    split = load_split(cfg, "val", labels)
    assert split.problems() == [] and len(split.samples) == 15 * 7
    assert not any(s.path.name.startswith(".") for s in split.samples)
    assert any(s.path.suffix == ".png" for s in split.samples)
    for s in split.samples:
        folder, file = s.id.split("/")
        _, gender, _, age = folder.split("_")
        assert s.label == label_of(Path(file).stem, gender, int(age))
    test = load_split(cfg, "test", labels)
    with open(mask_root / "eval" / "info.csv") as f:
        assert [s.id for s in test.samples] == [r["ImageID"] for r in csv.DictReader(f)]
    assert all(s.label is None for s in test.samples)


def test_age_bounds_knob_changes_the_labels(mask_root):
    base = cls_config(mask_root, val="train")
    moved = cls_config(mask_root, val="train", maskstatus={"age_bounds": [30, 40]})
    a = load_split(base, "val", resolve_labels(base))
    b = load_split(moved, "val", resolve_labels(moved))
    ages = [int(s.id.split("/")[0].split("_")[-1]) for s in a.samples]
    for s, t, age in zip(a.samples, b.samples, ages):
        assert (s.label % 3 == t.label % 3) == (age < 40 or age >= 60)
    assert resolve_labels(moved).classes[2] == "wear/male/>=40"


def test_maskstatus_problems_are_listed(mask_root, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(mask_root, root)
    person = sorted((root / "train" / "images").iterdir())[3]
    next(person.glob("normal.*")).unlink()
    (root / "train" / "train.csv").write_text((root / "train" / "train.csv").read_text() + "999,x,Asian,20,999_x_Asian_20\n")
    cfg = cls_config(root)
    problems = validate_data(cfg, resolve_labels(cfg), ("train",))
    assert any(f"{person}: missing image(s) normal" in p for p in problems)
    assert any("person folder not found" in p and "999_x_Asian_20" in p for p in problems)


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((20, 24, 3), 90, np.uint8))


def test_imagefolder_layout(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                _image(tmp_path / split / c / f"{i}.jpg")
    _image(tmp_path / "test" / "sub" / "a.png")
    _image(tmp_path / "test" / "b.jpg")
    cfg = config_from_dict({"task": "classification", "data": {"format": "imagefolder", "root": str(tmp_path), "train": "train",
                                                               "val": "val", "test": "test", "image_size": [16, 16]}})
    labels = resolve_labels(cfg)
    assert labels.classes == ("cat", "dog")
    train = load_split(cfg, "train", labels)
    assert sorted((s.id, s.label) for s in train.samples)[:2] == [("cat/0.jpg", 0), ("cat/1.jpg", 0)]
    assert [s.id for s in load_split(cfg, "test", labels).samples] == ["b.jpg", "sub/a.png"]
    item = build_dataset(cfg, "val", labels)[3]
    assert item["image"].shape == (3, 16, 16) and item["target"].item() == 1
    assert validate_data(cfg, labels) == []


def test_csv_layout_with_groups_names_and_indices(tmp_path):
    rows = []
    for i in range(12):
        _image(tmp_path / "img" / f"{i}.jpg")
        rows.append((f"img/{i}.jpg", ["b", "a", "c"][i % 3], f"p{i // 2}"))
    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "cls", "person"])
        w.writerows(rows)
    (tmp_path / "test.csv").write_text("file\nimg/0.jpg\nimg/5.jpg\n")
    cfg = config_from_dict({"task": "classification", "data": {
        "format": "csv", "root": str(tmp_path), "train": "train.csv", "test": "test.csv", "image_size": [16, 16],
        "csv": {"path_column": "file", "label_column": "cls", "group_column": "person"}, "fold": 0}, "kfold": {"folds": 3}})
    labels = resolve_labels(cfg)
    assert labels.classes == ("a", "b", "c")
    train, val = load_split(cfg, "train", labels), load_split(cfg, "val", labels)
    assert not persons(train) & persons(val)
    assert len(train) + len(val) == 12 and len(persons(train) | persons(val)) == 6
    assert dict(zip(ids(train) + ids(val), targets(train) + targets(val)))["img/0.jpg"] == 1
    assert ids(load_split(cfg, "test", labels)) == ["img/0.jpg", "img/5.jpg"]
    (tmp_path / "train.csv").write_text("file,cls,person\nimg/0.jpg,zebra,p0\nimg/1.jpg,2,p0\n")
    problems = validate_data(cfg, labels, ("train",), check_files=False)
    assert any("line 2: label 'zebra' is not a class" in p for p in problems)


def test_pseudo_labels_join_the_training_side_only(mask_root, tmp_path):
    eval_images = sorted((mask_root / "eval" / "images").iterdir())[:3]
    pseudo = tmp_path / "pseudo.csv"
    pseudo.write_text("path,label,confidence\n" + "".join(
        f"{p.relative_to(mask_root).as_posix()},{lab},0.99\n" for p, lab in zip(eval_images, ["not_worn/female/<30", "3", "wear/male/<30"])))
    cfg = cls_config(mask_root, extra_train=[str(pseudo)], fold=0)
    plain = cls_config(mask_root, fold=0)
    labels = resolve_labels(cfg)
    train, base = load_split(cfg, "train", labels), load_split(plain, "train", labels)
    assert len(train) == len(base) + 3
    assert targets(train)[-3:] == [15, 3, 0]
    assert ids(train)[-3:] == [p.relative_to(mask_root).as_posix() for p in eval_images]
    assert ids(load_split(cfg, "val", labels)) == ids(load_split(plain, "val", labels))
    pseudo.write_text("path,label\neval/images/x.jpg,nope\n")
    with pytest.raises(DataError, match="problem"):
        check_data(cfg, labels, ("train",))


def test_class_balanced_sampler_draws_classes_evenly(mask_root):
    from seglab.data.sampling import build_train_sampler

    cfg = cls_config(mask_root, sampler={"name": "class_balanced", "power": 1})
    labels = resolve_labels(cfg)
    dataset = build_dataset(cfg, "train", labels, train=True)
    sampler = build_train_sampler(dataset, cfg.data.sampler, seed=0)
    y = np.array(targets(dataset.source))
    counts = np.bincount(y, minlength=18)
    assert len(set(counts[counts > 0].tolist())) > 1   # the classes are not balanced to start with
    weights = sampler.weights.numpy()
    per_class = [weights[y == c].sum() for c in range(18) if counts[c]]
    assert np.allclose(per_class, per_class[0])
    assert len(list(iter(sampler))) == len(dataset)
