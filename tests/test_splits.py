"""k-fold splits: multi-label stratification, groups, folds.csv and data.fold."""


import numpy as np
import pytest

from seglab.config import config_from_dict
from seglab.task import get_task
from seglab.data import open_source, resolve_labels
from seglab.data.presence import class_presence
from seglab.data.sources.coco import CocoSource
from seglab.data.splits import (
    assign_folds,
    group_keys,
    groups_from_csv,
    groups_from_regex,
    make_folds,
    read_folds,
)
from seglab.errors import ConfigError, DataError
from seglab.kfold import make_folds_file
from tests.conftest import write_coco

CATS = [{"id": 1, "name": "common"}, {"id": 2, "name": "medium"}, {"id": 3, "name": "rare"}, {"id": 4, "name": "rarer"}]
SQUARE = [[1, 1, 6, 1, 6, 6, 1, 6]]


def constructed_set(tmp_path, n=30, rare=(4, 11, 25), rarer=(2, 17, 29), medium_every=5, folders=None):
    """n images, 'common' in all, 'medium' in every 5th, 'rare' and 'rarer' in exactly three each."""
    images, anns = [], []
    for i in range(n):
        folder = folders(i) if folders else "imgs"
        images.append({"id": i, "file_name": f"{folder}/{i:03d}.png", "height": 8, "width": 8})
        cats = [1] + ([2] if i % medium_every == 0 else []) + ([3] if i in rare else []) + ([4] if i in rarer else [])
        anns += [{"id": len(anns) + k, "image_id": i, "category_id": c, "segmentation": SQUARE, "area": 25, "iscrowd": 0}
                 for k, c in enumerate(cats)]
    write_coco(tmp_path, "train.json", images, anns, CATS, write_images=False)
    cfg = config_from_dict({"data": {"root": str(tmp_path), "train": "train.json"}})
    return cfg, resolve_labels(cfg)


def test_stratified_split_puts_rare_classes_in_every_fold(tmp_path):
    cfg, labels = constructed_set(tmp_path)
    source = CocoSource(cfg.data, "train", labels)
    presence = class_presence(source, labels)
    assert presence.sum(0).tolist() == [0, 30, 6, 3, 3]
    for seed in range(5):
        fold = make_folds(presence, 3, "stratified", seed)
        assert sorted(np.bincount(fold).tolist()) == [10, 10, 10]
        for cls, per_fold in ((3, 1), (4, 1), (2, 2)):  # rare, rarer: one image per fold; medium: two
            assert np.bincount(fold[presence[:, cls] == 1], minlength=3).tolist() == [per_fold] * 3, (seed, cls)


def test_group_split_keeps_groups_together_and_stratified_group_still_covers_rare_classes(tmp_path):
    # 15 groups of two images; the rare classes sit in three different groups.
    cfg, labels = constructed_set(tmp_path, rare=(0, 1, 10, 11, 20, 21), rarer=(4, 5, 14, 15, 24, 25), folders=lambda i: f"ID{i // 2:03d}")
    source = CocoSource(cfg.data, "train", labels)
    ids = [source.sample_id(i) for i in range(len(source))]
    kcfg = cfg.kfold.model_copy(update={"group_regex": r"^(ID\d+)/"})
    groups = group_keys(source, ids, kcfg, cfg.data)
    assert group_keys(source, ids, cfg.kfold, cfg.data) is None  # COCO images have no groups of their own
    assert groups[:3] == ["ID000", "ID000", "ID001"]
    presence = class_presence(source, labels)
    for strategy in ("group", "stratified_group"):
        fold = make_folds(presence, 3, strategy, 0, groups)
        for g in set(groups):
            assert len({fold[i] for i in range(30) if groups[i] == g}) == 1, (strategy, g)
    fold = make_folds(presence, 3, "stratified_group", 0, groups)
    for cls in (3, 4):
        assert np.bincount(fold[presence[:, cls] == 1], minlength=3).tolist() == [2, 2, 2]


def test_group_key_from_csv(tmp_path):
    (tmp_path / "meta.csv").write_text("image,patient\n" + "".join(f"{i:03d}.png,P{i % 4}\n" for i in range(8)))
    cfg = config_from_dict({"data": {"root": str(tmp_path)},
                            "kfold": {"group_csv": "meta.csv", "group_csv_id": "image", "group_column": "patient"}})
    ids = [f"imgs/{i:03d}.png" for i in range(8)]
    assert group_keys(None, ids, cfg.kfold, cfg.data) == [f"P{i % 4}" for i in range(8)]
    assert groups_from_csv(ids, tmp_path / "meta.csv", "image", "patient") == [f"P{i % 4}" for i in range(8)]
    with pytest.raises(DataError, match="no row for sample 'imgs/999.png'"):
        group_keys(None, ["imgs/999.png"], cfg.kfold, cfg.data)
    with pytest.raises(DataError, match="no column 'person'"):
        groups_from_csv(ids, tmp_path / "meta.csv", "image", "person")


