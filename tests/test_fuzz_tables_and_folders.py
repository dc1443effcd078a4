"""Fuzz the readers that are not JSON documents (those are in test_fuzz_readers.py): label-map
PNGs, the three classification readers (image folders, CSV, mask status) and the command
line's `key=value` overrides. The contract is the COCO fuzzer's: any input either loads
(and then everything the pipeline does with it works) or raises a SeglabError whose
message is one line per problem, never another exception.

Each fuzzer runs a few dozen examples (`EXAMPLES`): the whole file stays well under a
minute on two cores; raise it locally to search harder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from seglab.config import DataConfig, load_config
from seglab.errors import ConfigError, SeglabError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("SEGLAB_FUZZ_EXAMPLES", 100))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def one_line_each(error: SeglabError) -> None:
    event("refused with a SeglabError")
    if os.environ.get("SEGLAB_FUZZ_SHOW"):
        event(str(error).split(": ", 1)[-1][:50])
    text = str(error)
    assert text.strip() and "Traceback" not in text, text
    problems = getattr(error, "problems", None)
    for line in problems if problems is not None else text.splitlines():
        assert line.strip() and "\n" not in line


def fresh(factory, name: str) -> Path:
    path = factory.mktemp(name)
    shutil.rmtree(path)
    path.mkdir()
    return path


def good_image(path: Path, hw=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*hw, 3), 100, np.uint8))


# Names a data set could hold: plain, odd, escaping, Unicode digits, empty, with separators.
NAMES = st.sampled_from(["a", "b", "cat", "x.jpg", "../x.jpg", "/etc/passwd", "", " ", "a,b", 'q"', "²", "٣", "12",
                         "1" * 12, "-3", "nul\x00", "C:\\x.jpg", "sub/y.png", ".hidden"]) | st.text(max_size=6)
FILE_CONTENT = st.sampled_from(["image", "image_big", "junk", "empty", "truncated"])


def write_file(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("image", "image_big"):  # PNG bytes whatever the extension says
        ok, data = cv2.imencode(".png", np.full((8, 8 if kind == "image" else 12, 3), 100, np.uint8))
        path.write_bytes(data.tobytes())
    elif kind == "junk":
        path.write_bytes(b"\x89PNG not really")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        ok, data = cv2.imencode(".png", np.full((8, 8, 3), 100, np.uint8))
        path.write_bytes(data.tobytes()[: len(data) // 2])


def use_classification(data: DataConfig, source_type, split: str = "train") -> None:
    """Everything the pipeline does with a classification split: labels, reading, checks, loading."""
    labels = source_type.resolve_labels(data)
    source = source_type(data, split, labels)
    problems = source.problems(check_files=True, deep=True)
    event("read; problems listed" if problems else "read; no problems")
    if not problems and source.has_targets:
        for i in range(len(source)):  # validation passed: this must not fail
            assert source.load_image(i).ndim == 3
            assert 0 <= source.load_target(i) < labels.num_classes


# ------------------------------------------------------------------ CSV


@FUZZ
@given(data=st.data())
def test_fuzzed_csv_loads_or_raises_seglab_errors(data, tmp_path_factory):
    from seglab.data.sources.classification import CsvSource

    root = fresh(tmp_path_factory, "csv")
    for name in ("x.jpg", "sub/y.png"):
        write_file(root / name, data.draw(FILE_CONTENT))
    valid = data.draw(st.integers(0, 2)) > 0  # mostly near-valid files: they reach the checks after parsing
    if valid:
        header = ["path", "label", "group"]
        row = st.tuples(st.sampled_from(["x.jpg", "sub/y.png", "missing.jpg"]) | NAMES, st.sampled_from(["a", "b", "0", "2"]) | NAMES,
                        st.sampled_from(["p1", "p2", ""]))
        rows = [list(r) for r in data.draw(st.lists(row, max_size=5))]
    else:
        header = data.draw(st.lists(st.sampled_from(["path", "label", "group", "extra", ""]) | st.text(max_size=4), min_size=1, max_size=4))
        rows = data.draw(st.lists(st.lists(NAMES, min_size=0, max_size=5), max_size=5))
    text = "\n".join([",".join(header)] + [",".join(r) for r in rows]) + data.draw(st.sampled_from(["", "\n", "\n\n", ",\n"]))
    encoding = data.draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16"]))
    (root / "t.csv").write_bytes(text.encode(encoding, errors="replace"))
    classes = data.draw(st.sampled_from([None, ["a", "b"], ["0", "1", "2"]]))
    config = DataConfig(format="csv", root=str(root), train="t.csv", classes=classes,
                        csv={"group_column": data.draw(st.sampled_from([None, "group"]))})
    try:
        use_classification(config, CsvSource)
    except SeglabError as e:
        one_line_each(e)


# ------------------------------------------------------------------ image folders


@FUZZ
@given(data=st.data())
def test_fuzzed_image_folders_load_or_raise_seglab_errors(data, tmp_path_factory):
    from seglab.data.sources.classification import ImageFolderSource

    root = fresh(tmp_path_factory, "folders")
    folder_names = st.sampled_from(["cat", "dog", "Cat", ".hidden", "٣", "a b", "empty", "x.jpg"])
    for _ in range(data.draw(st.integers(0, 5))):
        rel = Path(data.draw(folder_names))
        if data.draw(st.booleans()):
            rel = rel / data.draw(folder_names)  # nested: images are searched recursively
        name = data.draw(st.sampled_from(["a.jpg", "b.PNG", "c.txt", ".d.jpg", "e.jpeg", "f.webp"]))
        write_file(root / "train" / rel / name, data.draw(FILE_CONTENT))
    if data.draw(st.booleans()):
        (root / "train" / data.draw(folder_names)).mkdir(parents=True, exist_ok=True)
    if data.draw(st.integers(0, 3)) == 0:
        write_file(root / "train" / "loose.jpg", "image")
    classes = data.draw(st.sampled_from([None, ["cat", "dog"], ["cat"]]))
    try:
        use_classification(DataConfig(format="imagefolder", root=str(root), train="train", classes=classes), ImageFolderSource)
    except SeglabError as e:
        one_line_each(e)


# ------------------------------------------------------------------ mask status


PERSON = st.sampled_from(["000001_female_Asian_45", "000002_male_Asian_20", "000002_male_Asian_21", "000003_male_Asian_200",
                          "bad", "000004_x_Asian_30", "000005_female_Asian_٣", "000006_female_Asian_-1", "..", "a/b"])


@FUZZ
@given(data=st.data())
def test_fuzzed_mask_status_loads_or_raises_seglab_errors(data, tmp_path_factory):
    from seglab.data.sources.classification import MaskStatusSource

    root = fresh(tmp_path_factory, "maskstatus")
    images = root / "train" / "images"
    images.mkdir(parents=True)
    people = data.draw(st.lists(PERSON, max_size=4))
    for person in people:
        if "/" in person or person == "..":
            continue
        for kind in data.draw(st.lists(st.sampled_from(["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask",
                                                        "normal", "mask9", "._mask1"]), max_size=8)):
            write_file(images / person / f"{kind}{data.draw(st.sampled_from(['.jpg', '.png', '.txt']))}", data.draw(FILE_CONTENT))
    if data.draw(st.booleans()):
        header = data.draw(st.sampled_from(["id,gender,race,age,path", "path,gender,age", "path", "id,age"]))
        rows = [",".join(data.draw(st.lists(NAMES | PERSON | st.sampled_from(["male", "female", "45", "-5", "٣"]),
                                            min_size=1, max_size=5))) for _ in range(data.draw(st.integers(0, 4)))]
        (root / "train" / "train.csv").write_text("\n".join([header] + rows) + "\n")
    if data.draw(st.integers(0, 3)) == 0:
        write_file(images / "loose.jpg", "image")
    try:
        use_classification(DataConfig(format="maskstatus", root=str(root), train="train"), MaskStatusSource)
    except SeglabError as e:
        one_line_each(e)


# ------------------------------------------------------------------ label maps


@FUZZ
@given(data=st.data())
def test_fuzzed_label_maps_load_or_raise_seglab_errors(data, tmp_path_factory):
    from seglab.data import collect_problems
    from seglab.data.sources.labelmap import LabelMapSource

    root = fresh(tmp_path_factory, "labelmap")
    good_image(root / "images" / "a.png", (8, 8))
    (root / "masks").mkdir()
    h, w = data.draw(st.sampled_from([(8, 8), (8, 8), (8, 6), (1, 8)]))
    mode = data.draw(st.sampled_from(["L", "L", "P", "P", "I;16", "RGB", "LA", "1", "junk", "truncated"]))
    top = data.draw(st.sampled_from([2, 2, 3, 255, 300]))  # mostly class values, sometimes strays
    values = np.array(data.draw(st.lists(st.integers(0, top), min_size=h * w, max_size=h * w))).reshape(h, w)
    path = root / "masks" / "a.png"
    if mode == "junk":
        path.write_bytes(data.draw(st.binary(max_size=64)))
    elif mode == "I;16":
        Image.fromarray(values.astype(np.uint16)).save(path)
    else:
        im = Image.fromarray((values % 256).astype(np.uint8))
        if mode == "P":
            im = im.convert("P")
        elif mode != "truncated":
            im = im.convert(mode)
        im.save(path)
        if mode == "truncated":
            path.write_bytes(path.read_bytes()[: data.draw(st.integers(0, 60))])
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={root}", "data.format=labelmap", "data.train=null", "data.val=null", "data.test=null",
        "data.classes=[bg, a, b]", "data.coco=null", *data.draw(st.sampled_from([[], ["data.labelmap.mask_value_map={0: 0, 255: 1}"]]))])
    try:
        labels, problems = collect_problems(cfg, ("train",), deep=True)
        event("read; problems listed" if problems else "read; no problems")
        if labels is not None and not problems:
            mask = LabelMapSource(cfg.data, "train", labels).load_target(0)  # validation passed: this must not fail
            assert mask.shape == (8, 8) and mask.max() < 3 or (mask == 255).any()
    except SeglabError as e:
        one_line_each(e)


# ------------------------------------------------------------------ command-line overrides


KEYS = st.sampled_from(["optim.lr", "data.batch_size", "data.image_size", "trainer.limit_train_batches", "trainer.precision",
                        "data.classes", "data.coco.category_map", "loss.0.weight", "loss", "augment.train.0.p", "seed",
                        "trainer", "data", "model.in_channels", "tta.scales", "nope.key", "optim..lr", ".", "data.train.x",
                        "loss.9.name", "optim.lr.x", "trainer.devices"])
VALUES = st.sampled_from(["0.01", "4", "[32, 32]", "16", "bf16", "0.5", "[a, b]", "{0: 1}", ".inf", ".nan", "true", "null", "[", "{a: 1}", "[1, 2]", "[true, 3]", "-1", "0", "1e-3", "1" * 5000,
                          "'x'", "!!python/object:os.system", "*alias", "&a [1]", "é", "٣", "\t", "- a", ""]) | st.text(max_size=8)


@FUZZ
@given(overrides=st.lists(st.tuples(KEYS | st.text(max_size=6), VALUES), max_size=3))
def test_fuzzed_overrides_load_or_raise_config_errors(overrides):
    try:
        load_config(ROOT / "configs" / "demo.yaml", [f"{k}={v}" for k, v in overrides])
        event("loaded")
    except ConfigError as e:
        one_line_each(e)
