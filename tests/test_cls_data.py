"""Classification data: the three layouts, person-level folds, pseudo-labels, sampler."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.classification.data import (build_dataset, load_split, resolve_labels, validate_data,
                                        weighted_sampler)
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from seglab.config import config_from_dict
from seglab.errors import DataError


@pytest.fixture(scope="module")
def mask_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskstatus")
    make_maskstatus_dataset(root, n_train=15, n_eval=2, size=32, seed=1)
    return root


def cls_config(root, **data):
    return config_from_dict({"task": "classification", "data": {
        "format": "maskstatus", "root": str(root), "train": "train", "test": "eval", "image_size": [32, 32], **data}})


def persons(split):
    return {s.group for s in split.samples}


@pytest.mark.parametrize("n_splits", [3, 5])
def test_person_level_folds_never_leak_a_person(mask_root, n_splits):
    all_persons, val_union = None, []
    for fold in range(n_splits):
        cfg = cls_config(mask_root, classification={"n_splits": n_splits, "fold": fold})
        labels = resolve_labels(cfg)
        train, val = load_split(cfg, "train", labels), load_split(cfg, "val", labels)
        assert not persons(train) & persons(val), "a person is on both sides"
        assert len(train.samples) + len(val.samples) == 15 * 7
        all_persons = all_persons or persons(train) | persons(val)
        assert persons(train) | persons(val) == all_persons
        val_union.append(persons(val))
        # all seven images of a person stay together
        for group in persons(val):
            assert sum(s.group == group for s in val.samples) == 7
    assert set().union(*val_union) == all_persons and sum(map(len, val_union)) == len(all_persons)


def test_maskstatus_reader_labels_from_folders_and_skips_hidden_files(mask_root):
    cfg = cls_config(mask_root, val="train")  # read the whole train folder as one split
    labels = resolve_labels(cfg)
    split = load_split(cfg, "val", labels)
    assert not split.problems and len(split.samples) == 15 * 7
    assert not any(s.path.name.startswith(".") for s in split.samples)
    assert any(s.path.suffix == ".png" for s in split.samples)
    for s in split.samples:
        folder, file = s.id.split("/")
        _, gender, _, age = folder.split("_")
        from seglab.classification.maskstatus import label_of

        assert s.label == label_of(Path(file).stem, gender, int(age))
    test = load_split(cfg, "test", labels)
    with open(mask_root / "eval" / "info.csv") as f:
        assert [s.id for s in test.samples] == [r["ImageID"] for r in csv.DictReader(f)]
    assert all(s.label is None for s in test.samples)


def test_age_bounds_knob_changes_the_labels(mask_root):
    base = cls_config(mask_root, val="train")
    moved = cls_config(mask_root, val="train", classification={"age_bounds": [30, 40]})
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
    assert item["image"].shape == (3, 16, 16) and item["label"].item() == 1
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
        "classification": {"path_column": "file", "label_column": "cls", "group_column": "person", "n_splits": 3}}})
    labels = resolve_labels(cfg)
    assert labels.classes == ("a", "b", "c")
    train, val = load_split(cfg, "train", labels), load_split(cfg, "val", labels)
    assert not persons(train) & persons(val)
    assert {s.id: s.label for s in train.samples + val.samples}["img/0.jpg"] == 1
    assert [s.id for s in load_split(cfg, "test", labels).samples] == ["img/0.jpg", "img/5.jpg"]
    (tmp_path / "train.csv").write_text("file,cls,person\nimg/0.jpg,zebra,p0\nimg/1.jpg,2,p0\n")
    problems = validate_data(cfg, labels, ("train",), check_files=False)
    assert any("line 2: label 'zebra' is not a class" in p for p in problems)


def test_pseudo_labels_join_the_training_side_only(mask_root, tmp_path):
    eval_images = sorted((mask_root / "eval" / "images").iterdir())[:3]
    pseudo = tmp_path / "pseudo.csv"
    pseudo.write_text("path,label,confidence\n" + "".join(
        f"{p.relative_to(mask_root).as_posix()},{lab},0.99\n" for p, lab in zip(eval_images, ["not_worn/female/<30", "3", "wear/male/<30"])))
    cfg = cls_config(mask_root, classification={"pseudo_labels": str(pseudo)})
    plain = cls_config(mask_root)
    labels = resolve_labels(cfg)
    train, base = load_split(cfg, "train", labels), load_split(plain, "train", labels)
    assert len(train.samples) == len(base.samples) + 3
    assert [s.label for s in train.samples[-3:]] == [15, 3, 0]
    assert [s.id for s in load_split(cfg, "val", labels).samples] == [s.id for s in load_split(plain, "val", labels).samples]
    pseudo.write_text("path,label\neval/images/x.jpg,nope\n")
    with pytest.raises(DataError, match="data problem"):
        from seglab.classification.data import check_data

        check_data(cfg, labels, ("train",))


def test_weighted_sampler_draws_classes_evenly(mask_root):
    cfg = cls_config(mask_root)
    labels = resolve_labels(cfg)
    split = load_split(cfg, "train", labels)
    sampler = weighted_sampler(split, 18, seed=0)
    counts = np.bincount(split.labels(), minlength=18)
    weights = sampler.weights.numpy()
    per_class = [weights[split.labels() == c].sum() for c in range(18) if counts[c]]
    assert np.allclose(per_class, per_class[0])
    assert len(list(iter(sampler))) == len(split.samples)
