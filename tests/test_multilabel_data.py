"""Polygon-JSON data (hand-bone layout), multi-label masks and their cache, COCO as
multilabel, and splits that keep each person together."""

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.cli import main
from seglab.config import config_from_dict
from seglab.data.cache import default_cache_dir
from seglab.data import build_dataset, open_source, resolve_labels, validate_data
from seglab.data.bitmasks import pack, unpack
from seglab.data.sources.polygons import PolygonSource
from seglab.data.splits import make_folds, read_folds, read_table
from seglab.data.synth.polygons import make_polygon_dataset
from seglab.errors import ConfigError, DataError

from .conftest import write_coco


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


@pytest.fixture
def bones(tmp_path) -> Path:
    """Two people, grayscale 20x24 images; 'a' (big) and 'b' (small) overlap."""
    root = tmp_path / "train"
    layout = {"ID001": ["img1_L", "img1_R"], "ID002": ["img2_L"]}
    for pid, names in layout.items():
        for name in names:
            (root / "DCM" / pid).mkdir(parents=True, exist_ok=True)
            (root / "outputs_json" / pid).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "DCM" / pid / f"{name}.png"), np.full((20, 24), 90, np.uint8))
            anns = [{"label": "a", "points": square(2, 2, 12, 12)}, {"label": "b", "points": square(8, 8, 14, 14)}]
            (root / "outputs_json" / pid / f"{name}.json").write_text(json.dumps({"annotations": anns}))
    (tmp_path / "test" / "DCM" / "ID009").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "test" / "DCM" / "ID009" / "t.png"), np.full((20, 24), 90, np.uint8))
    (root / "train.txt").write_text("ID001\n")
    (root / "val.txt").write_text("ID002/img2_L.png\n")
    return root


def cfg_for(root, *, task="multilabel", classes=("a", "b", "c"), **data):
    raw = {"task": task, "data": {"format": "polygons", "root": str(root), "polygons": {"image_dir": "DCM", "json_dir": "outputs_json"},
                                  "train": "train.txt", "val": "val.txt", "test": "../test", "classes": None if classes is None else list(classes),
                                  "num_workers": 0, **data}}
    if task == "multiclass":
        raw["loss"] = [{"name": "ce"}]
    return config_from_dict(raw)


def test_overlapping_polygons_give_overlapping_channels(bones):
    cfg = cfg_for(bones)
    labels = resolve_labels(cfg)
    assert labels.classes == ("a", "b", "c") and labels.target == "binary_masks"
    ds = build_dataset(cfg, "train", labels)
    assert [ds.source.sample_id(i) for i in range(len(ds))] == ["ID001/img1_L.png", "ID001/img1_R.png"]
    item = ds[0]
    assert item["image"].shape == (3, 20, 24)  # grayscale replicated to 3 channels
    mask = item["target"].numpy()
    assert mask.shape == (3, 20, 24) and mask.dtype == bool
    assert mask[0, 2:13, 2:13].all() and mask[0].sum() == 121
    assert mask[1, 8:15, 8:15].all() and mask[1].sum() == 49
    assert (mask[0] & mask[1]).sum() == 25     # the overlap belongs to both classes
    assert not mask[2].any()                    # a class with no polygon: empty channel


def test_same_polygons_as_multiclass_paint_small_on_top(bones):
    cfg = cfg_for(bones, task="multiclass")
    labels = resolve_labels(cfg)
    assert labels.classes == ("Background", "a", "b", "c")
    mask = build_dataset(cfg, "train", labels)[0]["target"].numpy()
    assert mask.shape == (20, 24)
    assert mask[10, 10] == 2 and mask[3, 3] == 1 and mask[0, 0] == 0   # area_desc: small 'b' on top
    cfg = cfg_for(bones, task="multiclass", paint_order="class_index", remap={"b": "ignore"})
    mask = build_dataset(cfg, "train", resolve_labels(cfg))[0]["target"].numpy()
    assert mask[10, 10] == 255 and mask[3, 3] == 1