def test_split_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="group_regex"):
        config_from_dict({"kfold": {"group_regex": "(unclosed"}})
    with pytest.raises(ConfigError, match="kfold.folds"):
        config_from_dict({"kfold": {"folds": 1}})
    with pytest.raises(ConfigError, match="kfold.group_csv needs kfold.group_column"):
        config_from_dict({"kfold": {"group_csv": "meta.csv"}})
    with pytest.raises(ConfigError, match="kfold.stratify needs kfold.metadata"):
        config_from_dict({"kfold": {"stratify": ["sex"]}})
    with pytest.raises(DataError, match="does not match"):
        groups_from_regex(["a.png"], "^(ID\\d+)/")
    with pytest.raises(DataError, match="3 groups cannot make 4 folds"):
        make_folds(np.ones((6, 2)), 4, "group", 0, ["a", "a", "b", "b", "c", "c"])
    # strategy group needs groups; auto picks stratified_group when there are some, else stratified
    cfg, labels = constructed_set(tmp_path, n=12, folders=lambda i: f"ID{i // 2:03d}")
    source = CocoSource(cfg.data, "train", labels)
    task = get_task(cfg.task)
    grouped = cfg.model_copy(update={"kfold": cfg.kfold.model_copy(update={"strategy": "group", "folds": 3})})
    with pytest.raises(ConfigError, match="kfold.strategy group: the samples have no groups"):
        assign_folds(source, labels, task, grouped)
    auto = cfg.model_copy(update={"kfold": cfg.kfold.model_copy(update={"folds": 3})})
    assert assign_folds(source, labels, task, auto).strategy == "stratified"
    regex = auto.model_copy(update={"kfold": auto.kfold.model_copy(update={"group_regex": r"^(ID\d+)/"})})
    folds = assign_folds(source, labels, task, regex)
    assert folds.strategy == "stratified_group" and folds.groups[:3] == ["ID000", "ID000", "ID001"]


def test_folds_csv_partitions_the_training_set_and_drives_data_fold(tmp_path):
    cfg, labels = constructed_set(tmp_path)
    cfg = cfg.model_copy(update={"kfold": cfg.kfold.model_copy(update={"folds": 3})})
    doc = make_folds_file(cfg, labels, tmp_path / "out")
    assert doc["strategy"] == "stratified" and doc["folds"] == 3 and doc["samples"] == 30
    assert [f["images"] for f in doc["per_fold"]] == [10, 10, 10]
    path = tmp_path / "out" / "folds.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == "sample_id,group,fold,stratum" and len(lines) == 31
    rows = [line.split(",") for line in lines[1:]]
    pool = CocoSource(cfg.data, "train", labels)
    ids = [pool.sample_id(i) for i in range(len(pool))]
    assert [r[0] for r in rows] == ids and all(r[1] == r[0] for r in rows)  # no groups: each image its own
    fold = read_folds(path, ids)
    assert fold.tolist() == [int(r[2]) for r in rows]
    # the same folds as the splitter makes in memory (same config, same seed)
    assert fold.tolist() == assign_folds(pool, labels, get_task(cfg.task), cfg).fold.tolist()
    seen = []
    for k in range(3):
        fold_cfg = config_from_dict({"data": {"root": str(tmp_path), "train": "train.json", "fold": k, "folds": str(path)}})
        train, val = open_source(fold_cfg, "train", labels), open_source(fold_cfg, "val", labels)
        train_ids = [train.sample_id(i) for i in range(len(train))]
        val_ids = [val.sample_id(i) for i in range(len(val))]
        assert val_ids == [s for s, f in zip(ids, fold) if f == k]
        assert not set(train_ids) & set(val_ids) and len(train_ids) + len(val_ids) == 30
        # every annotation travels with its image
        for i, sid in enumerate(val_ids):
            assert np.array_equal(val.load_target(i), pool.load_target(ids.index(sid)))
        seen += val_ids
    assert sorted(seen) == sorted(ids)


def test_read_folds_refuses_a_file_that_does_not_fit(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("sample_id,group,fold,stratum\na,a,0,\nb,b,1,\n")
    assert read_folds(path, ["b", "a"]).tolist() == [1, 0]
    with pytest.raises(DataError, match="no fold for 1 sample"):
        read_folds(path, ["a", "b", "c"])
    path.write_text("sample_id,group,fold,stratum\na,a,0,\na,a,1,\n")
    with pytest.raises(DataError, match="line 3: sample 'a' appears twice"):
        read_folds(path, ["a"])
    path.write_text("id,fold\na,0\n")
    with pytest.raises(DataError, match="line 1: header"):
        read_folds(path, ["a"])
    with pytest.raises(DataError, match="folds file not found"):
        read_folds(tmp_path / "nope.csv", ["a"])
