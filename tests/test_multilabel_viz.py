"""Multi-label validation panels: per-class TP/FP/FN, outlines, worst images per class by
Dice, per-class Dice and area figures, in files, loggers and the report."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seglab.visualization import binary_masks as bm
from seglab.visualization.figures import FN, FP, TN, TP
from tests.workflow_helpers import finish, seglab_process, task_data

NAMES = ["disc", "square", "bar"]


def test_outcomes_boundary_and_outline_colours():
    gt = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0]], bool)
    assert bm.binary_outcomes(gt, pred).tolist() == [[TP, FN, FP, TN]]
    square = np.zeros((5, 5), bool)
    square[1:4, 1:4] = True
    ring = square.copy()
    ring[2, 2] = False
    assert (bm.boundary(square) == ring).all()
    image = np.zeros((5, 5, 3), np.uint8)
    palette = bm.class_palette_no_background(2)
    out = bm.outline_overlay(image, np.stack([square, np.zeros_like(square)]), palette)
    assert (out[ring] == palette[0]).all() and (out[~ring] == 0).all()


def test_area_ratio_and_panels_render():
    img = bm.area_ratio_figure([10, 0, 30], [10, 5, 0], NAMES)
    assert img.ndim == 3 and img.shape[2] == 3
    gt = np.zeros((3, 16, 16), bool)
    gt[0, 2:8, 2:8] = gt[1, 4:12, 4:12] = True
    image = np.full((16, 16, 3), 100, np.uint8)
    assert bm.per_class_mask_panel(image, gt, gt, NAMES).shape[2] == 3
    assert bm.outline_panel(image, gt, gt, NAMES, bm.class_palette_no_background(3)).shape[2] == 3


class FakeTB:
    def __init__(self):
        self.tags = []
        self.experiment = self

    def add_image(self, tag, img, step, dataformats):
        self.tags.append(tag)


def batches():
    """Two batches of two 16 px images; every class predicted right except `square` on image c."""
    out = []
    for ids in (["a", "b"], ["c", "d"]):
        gt = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
        gt[:, 0, 2:8, 2:8] = True       # disc
        gt[:, 1, 5:13, 5:13] = True     # square, overlapping the disc
        gt[:, 2, 12:15, :] = True       # bar
        pred = gt.clone()
        if ids[0] == "c":
            pred[0, 1] = False          # the deliberately wrong class: square missed on c
            pred[0, 1, 0:3, 0:3] = True
        else:
            pred[1, 1, 5:7, 5:13] = False  # a small miss on b
        out.append((ids, gt, pred))
    return out


def run_validation(cb, trainer, module):
    cb.on_validation_epoch_start(trainer, module)
    for i, (ids, gt, pred) in enumerate(batches()):
        batch = {"image": torch.full((2, 3, 16, 16), 128, dtype=torch.uint8), "target": gt, "id": ids}
        cb.on_validation_batch_end(trainer, module, {"pred": pred}, batch, i)
    cb.on_validation_end(trainer, module)


def test_a_wrong_class_heads_its_worst_list_and_every_figure_is_written(tmp_path):
    tb = FakeTB()
    trainer = SimpleNamespace(loggers=[tb], current_epoch=0, global_step=5, sanity_checking=False, is_global_zero=True)
    module = SimpleNamespace(last_val_result={"per_class_dice": {n: 0.9 for n in NAMES}})
    cb = bm.BinaryMaskVisualizer(tmp_path, NAMES, every_n_epochs=1, num_samples=2, worst_k=2)
    run_validation(cb, trainer, module)
    out = tmp_path / "viz" / "epoch_000"
    record = json.loads((out / bm.SECTIONS_FILE).read_text())
    worst_square = record["worst"]["square"]
    assert worst_square[0]["id"] == "c" and worst_square[0]["dice"] < 0.01
    assert worst_square[1]["id"] == "b" and 0.5 < worst_square[1]["dice"] < 1
    assert all(entry["dice"] == pytest.approx(1.0) for entry in record["worst"]["disc"])
    files = {p.name for p in out.glob("*.png")}
    assert {"sample_a.png", "per_class_a.png", "sample_b.png", "worst_square_1.png", "worst_square_2.png",
            "per_class_dice.png", "area_ratio.png"} <= files
    listed = {n for names in record["sections"].values() for n in names}
    assert listed == files
    assert {"val_worst/square/1", "val/per_class_dice", "val/area_ratio", "val_per_class/a"} <= set(tb.tags)
    assert cb._areas.sum() == 0  # reset after drawing
    trainer.is_global_zero = False
    trainer.current_epoch = 1
    run_validation(cb, trainer, module)
    assert not (tmp_path / "viz" / "epoch_001").exists()


def test_area_sums_count_predicted_and_true_pixels(tmp_path):
    trainer = SimpleNamespace(loggers=[], current_epoch=0, global_step=0, sanity_checking=False, is_global_zero=True)
    cb = bm.BinaryMaskVisualizer(tmp_path, NAMES)
    cb.on_validation_epoch_start(trainer, None)
    for i, (ids, gt, pred) in enumerate(batches()):
        batch = {"image": torch.zeros((2, 3, 16, 16), dtype=torch.uint8), "target": gt, "id": ids}
        cb.on_validation_batch_end(trainer, None, {"pred": pred}, batch, i)
    true = [4 * 36, 4 * 64, 4 * 48]
    predicted = [4 * 36, 4 * 64 - 64 + 9 - 16, 4 * 48]  # square: c lost 64 and gained 9, b lost 16
    assert cb._areas.tolist() == [predicted, true]


def test_a_multilabel_run_writes_panels_and_the_report_shows_them(tmp_path):
    """The built-in polygon example, one epoch: PNGs under RUN/viz, report sections."""
    from seglab.cli import main

    config, overrides = task_data("multilabel", tmp_path / "data")
    run = tmp_path / "run"
    finish(seglab_process("train", str(config), *overrides, "logging.viz_every_n_epochs=1", "trainer.max_epochs=1",
                          "logging.loggers=[]", "trainer.progress_bar=false", "schedule.warmup_epochs=0",
                          f"data.cache_dir={tmp_path / 'cache'}", "--out", str(run)))
    out = run / "viz" / "epoch_000"
    names = {p.name for p in out.glob("*.png")}
    assert "per_class_dice.png" in names and "area_ratio.png" in names
    assert any(n.startswith("worst_") for n in names) and any(n.startswith("per_class_") for n in names)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(run)]) == 0
    page = (run / "report" / "index.html").read_text()
    assert "Over/under-segmentation per class" in page and "area_ratio.png" in page
    assert "Worst images per class" in page


def test_samples_are_kept_small_with_their_full_size_dice(tmp_path):
    trainer = SimpleNamespace(loggers=[], current_epoch=0, global_step=0, sanity_checking=False, is_global_zero=True)
    cb = bm.BinaryMaskVisualizer(tmp_path, NAMES, num_samples=1)
    gt = torch.zeros(1, 3, 1000, 1000, dtype=torch.bool)
    gt[0, 0, :500] = True
    pred = gt.clone()
    pred[0, 0, :250] = False                       # Dice of disc: 2 * 250k / (500k + 250k) = 2/3
    batch = {"image": torch.zeros((1, 3, 1000, 1000), dtype=torch.uint8), "target": gt, "id": ["big"]}
    cb.on_validation_epoch_start(trainer, None)
    cb.on_validation_batch_end(trainer, None, {"pred": pred}, batch, 0)
    image, g, p, dice = cb._samples["big"]
    assert max(image.shape[:2]) <= 500 and g.shape[0] == 3 and g.shape[1:] == image.shape[:2]
    assert dice[0] == pytest.approx(2 / 3, abs=1e-6) and dice[1] == pytest.approx(1.0)