def test_masks_are_rasterised_at_each_load_and_see_an_edit_at_once(bones, monkeypatch):
    cfg = cfg_for(bones)
    labels = resolve_labels(cfg)
    calls = []
    real = PolygonSource.rasterise
    monkeypatch.setattr(PolygonSource, "rasterise", lambda self, *a: calls.append(1) or real(self, *a))
    source = open_source(cfg, "train", labels)
    first = source.load_target(0)
    again = open_source(cfg, "train", labels).load_target(0)   # a new source (a new epoch / worker)
    # Rasterising costs less than reading a cached mask back (benchmarks/fullres.py): no cache.
    assert len(calls) == 2 and (first == again).all() and first.dtype == bool
    assert not (default_cache_dir() / "bitmasks").exists()
    path = source.json_path(0)
    path.write_text(json.dumps({"annotations": [{"label": "c", "points": square(0, 0, 5, 5)}]}))
    changed = source.load_target(0)
    assert changed[2].sum() == 36 and not changed[0].any() and not changed[1].any()


def test_pack_round_trip_and_size():
    mask = np.random.default_rng(0).random((3, 5, 13)) > 0.5
    assert (unpack(pack(mask)) == mask).all()
    bones = np.zeros((29, 512, 512), bool)
    for c in range(29):
        cv2.circle(bones[c].view(np.uint8), (20 + 16 * c, 256), 40, 1, -1)
    data = pack(bones)
    assert (unpack(data) == bones).all() and len(data) < bones.size // 8 // 10   # bits, then compressed


def test_split_forms_list_of_ids_image_paths_and_folders(bones):
    cfg = cfg_for(bones)
    labels = resolve_labels(cfg)
    assert [open_source(cfg, "val", labels).sample_id(i) for i in range(1)] == ["ID002/img2_L.png"]
    test = open_source(cfg, "test", labels)
    assert test.sample_id(0) == "ID009/t.png" and not test.has_targets
    cfg_all = cfg_for(bones, train=".")
    assert len(open_source(cfg_all, "train", labels)) == 3
    (bones / "bad.txt").write_text("ID001\nID404\n")
    with pytest.raises(DataError, match=r"bad.txt: line 2: no image or ID folder 'ID404'"):
        open_source(cfg_for(bones, train="bad.txt"), "train", labels)
    with pytest.raises(ConfigError, match="data.classes is required"):
        resolve_labels(cfg_for(bones, classes=None))


def test_data_problems_are_reported_one_line_each(bones):
    jd = bones / "outputs_json"
    (jd / "ID001" / "img1_L.json").write_text(json.dumps({"annotations": [
        {"label": "zzz", "points": square(1, 1, 3, 3)},
        {"label": "a", "points": [[1, 1], [2, 2]]},
        {"label": "b", "points": square(100, 100, 120, 120)},
    ]}))
    (jd / "ID001" / "img1_R.json").write_text("{not json")
    (jd / "ID002" / "img2_L.json").unlink()
    cfg = cfg_for(bones)
    problems = validate_data(cfg, resolve_labels(cfg), ("train", "val"))
    text = "\n".join(problems)
    assert "img1_L.json: annotations[0]: unknown label 'zzz'" in text
    assert "annotations[1] (a): polygon has 2 points (needs at least 3)" in text
    assert "annotations[2] (b): polygon lies entirely outside the 20x24 image" in text
    assert "img1_R.json: malformed JSON at line 1" in text
    assert "img2_L.json: label file not found" in text
    assert len(problems) == 5


