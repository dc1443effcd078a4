"""k-fold splits: multi-label stratification, groups, the fold files."""

import json

import numpy as np
import pytest

from seglab.config import config_from_dict
from seglab.data import resolve_labels
from seglab.data.sources.coco import CocoSource
from seglab.errors import ConfigError, DataError
from seglab.kfold import make_split_files
from seglab.data.splits import class_presence, group_keys, make_folds
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
    groups = group_keys(ids, kcfg, tmp_path)
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
    cfg = config_from_dict({"kfold": {"group_csv": "meta.csv", "group_csv_id": "image", "group_column": "patient"}})
    ids = [f"imgs/{i:03d}.png" for i in range(8)]
    assert group_keys(ids, cfg.kfold, tmp_path) == [f"P{i % 4}" for i in range(8)]
    with pytest.raises(DataError, match="no row for sample 'imgs/999.png'"):
        group_keys(["imgs/999.png"], cfg.kfold, tmp_path)


def test_split_config_errors():
    with pytest.raises(ConfigError, match="needs a group key"):
        config_from_dict({"kfold": {"strategy": "group"}})
    with pytest.raises(ConfigError, match="group_regex"):
        config_from_dict({"kfold": {"group_regex": "(unclosed"}})
    with pytest.raises(ConfigError, match="kfold.folds"):
        config_from_dict({"kfold": {"folds": 1}})
    assert config_from_dict({"kfold": {"group_regex": "^(.*)/"}}).kfold.resolved_strategy() == "stratified_group"
    with pytest.raises(DataError, match="does not match"):
        group_keys(["a.png"], config_from_dict({"kfold": {"group_regex": "^(ID\\d+)/"}}).kfold, ".")
    with pytest.raises(DataError, match="3 groups cannot make 4 folds"):
        make_folds(np.ones((6, 2)), 4, "group", 0, ["a", "a", "b", "b", "c", "c"])


def test_fold_files_partition_the_training_set(tmp_path):
    cfg, labels = constructed_set(tmp_path)
    cfg = cfg.model_copy(update={"kfold": cfg.kfold.model_copy(update={"folds": 3})})
    doc = make_split_files(cfg, labels, tmp_path / "out")
    source = json.loads((tmp_path / "train.json").read_text())
    seen = []
    for k in range(3):
        train = json.loads((tmp_path / "out" / "folds" / f"fold_{k}" / "train.json").read_text())
        val = json.loads((tmp_path / "out" / "folds" / f"fold_{k}" / "val.json").read_text())
        train_ids = {im["id"] for im in train["images"]}
        val_ids = {im["id"] for im in val["images"]}
        assert not train_ids & val_ids and len(train_ids | val_ids) == 30
        assert train["categories"] == source["categories"]
        # every annotation travels with its image
        assert {a["image_id"] for a in val["annotations"]} == val_ids
        assert len(train["annotations"]) + len(val["annotations"]) == len(source["annotations"])
        assert all(doc["assignment"][im["file_name"]] == k for im in val["images"])
        seen += sorted(val_ids)
    assert sorted(seen) == list(range(30))
    assert doc["strategy"] == "stratified"
