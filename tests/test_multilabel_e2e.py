"""What is specific to the multilabel task end to end, on the built-in polygon example:
Dice metrics (no confusion matrix), tuned per-class thresholds (tune-thresholds ->
RUN/thresholds.json -> evaluate and predict), an RLE submission decoded back equal to the
prediction, and the per-class PNG folder.

The generic flow (SIGKILL + resume, every writer runs, ensembles, k-fold, pseudo-labels,
TTA, report, runs) is tests/test_tasks_e2e.py's, parametrised over the three tasks."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import config_from_dict, load_config
from seglab.core.run import THRESHOLDS_FILE, load_run
from seglab.core.training import train
from seglab.data.synth.polygons import CLASSES, make_polygon_dataset
from seglab.inference.ensemble import Member, resolve_members
from seglab.inference.predict import evaluate, predictions
from seglab.submission.rle import read_rle_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def polygon_root(tmp_path_factory) -> Path:
    paths = make_polygon_dataset(tmp_path_factory.mktemp("poly"), n_train_ids=6, n_val_ids=2, n_test_ids=2, size=64, seed=0)
    return paths["root"]


def tiny_config(root, *extra):
    return load_config(ROOT / "configs" / "demo_multilabel.yaml", [
        f"data.root={root}", "data.batch_size=4", "trainer.max_epochs=2", "trainer.progress_bar=false",
        "logging.loggers=[]", "logging.viz_every_n_epochs=0", "optim.lr=0.003", "schedule.warmup_epochs=0", *extra,
    ])


@pytest.fixture(scope="module")
def trained(polygon_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("mlrun") / "r"
    torch.manual_seed(0)
    best = train(tiny_config(polygon_root), run)
    return run, best


def evaluate_run(run: Path, split: str = "val", **kwargs) -> dict:
    members, _ = resolve_members([str(run)], device="cpu")
    scores, _ = evaluate(members, split, **kwargs)
    return scores


def test_shipped_configs_are_multilabel_with_dice():
    for name, n in (("handbone.yaml", 29), ("demo_multilabel.yaml", 5)):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.task == "multilabel" and cfg.eval.monitor == "dice" and len(cfg.data.classes) == n
        assert cfg.submission.format == "rle"
    bones = load_config(ROOT / "configs" / "handbone.yaml").data.classes
    assert bones[:2] == ["finger-1", "finger-2"] and bones[18] == "finger-19" and bones[19:] == [
        "Trapezium", "Trapezoid", "Capitate", "Hamate", "Scaphoid", "Lunate", "Triquetrum", "Pisiform", "Radius", "Ulna"]


def test_task_defaults_fill_loss_monitor_and_format():
    bare = config_from_dict({"task": "multilabel"})
    assert [s.name for s in bare.loss] == ["bce_dice"] and bare.eval.monitor == "dice" and bare.submission.format == "rle"


def test_training_writes_dice_metrics(trained):
    run, best = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == best and metrics["monitor"] == "dice"
    assert set(metrics["per_class_dice"]) == set(CLASSES)
    assert 0.0 <= metrics["dice"] <= 1.0
    assert metrics["dice"] == pytest.approx(np.mean(list(metrics["per_class_dice"].values())))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1] and "per_class_dice" in history[0] and "confusion_matrix" not in history[0]
    labels = json.loads((run / "labels.json").read_text())
    assert labels["target"] == "binary_masks" and labels["classes"] == list(CLASSES)  # no Background channel
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_evaluate_reproduces_validation_then_thresholds_are_tuned_and_used(trained, capsys):
    run, best = trained
    scores = evaluate_run(run, "val")
    assert scores["dice"] == pytest.approx(best["dice"], abs=1e-9)
    assert scores["thresholds_from"] == "config" and scores["thresholds"] == {c: 0.5 for c in CLASSES}
    assert main(["tune-thresholds", str(run), "--device", "cpu", "--grid", "0.1,0.3,0.5,0.7,0.9"]) == 0
    record = json.loads((run / THRESHOLDS_FILE).read_text())
    assert set(record["thresholds"]) == set(CLASSES) and record["dice_before"] == pytest.approx(best["dice"], abs=1e-9)
    assert set(record["thresholds"].values()) <= {0.1, 0.3, 0.5, 0.7, 0.9}
    assert record["dice_after"] >= record["dice_before"] - 1e-12   # 0.5 is on the grid
    tuned = evaluate_run(run, "val")
    assert tuned["thresholds_from"] == str(run / THRESHOLDS_FILE)
    assert tuned["thresholds"] == pytest.approx(record["thresholds"])
    assert tuned["dice"] == pytest.approx(record["dice_after"], abs=1e-9)
    # at the original size (no resize in this config) the scores agree
    assert evaluate_run(run, "val", original_size=True)["dice"] == pytest.approx(tuned["dice"], abs=1e-9)
    # the loaded run decides with the tuned thresholds unless told not to
    assert load_run(run, device="cpu").thresholds.tolist() == pytest.approx([record["thresholds"][c] for c in CLASSES])
    assert load_run(run, device="cpu", tuned_thresholds=False).thresholds.tolist() == pytest.approx([0.5] * len(CLASSES))


def test_predictions_use_the_tuned_thresholds(trained):
    run, _ = trained
    thresholds = {c: t for c, t in zip(CLASSES, (0.1, 0.3, 0.5, 0.7, 0.9))}
    (run / THRESHOLDS_FILE).write_text(json.dumps({"thresholds": thresholds}))
    try:
        member = Member(load_run(run, device="cpu"))
        vector = torch.tensor([thresholds[c] for c in CLASSES]).view(-1, 1, 1)
        count = 0
        for p in predictions([member], "test"):
            assert p.output.dtype == bool and p.output.shape == tuple(p.probs.shape)
            assert np.array_equal(p.output, (p.probs > vector).numpy())
            count += 1
        assert count == 4
    finally:
        (run / THRESHOLDS_FILE).unlink()


def test_predict_rle_submission_decodes_to_the_prediction(trained, polygon_root, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "sub.csv"
    assert main(["predict", str(run), "--device", "cpu", "--split", "test", "--format", "rle", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    test_images = sorted((polygon_root.parent / "test" / "DCM").rglob("*.png"))
    assert lines[0] == "image_name,class,rle" and len(lines) == 1 + len(test_images) * len(CLASSES)
    assert [line.split(",")[1] for line in lines[1 : 1 + len(CLASSES)]] == list(CLASSES)
    decoded = read_rle_csv(out, (64, 64), CLASSES)
    members, _ = resolve_members([str(run)], device="cpu")
    preds = list(predictions(members, "test"))
    assert sorted(Path(p.id).name for p in preds) == sorted(decoded) == sorted(p.name for p in test_images)
    assert any(p.output.any() for p in preds), "an all-empty prediction would make the round trip trivial"
    for p in preds:
        assert p.output.shape == (len(CLASSES), 64, 64) and p.output.dtype == bool
        assert np.array_equal(decoded[Path(p.id).name], p.output)

    # png: a folder per image, one 0/255 PNG per class, equal to the same prediction
    png = tmp_path / "png"
    assert main(["predict", str(run), "--device", "cpu", "--format", "png", "--out", str(png)]) == 0
    for p in preds:
        for c, name in enumerate(CLASSES):
            mask = cv2.imread(str(png / Path(p.id).with_suffix("") / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            assert mask is not None and np.array_equal(mask, p.output[c].astype(np.uint8) * 255), (p.id, name)
    # class-map formats are not multilabel formats
    assert main(["predict", str(run), "--device", "cpu", "--format", "coco_csv", "--out", str(tmp_path / "a.csv")]) == 2
    assert "--format coco_csv: not a multilabel format (use rle, png)" in capsys.readouterr().err