def test_coco_as_multilabel_one_channel_per_category(tmp_path):
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "junk"}]
    images = [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 6, 0, 6, 6, 0, 6]]},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[3, 3, 9, 3, 9, 9, 3, 9]]},
            {"id": 3, "image_id": 1, "category_id": 3, "segmentation": [[0, 8, 2, 8, 2, 9]]}]
    write_coco(tmp_path, "train.json", images, anns, cats)
    raw = {"task": "multilabel", "data": {"format": "coco", "root": str(tmp_path), "train": "train.json",
                                          "remap": {"junk": "Background"}}}
    cfg = config_from_dict(raw)
    labels = resolve_labels(cfg)
    assert labels.classes == ("cat", "dog")      # Background has no channel; junk merged into it
    mask = build_dataset(cfg, "train", labels)[0]["target"].numpy()
    assert mask.shape == (2, 10, 10)
    assert mask[0, 4, 4] and mask[1, 4, 4]       # overlap: both classes
    assert mask[0, 1, 1] and not mask[1, 1, 1]
    assert not mask[:, 8, 1].any()               # the junk annotation is background


def test_group_folds_never_split_a_person():
    rng = np.random.default_rng(0)
    groups = [f"ID{g:03d}" for g in rng.integers(0, 23, 120)]
    sex = np.array([[int(g[2:]) % 2 == 0, int(g[2:]) % 2 == 1] for g in groups], dtype=np.int64)  # one-hot stratum per image
    for strategy, key in (("group", np.zeros((len(groups), 1), np.int64)), ("stratified_group", sex)):
        fold = make_folds(key, 5, strategy, seed=3, groups=groups)
        assert set(fold.tolist()) == set(range(5))
        for g in set(groups):
            assert len({f for f, h in zip(fold, groups) if h == g}) == 1, (strategy, g)
    with pytest.raises(DataError, match="3 groups cannot make 5 folds"):
        make_folds(np.zeros((6, 1), np.int64), 5, "group", seed=0, groups=["a", "b", "c"] * 2)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_data_split_cli_writes_a_usable_folds_csv(tmp_path, capsys):
    paths = make_polygon_dataset(tmp_path / "d", n_train_ids=8, n_val_ids=2, n_test_ids=1, size=32, seed=0)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"task": "multilabel", "data": {
        "format": "polygons", "root": str(paths["root"]), "polygons": {"image_dir": "DCM", "json_dir": "outputs_json"},
        "train": ".", "classes": ["disc", "square", "triangle", "bar", "star"]}}))
    out = tmp_path / "folds"
    assert main(["data", "split", str(config), f"kfold.metadata={paths['metadata']}", "kfold.stratify=[sex,age]",
                 "kfold.bins=2", "--folds", "5", "--out", str(out)]) == 0
    assert "20 samples, 10 groups -> 5 folds" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["folds.csv"]   # one file: no per-fold lists any more
    lines = (out / "folds.csv").read_text().splitlines()
    assert lines[0] == "sample_id,group,fold,stratum"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 20
    fold_of_group: dict = {}
    for sample, group, fold, stratum in rows:
        assert sample.startswith(group + "/") and stratum.startswith("sex=") and "|age" in stratum
        assert fold_of_group.setdefault(group, fold) == fold
    assert {fold for *_, fold, _ in rows} == {str(k) for k in range(5)}
    # the file is what data.folds + data.fold read: fold 0 is validation, the rest training
    for k in range(5):
        cfg = cfg_for(paths["root"], classes=("disc", "square", "triangle", "bar", "star"), train=".", val=None,
                      folds=str(out / "folds.csv"), fold=k)
        labels = resolve_labels(cfg)
        train, val = open_source(cfg, "train", labels), open_source(cfg, "val", labels)
        train_ids = {train.sample_id(i) for i in range(len(train))}
        val_ids = {val.sample_id(i) for i in range(len(val))}
        assert val_ids == {sample for sample, _, fold, _ in rows if fold == str(k)}
        assert len(train_ids) + len(val_ids) == 20 and not train_ids & val_ids
        assert not {s.split("/")[0] for s in train_ids} & {s.split("/")[0] for s in val_ids}


