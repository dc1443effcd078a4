from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from seglab.visualization import class_maps
from seglab.visualization import figures as viz

NAMES = ["Background", "cat", "dog", "bird"]


def tiny_case():
    """8x8 image; GT: cat square, dog square, an ignored row; prediction gets half the dog wrong."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[1:3, 1:3] = 1
    gt[4:8, 4:8] = 2
    gt[0, :] = 255
    pred = gt.copy()
    pred[0, :] = 1          # predictions on ignored pixels are not errors
    pred[4:6, 4:8] = 1      # 8 dog pixels called cat
    return image, gt, pred


def has_color(img, color):
    return bool(np.all(img.reshape(-1, 3) == np.asarray(color, dtype=np.uint8), axis=1).any())


def test_palette_background_black_and_colours_distinct():
    pal = viz.class_palette(40)
    assert pal.shape == (40, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in pal}) == 40
    assert not any(tuple(c) in {viz.IGNORE_COLOR, viz.ERROR_COLOR} for c in pal)


def test_colorize_and_overlay_use_the_class_colour_where_the_class_is():
    image, gt, _ = tiny_case()
    pal = viz.class_palette(len(NAMES))
    col = viz.colorize(gt, pal, 255)
    assert (col[gt == 2] == pal[2]).all()
    assert (col[gt == 255] == viz.IGNORE_COLOR).all()
    ov = viz.overlay(image, gt, pal, 255, alpha=0.5)
    grey = image[gt == 2].astype(float) @ np.array([0.299, 0.587, 0.114])
    expected = np.round(0.5 * grey[:, None] + 0.5 * pal[2]).astype(np.uint8)
    assert np.abs(ov[gt == 2].astype(int) - expected).max() <= 1
    # the shown colour is the class's, whatever the photo's own hue (same brightness)
    red, green = np.zeros_like(image), np.zeros_like(image)
    red[..., 0], green[..., 1] = 200, int(round(200 * 0.299 / 0.587))
    assert np.abs(viz.overlay(red, gt, pal, 255).astype(int) - viz.overlay(green, gt, pal, 255)).max() <= 1


def test_error_mask_marks_exactly_the_wrong_non_ignored_pixels():
    image, gt, pred = tiny_case()
    wrong = viz.error_mask(gt, pred, 255)
    expected = np.zeros_like(wrong)
    expected[4:6, 4:8] = True
    assert (wrong == expected).all()
    emap = viz.error_map(image, gt, pred, 255)
    red = np.all(emap == viz.ERROR_COLOR, axis=-1)
    assert (red == expected).all()


def test_prediction_panel_size_and_legend_lists_present_classes_only():
    image, gt, pred = tiny_case()
    assert viz.present_classes(gt, pred, len(NAMES), 255) == [0, 1, 2]
    pal = viz.class_palette(len(NAMES))
    panel = viz.prediction_panel(image, gt, pred, NAMES, 255, title="x")
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    assert panel.shape[1] == 4 * 300 + 5 * 8 and 300 < panel.shape[0] < 450
    # The legend swatches carry the exact palette colour; 'bird' is in neither mask.
    assert has_color(panel, pal[1]) and has_color(panel, pal[2])
    assert not has_color(panel, pal[3])


def test_class_outcomes_and_per_class_panel():
    _, gt, pred = tiny_case()
    codes = viz.class_outcomes(gt, pred, 1, 255)
    assert (codes[1:3, 1:3] == viz.TP).all()
    assert (codes[4:6, 4:8] == viz.FP).all()
    assert (codes[0] == viz.IGNORED).all()
    dog = viz.class_outcomes(gt, pred, 2, 255)
    assert (dog[4:6, 4:8] == viz.FN).all() and (dog[6:8, 4:8] == viz.TP).all()
    three = viz.per_class_panel(gt, pred, NAMES, 255)
    one = viz.per_class_panel(np.zeros_like(gt), np.zeros_like(gt), NAMES, 255)
    assert three.dtype == np.uint8 and three.shape[1] > one.shape[1]
    assert has_color(three, viz.OUTCOME_COLORS[viz.FN])


def test_summary_figures_render():
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 3]])
    img = viz.confusion_matrix_figure(cm, ["a", "b", "c"])
    assert img.dtype == np.uint8 and img.shape[2] == 3
    with pytest.raises(ValueError):
        viz.confusion_matrix_figure(cm, ["a", "b", "c"], normalize="rows")
    bars = viz.per_class_bars({"a": 0.5, "b": None, "c": float("nan")})
    assert bars.shape[0] > 100
    curves = viz.learning_curves([{"epoch": 0, "train_loss": 1.0, "val_loss": 1.1, "mIoU": 0.2},
                                  {"epoch": 1, "train_loss": 0.7, "val_loss": None, "mIoU": 0.3}])
    assert curves.shape == viz.learning_curves([]).shape


def test_per_image_class_iou_counts():
    gt = torch.tensor([[[0, 0], [1, 255]], [[2, 2], [2, 2]]])
    pred = torch.tensor([[[0, 1], [1, 2]], [[2, 2], [0, 0]]])
    inter, union = class_maps.per_image_class_iou(gt, pred, 3, 255)
    assert inter.tolist() == [[1, 1, 0], [0, 0, 2]]
    # Image 0: class 2 predicted only on an ignored pixel, so its union is 0 (absent).
    assert union.tolist() == [[2, 2, 0], [2, 0, 4]]


def test_worst_images_keeps_k_lowest_among_images_with_the_class():
    worst = class_maps.WorstImages(num_classes=3, k=2)
    # class 1 IoUs: a=.9, b=.2, c=absent, d=.5, e=.2 (tie with b: b seen first wins)
    inter = torch.tensor([[9, 9, 0], [9, 2, 0], [9, 0, 0], [9, 5, 1], [9, 2, 0]])
    union = torch.tensor([[10, 10, 0], [10, 10, 0], [10, 0, 0], [10, 10, 4], [10, 10, 0]])
    worst.update(["a", "b", "c"], inter[:3], union[:3])
    worst.update(["d", "e"], inter[3:], union[3:])
    assert worst.worst(1) == [(0.2, "b"), (0.2, "e")]
    assert worst.worst(2) == [(0.25, "d")]          # only d has class 2
    assert [i for _, i in worst.worst(0)] == ["a", "b"]  # all tie at .9: first seen kept
    assert worst.held_ids() == {"a", "b", "d", "e"}
    worst.update(["f"], torch.tensor([[0, 0, 0]]), torch.tensor([[10, 10, 0]]))
    assert worst.worst(0)[0] == (0.0, "f") and len(worst.worst(0)) == 2
    assert worst.worst(1) == [(0.0, "f"), (0.2, "b")]


def test_safe_filename():
    assert viz.safe_filename("batch_01_vt/002.jpg") == "batch_01_vt_002.jpg"
    assert viz.safe_filename("../../etc") == "etc"
    assert "/" not in viz.safe_filename("a/b c\\d")


class FakeTB:
    def __init__(self):
        self.calls = []
        self.experiment = self

    def add_image(self, tag, img, step, dataformats):
        self.calls.append((tag, img.shape, step, dataformats))


class WandbLogger:  # matched by class name, like the real one
    def __init__(self):
        self.keys = []

    def log_image(self, key, images, step):
        self.keys.append(key)


def run_validation(cb, trainer, module, batches):
    cb.on_validation_epoch_start(trainer, module)
    for i, (ids, gt, pred) in enumerate(batches):
        image = torch.full((len(ids), 3) + gt.shape[1:], 128, dtype=torch.uint8)
        batch = {"image": image, "target": gt, "id": ids}
        cb.on_validation_batch_end(trainer, module, {"pred": pred}, batch, i)
        assert len(cb._crops) <= len(NAMES) * cb.worst_k
    cb.on_validation_epoch_end(trainer, module)
    cb.on_validation_end(trainer, module)


def make_batches(order):
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    gt[:, 2:6, 2:6] = 1
    pred = gt.clone()
    pred[1, 2:4, 2:6] = 2   # second image of each batch gets cat half wrong
    ids = [["set/a.jpg", "set/b.jpg"], ["set/c.jpg", "set/d.jpg"]]
    return [(ids[j], gt, pred) for j in order]


def test_callback_writes_expected_files_and_logs(tmp_path):
    tb, wb = FakeTB(), WandbLogger()
    trainer = SimpleNamespace(loggers=[tb, wb], current_epoch=0, global_step=10,
                              sanity_checking=True, is_global_zero=True)
    module = SimpleNamespace()
    cb = class_maps.ValidationVisualizer(tmp_path, NAMES, 255, every_n_epochs=2, num_samples=3, worst_k=1)
    run_validation(cb, trainer, module, make_batches([0, 1]))
    assert not (tmp_path / "viz").exists() and not tb.calls   # sanity check skipped
    trainer.sanity_checking = False
    run_validation(cb, trainer, module, make_batches([0, 1]))
    assert not (tmp_path / "viz").exists()                     # epoch 0 not an every-2nd epoch

    trainer.current_epoch, trainer.global_step = 1, 20
    module.last_val_result = {"confusion_matrix": torch.eye(4, dtype=torch.long),
                              "per_class_iou": {n: 0.5 for n in NAMES}}
    run_validation(cb, trainer, module, make_batches([0, 1]))
    out = tmp_path / "viz" / "epoch_001"
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(
        [f"sample_set_{x}.png" for x in "abc"] + [f"per_class_set_{x}.png" for x in "abc"]
        + ["worst_Background_1.png", "worst_cat_1.png", "worst_dog_1.png",
           "confusion_matrix.png", "per_class_iou.png"])
    assert cb._sample_ids == ["set/a.jpg", "set/b.jpg", "set/c.jpg"]
    assert mpimg.imread(out / "worst_cat_1.png").shape[1] > 1240  # 4 tiles + the class's TP/FP/FN map
    tags = {c[0] for c in tb.calls}
    assert "val_worst/cat/1" in tags and "val/confusion_matrix" in tags
    assert all(c[2] == 20 and c[3] == "HWC" and c[1][2] == 3 for c in tb.calls)
    assert set(wb.keys) == tags

    trainer.current_epoch = 3
    del module.last_val_result
    run_validation(cb, trainer, module, make_batches([1, 0]))  # new order, same samples
    names = {p.name for p in (tmp_path / "viz" / "epoch_003").iterdir()}
    assert "confusion_matrix.png" not in names
    assert {n for n in names if n.startswith("sample_")} == {f"sample_set_{x}.png" for x in "abc"}


def test_callback_only_rank_zero_writes(tmp_path):
    trainer = SimpleNamespace(loggers=[], current_epoch=0, global_step=1,
                              sanity_checking=False, is_global_zero=False)
    cb = class_maps.ValidationVisualizer(tmp_path, NAMES, 255)
    run_validation(cb, trainer, SimpleNamespace(), make_batches([0]))
    assert not (tmp_path / "viz").exists()


def test_draw_ground_truth_unique_names_and_limit(tmp_path):
    _, gt, _ = tiny_case()
    img = np.zeros((8, 8, 3), np.uint8)
    samples = [("a/b.jpg", img, gt), ("a_b.jpg", img, gt), ("c.jpg", img, gt)]
    paths = viz.draw_ground_truth(iter(samples), tmp_path, NAMES, 255, limit=2)
    assert [p.name for p in paths] == ["gt_a_b.png", "gt_a_b_2.png"]
    assert all(p.is_file() for p in paths)


def test_multiclass_task_builds_the_callback_from_the_logging_config(tmp_path):
    from lightning.pytorch.callbacks import Callback

    from seglab.config import config_from_dict
    from seglab.task import get_task
    from seglab.data.labels import LabelSpec

    cfg = config_from_dict({"logging": {"viz_every_n_epochs": 3, "viz_samples": 2, "viz_worst_k": 5}})
    labels = LabelSpec(tuple(NAMES), 7, {})
    cb = get_task("multiclass").visualizer(cfg, labels, tmp_path)
    assert isinstance(cb, class_maps.ValidationVisualizer) and isinstance(cb, Callback)
    assert (cb.class_names, cb.ignore_index, cb.every_n_epochs, cb.num_samples, cb.worst_k) == (NAMES, 7, 3, 2, 5)
    assert cb.run_dir == tmp_path and tuple(cb.mean) == tuple(cfg.augment.mean)
