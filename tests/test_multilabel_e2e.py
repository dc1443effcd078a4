"""End to end on the built-in polygon example: train multilabel, evaluate, tune
thresholds, predict an RLE submission and decode it back."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import load_config
from seglab.data.synth.polygons import CLASSES, make_polygon_dataset
from seglab.inference import evaluate, iter_predictions
from seglab.submission.rle import read_rle_csv
from seglab.core.training import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def polygon_root(tmp_path_factory) -> Path:
    paths = make_polygon_dataset(tmp_path_factory.mktemp("poly"), n_train_ids=6, n_val_ids=2, n_test_ids=2, size=64, seed=0)
    return paths["root"]


def tiny_config(root, *extra):
    return load_config(ROOT / "configs" / "demo_multilabel.yaml", [
        f"data.root={root}", "data.batch_size=4", "trainer.max_epochs=2", "trainer.progress_bar=false",
        "optim.lr=0.003", "schedule.warmup_epochs=0", *extra,
    ])


@pytest.fixture(scope="module")
def trained(polygon_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("mlrun") / "r"
    torch.manual_seed(0)
    best = train(tiny_config(polygon_root), run)
    return run, best


def test_shipped_configs_are_multilabel_with_dice():
    for name, n in (("handbone.yaml", 29), ("demo_multilabel.yaml", 5)):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.task == "multilabel" and cfg.eval.monitor == "dice" and len(cfg.data.classes) == n
    bones = load_config(ROOT / "configs" / "handbone.yaml").data.classes
    assert bones[:2] == ["finger-1", "finger-2"] and bones[18] == "finger-19" and bones[19:] == [
        "Trapezium", "Trapezoid", "Capitate", "Hamate", "Scaphoid", "Lunate", "Triquetrum", "Pisiform", "Radius", "Ulna"]


def test_training_writes_dice_metrics(trained):
    run, best = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == best and metrics["monitor"] == "dice"
    assert set(metrics["per_class_dice"]) == set(CLASSES)
    assert 0.0 <= metrics["dice"] <= 1.0
    assert metrics["dice"] == pytest.approx(np.mean(list(metrics["per_class_dice"].values())))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1] and "per_class_dice" in history[0] and "confusion_matrix" not in history[0]
    assert json.loads((run / "labels.json").read_text())["task"] == "multilabel"
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_evaluate_reproduces_validation_then_thresholds_are_tuned_and_used(trained, capsys):
    run, best = trained
    scores = evaluate(run, "val")
    assert scores["dice"] == pytest.approx(best["dice"], abs=1e-9)
    assert scores["thresholds_from"] == "config"
    assert main(["tune-thresholds", str(run), "--grid", "0.1,0.3,0.5,0.7,0.9"]) == 0
    record = json.loads((run / "thresholds.json").read_text())
    assert set(record["thresholds"]) == set(CLASSES) and record["dice_before"] == pytest.approx(best["dice"], abs=1e-9)
    assert record["dice_after"] >= record["dice_before"] - 1e-12   # 0.5 is on the grid
    tuned = evaluate(run, "val")
    assert tuned["thresholds_from"].endswith("thresholds.json")
    assert tuned["thresholds"] == pytest.approx(record["thresholds"])
    assert tuned["dice"] == pytest.approx(record["dice_after"], abs=1e-9)
    # at the original size (no resize in this config) the scores agree
    assert evaluate(run, "val", original_size=True)["dice"] == pytest.approx(tuned["dice"], abs=1e-9)


def test_predict_rle_submission_round_trips(trained, polygon_root, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "sub.csv"
    assert main(["predict", str(run), "--split", "test", "--format", "rle", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    test_images = sorted((polygon_root.parent / "test" / "DCM").rglob("*.png"))
    assert lines[0] == "image_name,class,rle" and len(lines) == 1 + len(test_images) * len(CLASSES)
    assert [line.split(",")[1] for line in lines[1 : 1 + len(CLASSES)]] == list(CLASSES)
    decoded = read_rle_csv(out, (64, 64), CLASSES)
    for image_id, pred in iter_predictions(run, "test"):
        assert pred.shape == (len(CLASSES), 64, 64) and pred.dtype == bool
        assert (decoded[Path(image_id).name] == pred).all()
    assert main(["predict", str(run), "--format", "png", "--out", str(tmp_path / "png")]) == 2
    assert "a multilabel run needs --format rle" in capsys.readouterr().err
