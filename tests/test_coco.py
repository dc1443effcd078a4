import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from seglab.config import DataConfig
from seglab.data.inspect import inspect_coco
from seglab.data.labels import LabelSpec, resolve_coco_labels
from seglab.data.sources.coco import CocoSource, rasterise, read_coco, validate_coco
from seglab.errors import ConfigError, DataError
from tests.conftest import write_coco

ROOT = Path(__file__).resolve().parents[1]

CATS = [{"id": 0, "name": "unknown"}, {"id": 1, "name": "paper"}, {"id": 2, "name": "metal"}]
LABELS = LabelSpec(("Background", "unknown", "paper", "metal"), 255, {0: 1, 1: 2, 2: 3})


def square(x0, y0, x1, y1):
    """A polygon covering pixel columns x0..x1-1 and rows y0..y1-1 (pycocotools' pixel model)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def one_image(tmp_path, anns, h=10, w=10):
    images = [{"id": 7, "file_name": "a/img.jpg", "height": h, "width": w}]
    for i, a in enumerate(anns):
        a.setdefault("id", 100 + i)
        a.setdefault("image_id", 7)
    return read_coco(write_coco(tmp_path, "train.json", images, anns, CATS), tmp_path)


def test_polygon_rasterises_to_the_hand_drawn_square(tmp_path):
    coco = one_image(tmp_path, [{"category_id": 1, "segmentation": square(2, 3, 6, 8)}])
    mask = rasterise(coco, 0, LABELS, "area_desc")
    expected = np.zeros((10, 10), np.uint8)
    expected[3:8, 2:6] = 2
    # pycocotools' polygon fill includes the far edge for integer vertices: compare with its own decode
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(square(2, 3, 6, 8), 10, 10))).astype(bool)
    assert np.array_equal(mask == 2, ref)
    assert (mask[expected == 2] == 2).all() and set(np.unique(mask)) == {0, 2}


def test_compressed_and_uncompressed_rle(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[1:4, 1:4] = 1
    compressed = mask_utils.encode(np.asfortranarray(m))
    compressed["counts"] = compressed["counts"].decode()
    m2 = np.zeros((10, 10), np.uint8)
    m2[6:9, 5:9] = 1
    flat = m2.flatten(order="F")
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    uncompressed = {"size": [10, 10], "counts": runs}
    coco = one_image(tmp_path, [{"category_id": 2, "segmentation": compressed}, {"category_id": 0, "segmentation": uncompressed}])
    mask = rasterise(coco, 0, LABELS, "annotation_order")
    assert (mask[1:4, 1:4] == 3).all() and (mask[6:9, 5:9] == 1).all()
    assert (mask == 3).sum() == 9 and (mask == 1).sum() == 12


@pytest.mark.parametrize("order, small_first, winner", [
    ("area_desc", True, 3), ("area_desc", False, 3),           # the small object wins either way
    ("annotation_order", True, 2), ("annotation_order", False, 3),  # the later annotation wins
    ("class_index", True, 3), ("class_index", False, 3),       # the higher class index wins
])
def test_paint_orders_decide_overlaps(tmp_path, order, small_first, winner):
    small = {"category_id": 2, "segmentation": square(3, 3, 5, 5)}  # metal, class 3
    big = {"category_id": 1, "segmentation": square(0, 0, 9, 9)}  # paper, class 2
    coco = one_image(tmp_path, [small, big] if small_first else [big, small])
    mask = rasterise(coco, 0, LABELS, order)
    assert mask[4, 4] == winner
    assert mask[0, 0] == 2  # only paper there


def test_default_map_is_background_then_json_order(tmp_path):
    cfg = DataConfig()
    labels = resolve_coco_labels(cfg, [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}], "x.json")
    assert labels.classes == ("Background", "b", "a")
    assert labels.source_to_class == {5: 1, 2: 2}


def test_explicit_category_map_and_remap_to_background_and_ignore():
    classes = ["Background", "UNKNOWN", "paper", "metal"]
    cats = [{"id": 0, "name": "UNKNOWN"}, {"id": 1, "name": "paper"}, {"id": 2, "name": "metal"}]
    by_id = {0: 1, 1: 2, 2: 3}
    assert resolve_coco_labels(DataConfig(classes=classes), cats, "t", by_id).source_to_class == {0: 1, 1: 2, 2: 3}
    merged = resolve_coco_labels(DataConfig(classes=classes, remap={"UNKNOWN": "Background"}), cats, "t", by_id)
    assert merged.classes == ("Background", "paper", "metal")
    assert merged.source_to_class == {0: 0, 1: 1, 2: 2}
    ignored = resolve_coco_labels(DataConfig(classes=classes, remap={"UNKNOWN": "ignore"}), cats, "t", by_id)
    assert ignored.source_to_class == {0: 255, 1: 1, 2: 2}
    assert ignored.num_classes == 3


def test_classes_matched_by_name_when_no_map():
    cfg = DataConfig(classes=["Background", "metal", "paper"])
    labels = resolve_coco_labels(cfg, [{"id": 1, "name": "paper"}, {"id": 2, "name": "metal"}], "t")
    assert labels.source_to_class == {1: 2, 2: 1}


@pytest.mark.parametrize("cfg, message", [
    (DataConfig(coco={"category_map": {0: 1, 1: 2}}), "data.coco.category_map: no entry for category id 2 ('metal')"),
    (DataConfig(coco={"category_map": {0: 1, 1: 2, 2: 3, 9: 1}}), "category id [9] is not in the categories"),
    (DataConfig(coco={"category_map": {0: 1, 1: 2, 2: 9}}), "class index 9 out of range"),
    (DataConfig(classes=["Background", "paper"]), "categories ['unknown', 'metal'] are not in data.classes"),
    (DataConfig(remap={"nope": "Background"}), "'nope' is not a class"),
    (DataConfig(classes=["Background", "x", "x"], coco={"category_map": {0: 1, 1: 1, 2: 1}}), "duplicate class names"),
])
def test_label_config_errors_are_clear(cfg, message):
    with pytest.raises(ConfigError) as e:
        resolve_coco_labels(cfg, CATS, "train.json", cfg.coco.category_map)
    assert message in str(e.value)


def test_mask_cache_is_reused_and_keyed_by_content(tmp_path):
    path = write_coco(tmp_path, "train.json", [{"id": 1, "file_name": "i.jpg", "height": 8, "width": 8}],
                      [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": square(0, 0, 4, 4)}], CATS)
    cfg = DataConfig(root=str(tmp_path), train="train.json", cache_dir=str(tmp_path / "cache"))
    source = CocoSource(cfg, "train", LABELS)
    first = source.load_target(0)
    cached = source.cache.path(source.sample_id(0))
    assert cached.exists()
    # a cache hit must not rasterise again
    source.coco.annotations.clear()
    assert np.array_equal(source.load_target(0), first)
    # another annotation file content gives another cache folder
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segmentation"] = square(4, 4, 8, 8)
    path.write_text(json.dumps(doc))
    other = CocoSource(cfg, "train", LABELS)
    assert other.cache.dir != source.cache.dir
    assert not np.array_equal(other.load_target(0), first)


# ----------------------------------------------------------------- bad input


def problems_for(tmp_path, images, anns, write_images=True):
    path = write_coco(tmp_path, "train.json", images, anns, CATS, write_images)
    return validate_coco(read_coco(path, tmp_path), LABELS)


IMG = {"id": 1, "file_name": "d/x.jpg", "height": 8, "width": 8}


def test_missing_image_names_file_and_record(tmp_path):
    problems = problems_for(tmp_path, [IMG], [], write_images=False)
    assert len(problems) == 1
    assert "train.json: image 1 ('d/x.jpg'): image file not found" in problems[0]


def test_image_size_differs_from_record(tmp_path):
    write_coco(tmp_path, "x.json", [dict(IMG, height=6)], [], CATS)  # writes a 6x8 image
    problems = problems_for(tmp_path, [IMG], [], write_images=False)
    assert problems == ["train.json: image 1 ('d/x.jpg'): image is 6x8 but the record says 8x8"]


@pytest.mark.parametrize("seg, message", [
    ([[1, 1, 5, 1]], "polygon 0 has 2 points (needs at least 3)"),
    ([[1, 1, 5, 1, 5]], "odd number of coordinates"),
    ([[100, 100, 120, 100, 120, 120]], "entirely outside"),
    ({"size": [4, 4], "counts": "abc"}, "RLE size [4, 4] differs from the image size [8, 8]"),
    ({"size": [8, 8], "counts": [3, 4]}, "RLE counts sum to 7"),
    ("nope", "segmentation must be a polygon list or an RLE"),
])
def test_broken_segmentations(tmp_path, seg, message):
    problems = problems_for(tmp_path, [IMG], [{"id": 42, "image_id": 1, "category_id": 1, "segmentation": seg}])
    assert len(problems) == 1
    assert problems[0].startswith("train.json: annotation 42 (image 1): ")
    assert message in problems[0]


def test_unknown_category_and_orphan_and_duplicates_all_listed(tmp_path):
    images = [IMG, dict(IMG, file_name="d/y.jpg")]  # duplicate id 1
    anns = [
        {"id": 1, "image_id": 1, "category_id": 9, "segmentation": square(0, 0, 2, 2)},
        {"id": 2, "image_id": 5, "category_id": 1, "segmentation": square(0, 0, 2, 2)},
    ]
    problems = problems_for(tmp_path, images, anns)
    text = "\n".join(problems)
    assert "duplicate image id 1" in text
    assert "annotation 1 (image 1): unknown category id 9" in text
    assert "annotation 2 (image 5): image id 5 is not in 'images'" in text


def test_empty_split_and_malformed_json(tmp_path):
    assert problems_for(tmp_path, [], []) == ["train.json: empty split (no images)"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(DataError, match=r"bad.json: malformed JSON at line 2, column 12"):
        read_coco(bad, tmp_path)


def test_inspect_reports_overlaps_per_class_pair(tmp_path):
    path = write_coco(tmp_path, "train.json", [IMG], [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square(0, 0, 4, 4)},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": square(2, 2, 6, 6)},
    ], CATS)
    report = inspect_coco(path)
    a = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(square(0, 0, 4, 4), 8, 8)))
    b = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(square(2, 2, 6, 6), 8, 8)))
    assert report["overlap_pixels"] == {"metal / paper": int((a & b).sum())}
    assert report["annotations_per_class"] == {"paper": 1, "metal": 1}
    assert report["image_sizes"] == {"8x8": 1}
    assert report["problems"] == []
    assert sum(report["pixel_share"].values()) == pytest.approx(1.0)


def test_resized_image_cache_gives_the_same_items(synth_root, tmp_path):
    from seglab.config import load_config
    from seglab.data import build_dataset, resolve_labels

    def items(cache_images: bool):
        cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.root={synth_root}", "data.image_size=[48,40]",
                                                           f"data.cache_images={str(cache_images).lower()}", "augment.train=[]",
                                                           f"data.cache_dir={tmp_path / str(cache_images)}"])
        ds = build_dataset(cfg, "train", resolve_labels(cfg), train=True)
        return [ds[i] for i in range(3)], ds

    plain, _ = items(False)
    first, ds = items(True)
    again = [ds[i] for i in range(3)]  # served from the cache now
    assert ds.resized_cache is not None and any(ds.resized_cache.dir.iterdir())
    for a, b, c in zip(plain, first, again):
        assert a["image"].shape == (3, 48, 40) and a["target"].shape == (48, 40)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
        assert torch.equal(a["target"], b["target"]) and torch.equal(a["target"], c["target"])
