"""data.corrections: relabels, drops and mask-status fixes applied at load time, exactly where
the records say; bad records are one-line errors naming the line; the mask cache follows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seglab.config import load_config
from seglab.data import collect_problems, corrections_summary, open_source, resolve_labels
from seglab.data import maskstatus
from seglab.data.synth.coco import make_coco_dataset
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from seglab.data.synth.polygons import make_polygon_dataset
from seglab.errors import DataError
from tests.workflow_helpers import ROOT


def coco_cfg(root, corrections=None):
    extra = [f"data.corrections={corrections}"] if corrections else []
    return load_config(ROOT / "configs" / "demo.yaml", [f"data.root={root}", *extra])


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco_dataset(root, n_train=3, n_val=1, n_test=1, size=32, seed=0)
    return root


def annotation(root, image_index: int, k: int) -> dict:
    doc = json.loads((root / "train.json").read_text())
    image_id = doc["images"][image_index]["id"]
    return [a for a in doc["annotations"] if a["image_id"] == image_id][k]


def test_coco_relabel_and_drop_change_exactly_those_pixels(coco_root, tmp_path):
    cfg = coco_cfg(coco_root)
    labels = resolve_labels(cfg)
    plain = open_source(cfg, "train", labels)
    before = [plain.load_target(i) for i in range(len(plain))]
    first, dropped = plain.sample_id(0), plain.sample_id(2)
    ann = annotation(coco_root, 0, 0)
    from seglab.data.painting import annotation_mask

    region = annotation_mask(ann["segmentation"], 32, 32) & (before[0] == labels.source_to_class[ann["category_id"]])
    assert region.any()
    (tmp_path / "fix.yaml").write_text(
        f"- {{image: {first}, annotation: {ann['id']}, action: relabel, value: bar}}\n"
        f"- {{image: {dropped}, action: drop, note: blurred}}\n")
    fixed_cfg = coco_cfg(coco_root, tmp_path / "fix.yaml")
    fixed = open_source(fixed_cfg, "train", labels)
    assert [fixed.sample_id(i) for i in range(len(fixed))] == [plain.sample_id(0), plain.sample_id(1)]
    after = fixed.load_target(0)
    assert (after[region] == labels.classes.index("bar")).all()
    assert (after[~region] == before[0][~region]).all()           # nowhere else
    assert (fixed.load_target(1) == before[1]).all()
    applied, unmatched = corrections_summary(fixed_cfg, labels)
    assert applied == {"relabel annotation": 1, "drop image": 1} and unmatched == []

    # Dropping the annotation instead: its pixels go back to what lies under it.
    (tmp_path / "drop.csv").write_text(f"image,annotation,action\n# a comment\n{first},{ann['id']},drop\n")
    dropped_ann = open_source(coco_cfg(coco_root, tmp_path / "drop.csv"), "train", labels).load_target(0)
    assert not (dropped_ann[region] == before[0][region]).all()
    outside = ~annotation_mask(ann["segmentation"], 32, 32)
    assert (dropped_ann[outside] == before[0][outside]).all()


def test_cache_is_rebuilt_when_the_corrections_change(coco_root, tmp_path):
    labels = resolve_labels(coco_cfg(coco_root))
    ann = annotation(coco_root, 0, 0)
    first = open_source(coco_cfg(coco_root), "train", labels).sample_id(0)
    path = tmp_path / "fix.yaml"
    path.write_text(f"- {{image: {first}, annotation: {ann['id']}, action: relabel, value: bar}}\n")
    a = open_source(coco_cfg(coco_root, path), "train", labels)
    assert (a.load_target(0) == labels.classes.index("bar")).any()
    path.write_text(f"- {{image: {first}, annotation: {ann['id']}, action: relabel, value: star}}\n")
    b = open_source(coco_cfg(coco_root, path), "train", labels)
    assert a.cache.dir != b.cache.dir and a.cache_key != b.cache_key
    assert (b.load_target(0) == labels.classes.index("star")).any()
    assert (b.load_target(0) != a.load_target(0)).any()


def test_polygon_relabel_and_drop_by_index(tmp_path):
    make_polygon_dataset(tmp_path, n_train_ids=2, n_val_ids=1, n_test_ids=1, size=32, seed=0)
    root = tmp_path / "train"
    cfg = load_config(ROOT / "configs" / "demo_multilabel.yaml", [f"data.root={root}"])
    labels = resolve_labels(cfg)
    plain = open_source(cfg, "train", labels)
    sid = plain.sample_id(0)
    anns = json.loads(plain.json_path(0).read_text())["annotations"]
    old = labels.classes.index(anns[0]["label"])
    new = next(c for c in range(labels.num_classes) if c != old)
    (tmp_path / "fix.yaml").write_text(
        f"- {{image: {sid}, annotation: 0, action: relabel, value: {labels.classes[new]}}}\n"
        f"- {{image: {sid}, annotation: 1, action: drop}}\n"
        f"- {{image: {plain.sample_id(2).split('/')[0]}, action: drop}}\n")   # a whole person folder
    fixed_cfg = load_config(ROOT / "configs" / "demo_multilabel.yaml", [f"data.root={root}", f"data.corrections={tmp_path / 'fix.yaml'}"])
    fixed = open_source(fixed_cfg, "train", labels)
    person = plain.sample_id(2).split("/")[0]
    assert [fixed.sample_id(i) for i in range(len(fixed))] == [s for s in (plain.sample_id(i) for i in range(len(plain))) if not s.startswith(person + "/")]
    import cv2

    def fill(points):
        m = np.zeros((32, 32), np.uint8)
        cv2.fillPoly(m, [np.round(np.asarray(points)).astype(np.int32)], 1)
        return m.astype(bool)

    expected = np.zeros((labels.num_classes, 32, 32), bool)
    expected[new] |= fill(anns[0]["points"])
    for ann in anns[2:]:
        expected[labels.classes.index(ann["label"])] |= fill(ann["points"])
    assert (fixed.load_target(0) == expected).all()
    assert (fixed.load_target(1) == plain.load_target(1)).all()
    assert corrections_summary(fixed_cfg, labels)[0] == {"relabel annotation": 1, "drop annotation": 1, "drop image": 1}


def test_maskstatus_fields_and_labels(tmp_path):
    make_maskstatus_dataset(tmp_path, n_train=4, n_eval=2, size=32, seed=0)
    cfg = load_config(ROOT / "configs" / "demo_cls.yaml", [f"data.root={tmp_path}", "data.fold=null"])
    labels = resolve_labels(cfg)
    plain = open_source(cfg, "train", labels)
    ids = [plain.sample_id(i) for i in range(len(plain))]
    person = ids[0].split("/")[0]
    one = ids[-1]
    _, gender, _ = maskstatus.parse_person(person)
    other = "female" if gender == "male" else "male"
    (tmp_path / "fix.csv").write_text(f"image,action,value\n{person},gender,{other}\n{person},age,75\n"
                                      f"{one},relabel,{labels.classes[5]}\n")
    fixed_cfg = load_config(ROOT / "configs" / "demo_cls.yaml", [f"data.root={tmp_path}", "data.fold=null", f"data.corrections={tmp_path / 'fix.csv'}"])
    fixed = open_source(fixed_cfg, "train", labels)
    for i, sid in enumerate(ids):
        was, now = plain.load_target(i), fixed.load_target(i)
        if sid.startswith(person + "/"):
            m, g, _ = maskstatus.decode(was)
            assert now == maskstatus.encode(m, maskstatus.GENDERS[other], 2)
        elif sid == one:
            assert now == 5
        else:
            assert now == was
    assert corrections_summary(fixed_cfg, labels)[0] == {"relabel image": 1, "gender": 1, "age": 1}


@pytest.mark.parametrize("text, message", [
    ("- {image: a.jpg, action: drop, colour: red}\n", "line 1: unknown key(s) ['colour']"),
    ("- {image: a.jpg, action: paint}\n", "line 1: action 'paint' is not one of"),
    ("- {image: a.jpg, action: relabel}\n", "line 1: relabel needs a value"),
    ("- {image: a.jpg, action: gender, value: robot}\n", "line 1: gender 'robot' is not one of"),
    ("# fixes\n- {image: a.jpg, annotation: 3, action: drop}\n- {image: a.jpg, annotation: 3, action: relabel, value: bar}\n",
     "line 3: contradicts"),
    ("- {image: a.jpg, action: drop}\n- {image: a.jpg, annotation: 1, action: drop}\n", "line 2: contradicts"),
])
def test_bad_records_are_one_line_errors(tmp_path, text, message):
    from seglab.data.corrections import read_corrections

    path = tmp_path / "fix.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        read_corrections(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_records_that_match_nothing_are_problems(coco_root, tmp_path):
    labels = resolve_labels(coco_cfg(coco_root))
    first = open_source(coco_cfg(coco_root), "train", labels).sample_id(0)
    path = tmp_path / "fix.yaml"
    path.write_text("- {image: nowhere.jpg, action: drop}\n")
    _, problems = collect_problems(coco_cfg(coco_root, path), ("train", "val"))
    assert any(f"{path}: line 1: 'nowhere.jpg' matches no image" in p for p in problems)
    path.write_text(f"- {{image: {first}, annotation: 999, action: drop}}\n")
    with pytest.raises(DataError, match="line 1: image .* has no annotation 999"):
        open_source(coco_cfg(coco_root, path), "train", labels)
    path.write_text(f"- {{image: {first}, annotation: {annotation(coco_root, 0, 0)['id']}, action: relabel, value: Giraffe}}\n")
    with pytest.raises(DataError, match="line 1: relabel to 'Giraffe': not a training class"):
        open_source(coco_cfg(coco_root, path), "train", labels)


def test_validate_reports_applied_records_per_kind(coco_root, tmp_path, capsys):
    from seglab.cli import main

    labels = resolve_labels(coco_cfg(coco_root))
    source = open_source(coco_cfg(coco_root), "train", labels)
    path = tmp_path / "fix.csv"
    path.write_text(f"image,annotation,action,value\n{source.sample_id(0)},{annotation(coco_root, 0, 0)['id']},relabel,bar\n"
                    f"{source.sample_id(1)},,drop,\n")
    main(["data", "validate", str(ROOT / "configs" / "demo.yaml"), f"data.root={coco_root}", f"data.corrections={path}"])
    assert f"corrections applied ({path}): relabel annotation 1, drop image 1" in capsys.readouterr().out


def test_labelmap_images_can_be_dropped_and_nothing_else(tmp_path):
    import cv2

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b"):
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.png"), np.zeros((4, 4, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{stem}.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "fix.yaml").write_text("- {image: a.png, action: drop}\n")
    args = [f"data.root={tmp_path}", "data.format=labelmap", "data.train=null", "data.val=null", "data.test=null",
            "data.classes=[bg, road]", "data.coco=null"]
    cfg = load_config(ROOT / "configs" / "demo.yaml", args + ["data.corrections=fix.yaml"])
    labels = resolve_labels(cfg)
    source = open_source(cfg, "train", labels)
    assert [source.sample_id(i) for i in range(len(source))] == ["b.png"]
    (tmp_path / "fix.yaml").write_text("- {image: b.png, annotation: 1, action: drop}\n")
    with pytest.raises(DataError, match="line 1: labelmap data takes only image drops"):
        open_source(cfg, "train", labels)
