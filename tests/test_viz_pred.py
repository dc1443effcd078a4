"""Predictions you can look at: the class palette, palette PNGs and `seglab viz pred`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main
from seglab.config import load_config
from seglab.visualization.figures import _unique, class_palette
from tests.workflow_helpers import TASKS, constructed_run, task_data


def cielab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (D65) -> CIELAB, the textbook formulas."""
    c = rgb.astype(float) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def test_first_30_class_colours_are_far_apart():
    palette = class_palette(31)  # background + 30 classes (hand-bone has 29)
    lab = cielab(palette)
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=2)
    distance[np.eye(len(lab), dtype=bool)] = np.inf
    assert distance.min() > 30  # CIELAB units; ~2.3 is a just-noticeable difference
    ignore = cielab(np.array([[255, 255, 255], [170, 170, 170]]))  # white (ignored in panels), grey (ignored in outcome maps)
    assert np.linalg.norm(lab[1:, None] - ignore[None], axis=2).min() > 20
    assert len({tuple(c) for c in class_palette(200)}) == 200  # past the table: still one colour per class
    assert class_palette(5).tolist() == class_palette(40)[:5].tolist()  # a class keeps its colour


def test_no_double_extensions():
    used = set()
    assert _unique("gt_x.png", used) == "gt_x.png" and _unique("gt_x.PNG", used) == "gt_x_2.png"
    assert _unique("pred_a.jpg", used) == "pred_a.png"


@pytest.fixture(scope="module", params=TASKS)
def task_run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    config, overrides = task_data(request.param, root / "data")
    return request.param, constructed_run(root / "run", load_config(config, overrides))


def test_viz_pred_draws_every_task(task_run, tmp_path, capsys):
    task, run = task_run
    assert main(["viz", "pred", str(run), "--split", "val", "--device", "cpu", "--limit", "2", "--out", str(tmp_path / "val")]) == 0
    pictures = sorted(p.name for p in (tmp_path / "val").iterdir())
    if task == "classification":
        assert pictures == ["predictions.png"]
    else:
        assert len(pictures) == 2 and all(p.startswith("pred_") and p.count(".png") == 1 for p in pictures)
    image = np.asarray(Image.open(tmp_path / "val" / pictures[0]))
    assert image.shape[0] > 100 and image.std() > 0  # drawn, not blank
    assert f"to {tmp_path / 'val'}" in capsys.readouterr().out


def test_viz_pred_on_unlabelled_test_and_palette_pngs(tmp_path, capsys):
    config, overrides = task_data("multiclass", tmp_path / "data")
    run = constructed_run(tmp_path / "run", load_config(config, overrides))
    assert main(["viz", "pred", str(run), "--split", "test", "--device", "cpu"]) == 0
    assert len(list((run / "viz" / "pred_test").glob("pred_*.png"))) == 2

    assert main(["predict", str(run), "--device", "cpu", "--format", "png", "--out", str(tmp_path / "grey")]) == 0
    assert main(["predict", str(run), "--device", "cpu", "--format", "png", "--palette", "--out", str(tmp_path / "colour")]) == 0
    for grey in sorted((tmp_path / "grey").rglob("*.png")):
        coloured = Image.open(tmp_path / "colour" / grey.relative_to(tmp_path / "grey"))
        assert coloured.mode == "P"
        np.testing.assert_array_equal(np.asarray(coloured), np.asarray(Image.open(grey)))  # indices unchanged
        palette = np.asarray(coloured.getpalette()[:7 * 3]).reshape(7, 3)
        np.testing.assert_array_equal(palette, class_palette(7))
    capsys.readouterr()
    assert main(["predict", str(run), "--device", "cpu", "--palette", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--palette colours PNG class maps; add --format png" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
