"""End to end on the built-in mask-status data: train (ArcFace head, mixup, UDA, weighted
sampler), resume, evaluate, predict info.csv / id,label / probabilities / pseudo-labels,
TTA and ensembles."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.classification.inference import evaluate, ensemble_predictions, predict, run_predictions
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from seglab.classification.training import train
from seglab.cli import main
from seglab.config import load_config
from seglab.errors import SeglabError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # 32-pixel images: intra-op threads only add contention on a shared CPU.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskdata")
    make_maskstatus_dataset(root, n_train=12, n_eval=2, size=32, seed=0)
    return root


def tiny_config(root, *extra):
    return load_config(ROOT / "configs" / "demo_cls.yaml", [
        f"data.root={root}", "data.image_size=[32,32]", "data.batch_size=16", "data.classification.n_splits=4",
        "trainer.max_epochs=2", "trainer.progress_bar=false", "logging.viz_every_n_epochs=1", "schedule.warmup_epochs=0", *extra,
    ])


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory):
    """One epoch with every training option on, then resumed from the CLI for a second."""
    run = tmp_path_factory.mktemp("clsrun") / "r"
    cfg = tiny_config(data_root, "trainer.max_epochs=1", "classification.head=arcface", "classification.arcface_scale=16",
                      "classification.mixup_alpha=0.4", "classification.cutmix_alpha=1.0", "data.classification.sampler=weighted",
                      "classification.uda.weight=1.0", "classification.uda.threshold=0.0", "classification.uda.batch_size=8",
                      "loss=[{name: ce, class_weights: auto, label_smoothing: 0.1}, {name: focal, weight: 0.5}]")
    train(cfg, run)
    assert len((run / "history.jsonl").read_text().splitlines()) == 1
    assert main(["train", "--resume", str(run), "trainer.max_epochs=2"]) == 0
    return run


def test_run_folder_contract(trained_run):
    run = trained_run
    for path in ("config.yaml", "labels.json", "metrics.json", "history.jsonl", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / path).is_file(), path
    assert list((run / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("macro_f1", "accuracy", "mean_class_accuracy", "mask_accuracy", "gender_accuracy", "age_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["monitor"] == "macro_f1" and len(metrics["per_class_f1"]) == 18
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    cm = np.array(history[-1]["confusion_matrix"])
    assert cm.shape == (18, 18) and cm.sum() == sum(history[-1]["support"].values())
    labels = json.loads((run / "labels.json").read_text())
    assert labels["task"] == "classification" and labels["classes"][17] == "not_worn/female/>=60"
    viz = run / "viz" / "epoch_001"
    assert (viz / "confusion_matrix.png").is_file() and (viz / "per_class_f1.png").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == history[-1]["step"]


def test_evaluate_reproduces_the_best_validation(trained_run):
    best = json.loads((trained_run / "metrics.json").read_text())
    scores = evaluate(trained_run, "val", tta=[])
    assert scores["macro_f1"] == pytest.approx(best["macro_f1"], abs=1e-9)
    assert scores["confusion_matrix"] == best["confusion_matrix"]


def test_predict_info_csv_one_row_per_test_image_in_order(trained_run, data_root, tmp_path):
    out = tmp_path / "info.csv"
    assert main(["predict", str(trained_run), "--out", str(out)]) == 0
    with open(data_root / "eval" / "info.csv") as f:
        expected = [r["ImageID"] for r in csv.DictReader(f)]
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["ImageID"] for r in rows] == expected and len(rows) == 14
    assert all(0 <= int(r["ans"]) < 18 for r in rows)
    # the same answers as the probabilities' argmax, with the run's hflip TTA
    probs = run_predictions(trained_run, "test").probs
    assert [int(r["ans"]) for r in rows] == probs.argmax(1).tolist()


def test_other_writers_and_tta(trained_run, tmp_path):
    n = predict(trained_run, "test", tmp_path / "sub.csv", "id_label")
    with open(tmp_path / "sub.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"] and len(rows) == n + 1 == 15
    predict(trained_run, "test", tmp_path / "p.csv", "probs")
    probs = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, usecols=range(1, 19))
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    plain, flipped = run_predictions(trained_run, "test", tta=[]), run_predictions(trained_run, "test", tta=["hflip"])
    assert not np.allclose(plain.probs, flipped.probs)


def test_pseudo_labels_round_trip(trained_run, data_root, tmp_path):
    out = tmp_path / "pseudo.csv"
    assert main(["predict", str(trained_run), "--format", "pseudo", "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["confidence"]) >= 0.9 for r in rows)
    out_all = tmp_path / "all.csv"
    cfg_path = trained_run / "config.yaml"
    backup = cfg_path.read_text()
    cfg_path.write_text(backup.replace("pseudo_threshold: 0.9", "pseudo_threshold: 0.0"))
    try:
        assert predict(trained_run, "test", out_all, "pseudo") == 14
    finally:
        cfg_path.write_text(backup)
    from seglab.classification.data import load_split, resolve_labels

    cfg = tiny_config(data_root, f"data.classification.pseudo_labels={out_all}")
    labels = resolve_labels(cfg)
    extra = load_split(cfg, "train", labels).samples[-14:]
    assert all(s.path.is_file() and s.path.parent.name == "images" for s in extra)


def test_ensemble_averages_probabilities(trained_run, data_root, tmp_path):
    one = run_predictions(trained_run, "test")
    two = ensemble_predictions([trained_run, trained_run], "test")
    assert np.allclose(one.probs, two.probs, atol=1e-6)
    other = tmp_path / "other"
    train(tiny_config(data_root, "trainer.max_epochs=1", "data.classification.fold=1", "logging.viz_every_n_epochs=0"), other)
    mixed = ensemble_predictions([trained_run, other], "test", tta=[])
    a, b = run_predictions(trained_run, "test", tta=[]), run_predictions(other, "test", tta=[])
    assert np.allclose(mixed.probs, (a.probs + b.probs) / 2, atol=1e-6)
    with pytest.raises(SeglabError, match="holds other images"):
        evaluate([trained_run, other], "val")
    out = tmp_path / "ens.csv"
    assert main(["predict", str(trained_run), "--ensemble", str(other), "--tta", "--out", str(out)]) == 0
    with open(out) as f:
        assert [int(r["ans"]) for r in csv.DictReader(f)] == mixed.probs.argmax(1).tolist()
