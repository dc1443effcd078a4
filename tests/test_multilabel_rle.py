"""Competition-B submission format: RLE encode/decode and the image_name,class,rle CSV."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from seglab.kinds import target_kind
from seglab.cli import main
from seglab.errors import DataError
from seglab.inference.predict import Prediction
from seglab.submission import WRITERS, WriteContext
from seglab.submission.rle import decode_rle, encode_rle, iter_rle_csv, read_rle_csv, write_rle_csv


def test_hand_worked_rle():
    mask = np.array([[0, 1, 1, 0],
                     [0, 0, 0, 1],
                     [1, 1, 0, 0]], dtype=bool)
    # row-major: ones at 0-based 1, 2 and 7, 8, 9 -> 1-based starts 2 (length 2) and 8 (length 3)
    assert encode_rle(mask) == "2 2 8 3"
    assert (decode_rle("2 2 8 3", (3, 4)) == mask).all()


def test_edge_cases():
    assert encode_rle(np.zeros((2, 3), bool)) == ""
    assert (decode_rle("", (2, 3)) == 0).all()
    assert encode_rle(np.ones((2, 3), bool)) == "1 6"
    corner = np.zeros((2, 3), bool)
    corner[-1, -1] = True
    assert encode_rle(corner) == "6 1"


@settings(max_examples=200, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_round_trip(mask):
    rle = encode_rle(mask)
    assert (decode_rle(rle, mask.shape) == mask).all()
    values = [int(v) for v in rle.split()]
    starts, lengths = values[0::2], values[1::2]
    assert all(s >= 1 for s in starts) and all(n >= 1 for n in lengths)
    assert sum(lengths) == int(mask.sum())
    # runs are separated by at least one 0 pixel, so they never touch
    assert all(s2 > s1 + n1 for s1, n1, s2 in zip(starts, lengths, starts[1:]))


@pytest.mark.parametrize("rle, message", [
    ("1", "odd number"),
    ("1 x", "non-integer"),
    ("0 2", "starts must be >= 1"),
    ("5 3", "beyond the 2x3 image"),
    ("3 2 1 1", "not sorted or overlap"),
])
def test_malformed_rle_is_an_error(rle, message):
    with pytest.raises(DataError, match=message):
        decode_rle(rle, (2, 3))


def _predictions(pairs):
    """Writer input: Predictions (the writer reads the id and the decided output)."""
    return iter(Prediction(sample_id, Path(sample_id), torch.zeros(0), output) for sample_id, output in pairs)


def test_writer_rows_per_image_and_class_and_reader(tmp_path):
    classes = ["finger-1", "Radius", "Ulna"]
    rng = np.random.default_rng(0)
    preds = [("ID001/a_L.png", rng.random((3, 5, 7)) > 0.5), ("ID001/a_R.png", rng.random((3, 5, 7)) > 0.7)]
    out = tmp_path / "sub.csv"
    assert WRITERS.get("rle") is write_rle_csv
    assert write_rle_csv(_predictions(preds), out, WriteContext(classes, None, "test", target_kind("binary_masks"))) == 2
    lines = out.read_text().splitlines()
    assert lines[0] == "image_name,class,rle"
    assert [line.split(",")[:2] for line in lines[1:]] == [[n, c] for n in ("a_L.png", "a_R.png") for c in classes]
    back = read_rle_csv(out, (5, 7), classes)
    for image_id, mask in preds:
        assert (back[image_id.split("/")[1]] == mask).all()


def test_class_map_predictions_skip_background(tmp_path):
    class_map = np.array([[0, 1], [2, 2]], np.uint8)
    out = tmp_path / "sub.csv"
    write_rle_csv(_predictions([("x.png", class_map)]), out, WriteContext(["Background", "a", "b"], None, "test", target_kind("class_map")))
    assert out.read_text().splitlines()[1:] == ["x.png,a,2 1", "x.png,b,3 2"]


def test_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,class,rle\n")
    with pytest.raises(DataError, match="header"):
        list(iter_rle_csv(bad, (2, 2)))
    bad.write_text("image_name,class,rle\nx.png,a,1 1\nx.png,a,2 1\n")
    with pytest.raises(DataError, match="line 3: second row"):
        list(iter_rle_csv(bad, (2, 2)))


def test_rle_decode_cli_writes_one_png_per_row(tmp_path):
    import cv2

    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    csv_path = tmp_path / "sub.csv"
    csv_path.write_text(f"image_name,class,rle\nimg_L.png,finger-1,{encode_rle(mask)}\nimg_L.png,Ulna,\n")
    assert main(["data", "rle-decode", str(csv_path), "--out", str(tmp_path / "masks"), "--size", "4", "6"]) == 0
    png = cv2.imread(str(tmp_path / "masks" / "img_L" / "finger-1.png"), cv2.IMREAD_UNCHANGED)
    assert (png > 0).tolist() == mask.tolist()
    assert cv2.imread(str(tmp_path / "masks" / "img_L" / "Ulna.png"), cv2.IMREAD_UNCHANGED).max() == 0
