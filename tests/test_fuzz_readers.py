"""Fuzz the annotation readers: random mutations of a valid file either load and
validate, or raise seglab's own error types (SeglabError subclasses) naming the
problem -- never KeyError, TypeError, IndexError or a crash from inside pycocotools.

A second property: whatever validation passes can be rasterised without error, so a
check that says "fine" is never contradicted at training time.

`READERS` is the table of formats: (name, a valid document, a function that reads a
file and uses everything the pipeline uses). The polygon-JSON reader joins it with one
entry (its valid per-image document and its read/validate/rasterise calls).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from seglab.config import DataConfig
from seglab.data.inspect import inspect_coco
from seglab.data.labels import LabelSpec, resolve_coco_labels
from seglab.data.painting import PAINT_ORDERS
from seglab.data.sources.coco import rasterise, read_coco, validate_coco
from seglab.errors import SeglabError

SIZE = 16


def valid_coco() -> dict:
    """Two images, two categories, and a polygon, a compressed and an uncompressed RLE."""
    square = np.zeros((SIZE, SIZE), np.uint8)
    square[2:9, 3:12] = 1
    compressed = mask_utils.encode(np.asfortranarray(square))
    compressed["counts"] = compressed["counts"].decode()
    runs, current = [0], 0  # uncompressed RLE: column-major runs, starting with background
    for v in square.flatten(order="F"):
        if v != current:
            runs.append(0)
            current = v
        runs[-1] += 1
    return {
        "images": [
            {"id": 1, "file_name": "a/0.jpg", "height": SIZE, "width": SIZE},
            {"id": 2, "file_name": "b/1.jpg", "height": SIZE, "width": SIZE},
        ],
        "categories": [{"id": 0, "name": "paper"}, {"id": 3, "name": "metal"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 0, "segmentation": [[1, 1, 12, 2, 6, 14]], "area": 60, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "segmentation": compressed, "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 3, "segmentation": {"size": [SIZE, SIZE], "counts": runs}, "iscrowd": 1},
        ],
    }


def use_coco(path: Path, root: Path) -> list[str]:
    """Everything the pipeline does with a COCO file before and while training; its problems."""
    coco = read_coco(path, root)
    labels = resolve_coco_labels(DataConfig(), coco.categories, path.name) if coco.categories else None
    problems = validate_coco(coco, labels)
    inspect_coco(path, root)
    if labels is not None and not problems:
        for order in PAINT_ORDERS:
            for i in range(len(coco.images)):
                mask = rasterise(coco, i, labels, order)  # validation passed: this must not fail
                assert mask.shape == (coco.images[i]["height"], coco.images[i]["width"])
    return problems


POLYGON_CLASSES = ["a", "b", "c"]


def valid_polygon_json() -> dict:
    """One image's labels: overlapping polygons, int and float vertices, one overshooting the image."""
    return {"annotations": [
        {"label": "a", "points": [[1, 1], [12, 2], [6, 14]]},
        {"label": "b", "points": [[3.5, 2.0], [11.0, 2.5], [11.0, 9.0], [3.0, 9.0]]},
        {"label": "c", "points": [[-4, -4], [20, 0], [8, 22]]},
    ]}


def use_polygon_json(path: Path, root: Path) -> list[str]:
    """Everything the pipeline does with one polygon-JSON label file (data.format=polygons): the
    file is the label of image `<root>/poly_images/<stem>.png`; its problems."""
    from seglab.data.sources.polygons import PolygonSource, resolve_polygon_labels

    image = root / "poly_images" / f"{path.stem}.png"
    if not image.is_file():
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), np.full((SIZE, SIZE), 90, np.uint8))
    (root / f"{path.stem}.txt").write_text(f"{image.name}\n")
    data = DataConfig(format="polygons", root=str(root), polygons={"image_dir": "poly_images", "json_dir": "."}, train=f"{path.stem}.txt",
                      classes=POLYGON_CLASSES)
    labels = resolve_polygon_labels(data)
    source = PolygonSource(data, "train", labels)
    assert source.json_path(0) == root / path.name
    problems = source.problems()
    if not problems:
        for target in ("binary_masks", "class_map"):  # multilabel and multiclass read the same file
            source.labels = LabelSpec(labels.classes, labels.ignore_index, labels.source_to_class, target)
            mask = source.load_target(0)  # validation passed: this must not fail
            assert mask.shape[-2:] == (SIZE, SIZE)
    return problems