def test_coco_fold_keeps_groups_and_folds_csv_round_trips(tmp_path):
    cats = [{"id": 1, "name": "x"}]
    images = [{"id": i, "file_name": f"p{i // 2}/{i}.jpg", "height": 8, "width": 8} for i in range(8)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]} for i in range(8)]
    write_coco(tmp_path, "train.json", images, anns, cats)
    raw = {"data": {"root": str(tmp_path), "train": "train.json", "fold": 0, "num_workers": 0},
           "kfold": {"folds": 2, "group_regex": "^(p\\d+)/"}}
    cfg = config_from_dict(raw)
    labels = resolve_labels(cfg)
    train, val = open_source(cfg, "train", labels), open_source(cfg, "val", labels)
    train_ids = [train.sample_id(i) for i in range(len(train))]
    val_ids = [val.sample_id(i) for i in range(len(val))]
    assert len(train_ids) + len(val_ids) == 8 and val_ids and train_ids
    assert not {s.split("/")[0] for s in train_ids} & {s.split("/")[0] for s in val_ids}
    item = build_dataset(cfg, "val", labels)[0]   # a fold of COCO is a COCO source with its masks
    assert item["id"] == val_ids[0] and item["target"].shape == (8, 8) and int(item["target"].max()) == 1
    # the same folds written to folds.csv and read back (data.folds) give the same split
    out = tmp_path / "f"
    assert main(["data", "split", str(_write_config(tmp_path, raw)), "--out", str(out)]) == 0
    ids = [img["file_name"] for img in images]
    fold = read_folds(out / "folds.csv", ids)
    assert [s for s, f in zip(ids, fold) if f == 0] == val_ids
    from_file = config_from_dict({**raw, "data": {**raw["data"], "folds": str(out / "folds.csv")}})
    val2 = open_source(from_file, "val", labels)
    assert [val2.sample_id(i) for i in range(len(val2))] == val_ids
    with pytest.raises(DataError, match="no fold for 1 sample"):
        read_folds(out / "folds.csv", ids + ["p9/99.jpg"])


def _write_config(tmp_path, raw: dict) -> Path:
    path = tmp_path / "split.yaml"
    raw = {**raw, "data": {k: v for k, v in raw["data"].items() if k != "fold"}}
    path.write_text(json.dumps(raw))
    return path


def test_xlsx_metadata_and_numeric_id_matching(tmp_path):
    """A minimal workbook as Excel writes it: shared strings, numbers, ID column 1..n."""
    strings = ["ID", "sex", "age", "M", "F"]
    sst = "".join(f"<si><t>{s}</t></si>" for s in strings)
    sheet_rows = ['<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row>']
    for r, (pid, sex, age) in enumerate([(1, 3, 30), (2, 4, 61), (3, 4, 45)], start=2):
        sheet_rows.append(f'<row r="{r}"><c r="A{r}"><v>{pid}</v></c><c r="B{r}" t="s"><v>{sex}</v></c><c r="C{r}"><v>{age}</v></c></row>')
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    path = tmp_path / "meta.xlsx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/sharedStrings.xml", f"<sst {ns}>{sst}</sst>")
        z.writestr("xl/worksheets/sheet1.xml", f"<worksheet {ns}><sheetData>{''.join(sheet_rows)}</sheetData></worksheet>")
    table = read_table(path)
    assert table == [{"ID": "1", "sex": "M", "age": "30"}, {"ID": "2", "sex": "F", "age": "61"}, {"ID": "3", "sex": "F", "age": "45"}]
    from seglab.data.splits import strata_for_groups

    strata = strata_for_groups(["ID001", "ID002", "ID003"], table, "ID", ["sex"])
    assert strata == {"ID001": "sex=M", "ID002": "sex=F", "ID003": "sex=F"}
    with pytest.raises(DataError, match="no row for 1 group"):
        strata_for_groups(["ID001", "ID007"], table, "ID", ["sex"])
