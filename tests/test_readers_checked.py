"""Every reader checks every record before training: classification tables and folders,
splits that overlap, CSV rows, config values. One line each, naming the file and record."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.config import DataConfig, load_config
from seglab.data import collect_problems
from seglab.data.sources.classification import CsvSource, ImageFolderSource, MaskStatusSource
from seglab.data.synth.coco import make_coco_dataset
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from seglab.errors import ConfigError, DataError
from tests.workflow_helpers import ROOT


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))


# ------------------------------------------------------------------ mask status


@pytest.fixture()
def maskstatus(tmp_path):
    make_maskstatus_dataset(tmp_path, n_train=3, n_eval=1, size=16, seed=0)
    return tmp_path / "train"


def read_table(folder: Path) -> list[dict]:
    with open(folder / "train.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_table(folder: Path, rows: list[dict]) -> None:
    with open(folder / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def maskstatus_problems(folder: Path) -> list[str]:
    data = DataConfig(format="maskstatus", root=str(folder.parent), train=folder.name)
    return MaskStatusSource.read(data, folder, "train", MaskStatusSource.classes(data))[1]


def test_maskstatus_table_disagreeing_with_the_folder_name(maskstatus):
    rows = read_table(maskstatus)
    rows[0]["gender"] = "male" if rows[0]["gender"] == "female" else "female"
    write_table(maskstatus, rows)
    problems = maskstatus_problems(maskstatus)
    assert len(problems) == 1 and "train.csv: line 2: the table says" in problems[0] and f"folder name {rows[0]['path']!r} says" in problems[0]


def test_maskstatus_absurd_ages_and_duplicated_persons(maskstatus):
    rows = read_table(maskstatus)
    rows[0]["age"] = "-5"  # in the table only
    write_table(maskstatus, rows)
    assert any("line 2: age -5 is not a plausible age" in p for p in maskstatus_problems(maskstatus))
    person = rows[0]["path"]
    new = "_".join(person.split("_")[:-1] + ["200"])  # in both
    (maskstatus / "images" / person).rename(maskstatus / "images" / new)
    rows[0].update(path=new, age="200")
    write_table(maskstatus, rows)
    assert any("line 2: age 200 is not a plausible age" in p for p in maskstatus_problems(maskstatus))
    rows[1]["path"], rows[1]["age"] = rows[2]["path"], rows[2]["age"]
    rows[1]["gender"] = rows[2]["gender"]
    write_table(maskstatus, rows)
    assert any("line 4: person" in p and "appears twice (also" in p for p in maskstatus_problems(maskstatus))


def test_maskstatus_loose_images_and_unknown_kinds_are_reported(maskstatus):
    write_image(maskstatus / "images" / "stray.jpg")
    person = read_table(maskstatus)[0]["path"]
    write_image(maskstatus / "images" / person / "mask9.jpg")
    problems = maskstatus_problems(maskstatus)
    assert any("1 image(s) lie loose in the folder" in p and "'stray.jpg'" in p for p in problems)
    assert any(f"{person}: image(s) mask9 are not a mask kind" in p for p in problems)


def test_short_last_csv_row_is_one_line(maskstatus):
    text = (maskstatus / "train.csv").read_text().rstrip("\n")
    (maskstatus / "train.csv").write_text(text.rsplit(",", 1)[0] + "\n")  # the last row cut mid-way
    with pytest.raises(DataError, match=r"train.csv: line 4: 4 value\(s\), the header has 5 column\(s\)"):
        maskstatus_problems(maskstatus)


# ------------------------------------------------------------------ image folders, CSV


def test_empty_class_folder_is_not_a_class_and_loose_images_are_reported(tmp_path):
    for name in ("cat/a.jpg", "dog/b.jpg", "loose.jpg"):
        write_image(tmp_path / "train" / name)
    (tmp_path / "train" / "empty").mkdir()
    data = DataConfig(format="imagefolder", root=str(tmp_path), train="train")
    assert ImageFolderSource.classes(data) == ["cat", "dog"]
    samples, problems = ImageFolderSource.read(data, tmp_path / "train", "train", ["cat", "dog"])
    assert len(samples) == 2 and len(problems) == 1 and "1 image(s) lie loose in the split folder" in problems[0]


@pytest.mark.parametrize("label", ["²", "٣", "1٣"])
def test_unicode_digits_are_not_class_indices(tmp_path, label):
    write_image(tmp_path / "x.jpg")
    write_image(tmp_path / "y.jpg")
    (tmp_path / "train.csv").write_text(f"path,label\nx.jpg,{label}\ny.jpg,0\n", encoding="utf-8")
    data = DataConfig(format="csv", root=str(tmp_path), train="train.csv")
    classes = CsvSource.classes(data)  # not all ASCII digits: names, not indices
    assert label in classes
    data = DataConfig(format="csv", root=str(tmp_path), train="train.csv", classes=["a", "b"])
    samples, problems = CsvSource.read(data, tmp_path / "train.csv", "train", ["a", "b"])
    assert [s.label for s in samples] == [0] and f"line 2: label {label!r} is not a class" in problems[0]


def test_an_image_listed_twice_is_reported(tmp_path):
    from seglab.data.sources.labelmap import LabelMapSource

    write_image(tmp_path / "x.jpg")
    (tmp_path / "train.csv").write_text("path,label\nx.jpg,a\nx.jpg,b\n")
    data = DataConfig(format="csv", root=str(tmp_path), train="train.csv", classes=["a", "b"])
    samples, problems = CsvSource.read(data, tmp_path / "train.csv", "train", ["a", "b"])
    assert len(samples) == 1 and problems == [f"{tmp_path / 'train.csv'}: line 3: path 'x.jpg' is already on line 2"]
    write_image(tmp_path / "images" / "x.png")
    (tmp_path / "list.txt").write_text("x\nx.png\n")
    data = DataConfig(format="labelmap", root=str(tmp_path), train="list.txt", classes=["a", "b"])
    with pytest.raises(DataError, match="list.txt: 'x' is listed twice"):
        LabelMapSource(data, "train")


# ------------------------------------------------------------------ splits that overlap


def test_train_and_val_sharing_images_or_people_is_an_error(tmp_path):
    make_coco_dataset(tmp_path, n_train=3, n_val=2, n_test=1, size=16, seed=0)
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.root={tmp_path}", "data.val=train.json"])
    _, problems = collect_problems(cfg)
    assert problems == [f"data.train and data.val share 3 image file(s), e.g. {json.loads((tmp_path / 'train.json').read_text())['images'][0]['file_name']!r}: "
                        "a split must not contain images of another"]
    # By group: the same person in two CSV splits, with different files.
    for name in ("a1.jpg", "a2.jpg", "b1.jpg", "b2.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "tr.csv").write_text("path,label,person\na1.jpg,x,ann\nb1.jpg,y,bob\n")
    (tmp_path / "va.csv").write_text("path,label,person\na2.jpg,x,ann\nb2.jpg,y,cid\n")
    cfg = load_config(ROOT / "configs" / "demo_cls.yaml", [f"data.root={tmp_path}", "data.format=csv", "data.train=tr.csv",
                                                           "data.fold=null", "data.val=va.csv", "data.test=null", "data.classes=[x, y]",
                                                           "data.maskstatus=null", "data.csv.group_column=person"])
    _, problems = collect_problems(cfg)
    assert problems == ["data.train and data.val share 1 group(s) (person/ID), e.g. 'ann' ('a1.jpg' and 'a2.jpg'): keep each group in one split"]


# ------------------------------------------------------------------ submissions, config


def test_coco_csv_quotes_a_comma_in_file_name_and_reads_back(tmp_path):
    from types import SimpleNamespace

    from seglab.inference.predict import Prediction
    from seglab.kinds import target_kind
    from seglab.submission import WriteContext
    from seglab.submission.segmentation import read_coco_csv, write_coco_csv

    cfg = SimpleNamespace(submission=SimpleNamespace(size=(2, 2)))
    preds = [Prediction("a,b/x.jpg", Path("x"), None, np.array([[0, 1], [2, 3]], np.uint8)),
             Prediction('q"uote.jpg', Path("y"), None, np.zeros((2, 2), np.uint8))]
    write_coco_csv(preds, tmp_path / "s.csv", WriteContext(["a"], cfg, "test", target_kind("class_map")))
    rows = read_coco_csv(tmp_path / "s.csv", (2, 2), expected_ids=["a,b/x.jpg", 'q"uote.jpg'])
    assert rows["a,b/x.jpg"].tolist() == [[0, 1], [2, 3]]
    with open(tmp_path / "s.csv", newline="") as f:
        assert [len(r) for r in csv.reader(f)] == [2, 2, 2]


@pytest.mark.parametrize("override, says", [
    ("optim.lr=.inf", "optim.lr: Input should be a finite number"),
    ("optim.lr=.nan", "optim.lr: Input should be a finite number"),
    ("data.batch_size=true", "data.batch_size: true/false is not a valid value here"),
    ("data.image_size=[true, 8]", "data.image_size: true/false is not a valid value here"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches: a batch count must be >= 1"),
    ("trainer.limit_train_batches=2.5", "trainer.limit_train_batches: a fraction must be in (0, 1]"),
    ("loss.0.weight=.inf", "loss.0.weight: Input should be a finite number"),
])
def test_numbers_reject_inf_nan_and_bools(override, says):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "demo.yaml", [override])
    assert says in str(e.value) and len(str(e.value).splitlines()) == 1


def test_yaml_duplicate_keys_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.1\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"c.yaml: invalid YAML at line 3, column 3: key 'lr' appears twice \(first at line 2\)"):
        load_config(tmp_path / "c.yaml")