READERS = {
    "coco": (valid_coco, use_coco),
    "polygons": (valid_polygon_json, use_polygon_json),
}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    for name in ("a/0.jpg", "b/1.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), np.full((SIZE, SIZE, 3), 90, np.uint8))
    return root


# ------------------------------------------------------------------ mutations

SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from([0, -1, -SIZE, SIZE, 2 * SIZE, 65536, 10**12, 1e308, "", "0", "!!", [], {}, [[]], [[0, 0]]])
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
RLE_LIKE = st.fixed_dictionaries({"size": st.lists(st.integers(-2, 2 * SIZE), max_size=3), "counts": st.text(alphabet=st.characters(min_codepoint=40, max_codepoint=120), max_size=12) | st.lists(st.integers(-3, SIZE * SIZE + 3), max_size=6)})
POLYGON_LIKE = st.lists(st.lists(st.integers(-40, 40) | st.floats(-1e12, 1e12), max_size=9), max_size=3)


def paths(node, prefix=()):
    """Every place in the document: (path to it, its value)."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


def parent_and_key(doc, path):
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


@st.composite
def mutated(draw, make_valid):
    doc = make_valid()
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p, _ in paths(doc) if p]
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent, key = parent_and_key(doc, path)
        op = draw(st.sampled_from(["drop", "replace", "negate", "segmentation", "shrink", "duplicate", "swap_type"]))
        value = parent[key]
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(JSON)
        elif op == "negate" and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[key] = -value if value else -1
        elif op == "segmentation":
            parent[key] = draw(RLE_LIKE | POLYGON_LIKE)
        elif op == "shrink" and isinstance(value, (list, str)) and value:
            parent[key] = value[: draw(st.integers(0, len(value) - 1))]
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(value)))
        elif op == "swap_type":
            parent[key] = str(value) if not isinstance(value, str) else ([value] if draw(st.booleans()) else {"v": value})
    text = json.dumps(doc)
    if draw(st.integers(0, 9)) == 0:  # sometimes break the JSON text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", ",", "]", "}", "\x00", "\ufffd", '"'])) + text[cut:][: draw(st.integers(0, 20))]
    return text


@pytest.mark.parametrize("reader", list(READERS))
@settings(max_examples=250, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_load_or_raise_seglab_errors(reader, data, image_root, tmp_path_factory):
    make_valid, use = READERS[reader]
    text = data.draw(mutated(make_valid))
    path = image_root / f"{reader}.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        use(path, image_root)
    except SeglabError as e:
        message = str(e)
        assert message.strip() and "Traceback" not in message
        assert path.name in message or any(w in message for w in ("data.", "categories", "class")), message


@pytest.mark.parametrize("reader", list(READERS))
def test_the_valid_document_is_valid(reader, image_root):
    make_valid, use = READERS[reader]
    path = image_root / f"{reader}-valid.json"
    path.write_text(json.dumps(make_valid()))
    assert use(path, image_root) == []


@pytest.mark.parametrize("segmentation", [
    {"size": [SIZE, SIZE], "counts": "0~~~~"},  # pycocotools: ValueError at training time before validation knew
    {"size": [SIZE, SIZE], "counts": "PPPPPPPPPP"},  # runs overrunning the mask (C buffer overrun)
    [[1, 1, 6, 1, 10**400, 6]],  # OverflowError converting to float
    [[1, 1, 6, 1, 1e15, 6]],  # pycocotools would allocate a pixel run to 1e15
    {"size": [SIZE, SIZE], "counts": [SIZE * SIZE + 5, -5]},
])
def test_segmentations_that_used_to_escape_validation(segmentation, image_root):
    doc = valid_coco()
    doc["annotations"][0]["segmentation"] = segmentation
    path = image_root / "regression.json"
    path.write_text(json.dumps(doc))
    assert "annotation 10 (image 1)" in " ".join(use_coco(path, image_root))


@pytest.mark.parametrize("annotation, message", [
    ({"label": ["a"], "points": [[1, 1], [6, 1], [6, 6]]}, "unknown label ['a']"),  # was a TypeError (unhashable)
    ({"label": "a", "points": [[1, 1], [6, 1], [10**400, 6]]}, "vertex far outside"),  # was an OverflowError
    ({"label": "a", "points": [[1, 1], [6, 1], [1e15, 6]]}, "vertex far outside"),  # wrapped around in the int32 cast
    ({"label": "a", "points": [[1, 1], [6, 1], [2**40, 6]]}, "vertex far outside"),
])
def test_polygon_labels_that_used_to_escape_validation(annotation, message, image_root):
    doc = valid_polygon_json()
    doc["annotations"][0] = annotation
    path = image_root / "poly-regression.json"
    path.write_text(json.dumps(doc))
    problems = use_polygon_json(path, image_root)
    assert len(problems) == 1 and "poly-regression.json: annotations[0]" in problems[0] and message in problems[0], problems
