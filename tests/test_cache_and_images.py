"""Silently wrong, ruled out: every input that shapes a cached array is in its key (an
edit is a cache miss), and images and label maps are decoded by one path that applies
EXIF orientation to both alike and never resizes a label map to fit its image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seglab.config import load_config
from seglab.data import build_dataset, collect_problems, resolve_labels
from seglab.data.synth.polygons import make_polygon_dataset
from seglab.errors import DataError
from tests.conftest import write_coco
from tests.workflow_helpers import ROOT


STORED = [cv2.IMWRITE_PNG_COMPRESSION, 0]  # uncompressed: the file size does not depend on the values


def keep_stamp(path: Path, edit) -> None:
    """Edit a file keeping its size and mtime: only a content key sees the change."""
    st = os.stat(path)
    edit(path)
    assert os.stat(path).st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def target(cfg, i=0):
    return np.asarray(build_dataset(cfg, "train", resolve_labels(cfg))[i]["target"])


def labelmap_config(root: Path, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={root}", "data.format=labelmap", "data.train=null", "data.val=null", "data.test=null",
        "data.classes=[bg, a, b]", "data.coco=null", "augment.train=[]", *extra])


def write_labelmap(root: Path, mask: np.ndarray, image_hw=None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((*(image_hw or mask.shape), 3), np.uint8))
    cv2.imwrite(str(root / "masks" / "a.png"), mask.astype(np.uint8), STORED)


def test_labelmap_edit_keeping_size_and_mtime_is_a_cache_miss(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    write_labelmap(tmp_path, mask)
    cfg = labelmap_config(tmp_path, "data.image_size=[8, 8]")
    assert set(np.unique(target(cfg))) == {0, 1}
    keep_stamp(tmp_path / "masks" / "a.png", lambda p: cv2.imwrite(str(p), mask * 2, STORED))  # class a -> class b
    assert set(np.unique(target(cfg))) == {0, 2}
    # The class map (which value is which class) is in the key too.
    swapped = labelmap_config(tmp_path, "data.image_size=[8, 8]", "data.labelmap.mask_value_map={0: 0, 1: 2, 2: 1}")
    assert set(np.unique(target(swapped))) == {0, 1}
    # And the size.
    assert target(labelmap_config(tmp_path, "data.image_size=[4, 4]")).shape == (4, 4)


def test_polygon_edit_keeping_size_and_mtime_is_a_cache_miss(tmp_path):
    make_polygon_dataset(tmp_path, n_train_ids=1, n_val_ids=1, n_test_ids=0, size=32, seed=0)
    for multiclass in (False, True):
        cfg = load_config(ROOT / "configs" / "demo_multilabel.yaml", [
            f"data.root={tmp_path / 'train'}", "data.image_size=[16, 16]", "augment.train=[]",
            *(["task=multiclass", "loss=[{name: ce}]", "submission.format=png", "eval.monitor=mIoU"] if multiclass else [])])
        source = build_dataset(cfg, "train", resolve_labels(cfg)).source
        path = source.json_path(0)
        before = target(cfg)
        text = path.read_text()
        first = next(a["label"] for a in json.loads(text)["annotations"] if a["label"] in ("disc", "star"))
        other = {"disc": "star", "star": "disc"}[first]  # same length: the file keeps its size
        keep_stamp(path, lambda p: p.write_text(text.replace(f'"{first}"', f'"{other}"', 1)))
        assert not np.array_equal(target(cfg), before), "an edited label file was served from the cache"
        keep_stamp(path, lambda p: p.write_text(text))


def test_coco_category_map_change_is_a_cache_miss(tmp_path):
    write_coco(tmp_path, "train.json", [{"id": 1, "file_name": "x.png", "height": 8, "width": 8}],
               [{"id": 1, "image_id": 1, "category_id": 0, "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]]}],
               [{"id": 0, "name": "paper"}, {"id": 1, "name": "metal"}])
    base = [f"data.root={tmp_path}", "data.train=train.json", "data.val=null", "data.test=null",
            "data.classes=[Background, paper, metal]", "data.image_size=[4, 4]", "augment.train=[]"]
    one = load_config(ROOT / "configs" / "demo.yaml", base + ["data.coco.category_map={0: 1, 1: 2}"])
    two = load_config(ROOT / "configs" / "demo.yaml", base + ["data.coco.category_map={0: 2, 1: 1}"])
    assert target(one).max() == 1 and target(two).max() == 2


# ------------------------------------------------------------------ EXIF


def exif_jpeg(path: Path, hw: tuple[int, int], orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    array = np.zeros((*hw, 3), np.uint8)
    array[:, : hw[1] // 2] = 255  # left half white: shows which way the pixels were turned
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, exif=exif, quality=95)


def test_exif_orientation_turns_image_and_label_map_alike(tmp_path):
    exif_jpeg(tmp_path / "images" / "a.jpg", (8, 16), 6)  # stored 8x16 (h x w), seen upright 16x8
    (tmp_path / "masks").mkdir()
    label = np.zeros((8, 16), np.uint8)
    label[:, :8] = 1
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(label).save(tmp_path / "masks" / "a.png", exif=exif)
    cfg = labelmap_config(tmp_path)
    labels, problems = collect_problems(cfg, ("train",), deep=True)
    assert problems == []
    item = build_dataset(cfg, "train", labels)[0]
    image, mask = item["image"].numpy().transpose(1, 2, 0), item["target"].numpy()
    assert image.shape[:2] == mask.shape == (16, 8)
    assert np.array_equal(image[..., 0] > 127, mask == 1)  # the white half is the labelled half
    # A label map without the tag (stored as the image is stored) now disagrees with the upright image: an error.
    Image.fromarray(label).save(tmp_path / "masks" / "a.png")
    _, problems = collect_problems(cfg, ("train",))
    assert len(problems) == 1 and "masks/a.png: label map is 8x16 but its image is 16x8" in problems[0]


def png_with_exif_after_pixels(path: Path, hw: tuple[int, int], orientation: int) -> None:
    """A PNG whose eXIf chunk follows its pixel data (legal; PIL writes it before)."""
    import struct
    import zlib

    Image.fromarray(np.zeros(hw, np.uint8)).save(path)
    data = path.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    iend = data.rindex(b"IEND") - 4
    path.write_bytes(data[:iend] + chunk + data[iend:])


def test_png_orientation_is_found_from_chunk_headers_wherever_the_chunk_lies(tmp_path):
    from seglab.data.images import image_size, png_has_exif, read_image

    png_with_exif_after_pixels(tmp_path / "late.png", (8, 16), 6)
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(tmp_path / "plain.png")
    assert png_has_exif(tmp_path / "late.png") and not png_has_exif(tmp_path / "plain.png")
    assert image_size(tmp_path / "late.png", "x") == (16, 8) == read_image(tmp_path / "late.png", "x").shape[:2]
    assert image_size(tmp_path / "plain.png", "x") == (8, 16)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
def test_every_image_mode_reads_as_pil_converts_it(tmp_path, mode):
    from seglab.data.images import read_image

    rng = np.random.default_rng(0)
    if mode == "I;16":
        stored = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
        Image.fromarray(stored).save(tmp_path / "a.png")
        expected = np.repeat((stored >> 8).astype(np.uint8)[..., None], 3, axis=2)  # the high byte, as OpenCV
    else:
        channels = {"L": (), "RGB": (3,), "RGBA": (4,), "LA": (2,), "P": ()}[mode]
        image = Image.fromarray(rng.integers(0, 256, (5, 7, *channels), dtype=np.uint8))
        (image.convert(mode) if mode != image.mode else image).save(tmp_path / "a.png")
        expected = np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))
    assert Image.open(tmp_path / "a.png").mode == mode
    array = read_image(tmp_path / "a.png", "x")
    assert array.dtype == np.uint8 and array.flags.c_contiguous and np.array_equal(array, expected)


def test_coco_record_size_is_the_upright_size(tmp_path):
    exif_jpeg(tmp_path / "a.jpg", (8, 16), 8)
    write_coco(tmp_path, "train.json", [{"id": 1, "file_name": "a.jpg", "height": 16, "width": 8}], [],
               [{"id": 0, "name": "paper"}], write_images=False)
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.root={tmp_path}", "data.train=train.json", "data.val=null",
                                                       "data.test=null", "data.classes=null", "data.coco=null"])
    labels, problems = collect_problems(cfg, ("train",))
    assert problems == []
    assert build_dataset(cfg, "train", labels).source.load_image(0).shape == (16, 8, 3)


def test_label_map_of_another_size_is_an_error_not_resized(tmp_path):
    write_labelmap(tmp_path, np.ones((8, 8)), image_hw=(16, 16))
    cfg = labelmap_config(tmp_path, "data.image_size=[4, 4]")
    _, problems = collect_problems(cfg, ("train",))
    assert problems == [f"{tmp_path / 'masks' / 'a.png'}: label map is 8x8 but its image is 16x16"]
    with pytest.raises(DataError, match="a label map must match its image pixel for pixel"):
        target(cfg)


@pytest.mark.parametrize("mode, ok", [("P", True), ("L", True), ("I;16", True), ("RGB", False), ("LA", False)])
def test_label_map_modes(tmp_path, mode, ok):
    """A palette PNG's indices are its classes (valid); colours (RGB) or grey+alpha are not class values."""
    write_labelmap(tmp_path, np.zeros((4, 4)))
    values = np.array([[0, 1, 2, 1]] * 4, np.uint8)
    im = Image.fromarray(values)
    if mode == "P":
        im = im.convert("P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    elif mode == "I;16":
        im = Image.fromarray(values.astype(np.uint16))
    elif mode != "L":
        im = im.convert(mode)
    im.save(tmp_path / "masks" / "a.png")
    cfg = labelmap_config(tmp_path)
    _, problems = collect_problems(cfg, ("train",), deep=True)
    if ok:
        assert problems == [] and target(cfg).tolist() == values.tolist()
    else:
        assert len(problems) == 1 and f"label map is a {mode} image" in problems[0] and "channels" not in problems[0]


def test_deep_validation_finds_label_values_outside_the_class_map(tmp_path):
    write_labelmap(tmp_path, np.array([[0, 1, 9, 9]] * 4))
    cfg = labelmap_config(tmp_path)
    assert collect_problems(cfg, ("train",))[1] == []  # the header is fine: only a decode finds values
    problems = collect_problems(cfg, ("train",), deep=True)[1]
    assert len(problems) == 1 and "masks/a.png: pixel values [9] are not in data.labelmap.mask_value_map / classes" in problems[0]


def test_image_size_is_read_again_when_the_file_changes_even_with_its_mtime_restored(tmp_path):
    from seglab.data.images import image_size

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(path)
    stamp = os.stat(path)
    assert image_size(path, "t") == (32, 48)
    assert image_size(path, "t") == (32, 48)  # remembered
    Image.fromarray(np.zeros((48, 32), np.uint8)).save(path)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert image_size(path, "t") == (48, 32)
    path.unlink()
    with pytest.raises(DataError, match="a.png"):
        image_size(path, "t")
