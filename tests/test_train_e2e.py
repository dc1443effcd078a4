"""End to end on the built-in example data: train, resume, evaluate, predict."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import load_config
from seglab.errors import SeglabError
from seglab.core.training import train
from seglab.inference.ensemble import resolve_members
from seglab.inference.predict import evaluate
from seglab.submission.segmentation import read_coco_csv
from tests.workflow_helpers import TEST_ENCODER

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(synth_root, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={synth_root}", "data.batch_size=4", f"model.encoder={TEST_ENCODER}",
        "trainer.max_epochs=2", "trainer.progress_bar=false", "logging.viz_every_n_epochs=1",
        "logging.loggers=[]", "optim.lr=0.003", "schedule.warmup_epochs=0", *extra,
    ])


def evaluate_run(run: Path, split: str = "val", **kwargs) -> dict:
    """`seglab evaluate RUN` as a function: the run as an ensemble of one, on the CPU."""
    members, _ = resolve_members([str(run)], device="cpu")
    scores, _ = evaluate(members, split, **kwargs)
    return scores


@pytest.fixture(scope="module")
def trained_run(synth_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "r"
    torch.manual_seed(0)
    best = train(tiny_config(synth_root, "logging.loggers=[tensorboard]"), run)
    return run, best


def test_train_writes_the_run_folder_contract(trained_run):
    run, best = trained_run
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == best
    for key in ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["per_class_iou"]) == {"Background", "disc", "square", "triangle", "ring", "bar", "star"}
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    # the loss falls over training
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    labels = json.loads((run / "labels.json").read_text())
    assert labels["source_to_class"] == {str(i): i + 1 for i in range(6)}
    # validation pictures every epoch (logging.viz_every_n_epochs=1)
    for epoch in ("epoch_000", "epoch_001"):
        assert list((run / "viz" / epoch).glob("*.png")), f"no validation pictures for {epoch}"


def test_evaluate_reproduces_the_best_validation(trained_run):
    run, best = trained_run
    scores = evaluate_run(run, "val")
    assert scores["mIoU"] == pytest.approx(best["mIoU"], abs=1e-6)
    assert scores["images"] == 6 and scores["split"] == "val"
    assert list(scores["per_class_iou"]) == list(best["per_class_iou"])
    for name, value in best["per_class_iou"].items():  # null in metrics.json: a class absent from both
        got = scores["per_class_iou"][name]
        if value is None:
            assert got is None or np.isnan(got), name
        else:
            assert got == pytest.approx(value, abs=1e-6), name


def test_predict_csv_shape_and_order(trained_run, synth_root, tmp_path, capsys):
    run, _ = trained_run
    out = tmp_path / "sub.csv"
    assert main(["predict", str(run), "--split", "test", "--out", str(out)]) == 0
    test_json = json.loads((synth_root / "test.json").read_text())
    rows = read_coco_csv(out, size=(128, 128))
    assert list(rows) == [img["file_name"] for img in test_json["images"]]
    assert all(r.shape == (128, 128) and r.max() < 7 for r in rows.values())


def test_predict_png_folder_at_original_size(trained_run, synth_root, tmp_path):
    import cv2

    run, _ = trained_run
    out = tmp_path / "png"
    assert main(["predict", str(run), "--format", "png", "--out", str(out)]) == 0
    test_json = json.loads((synth_root / "test.json").read_text())
    for img in test_json["images"]:
        png = cv2.imread(str(out / Path(img["file_name"]).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        assert png is not None and png.shape == (img["height"], img["width"]) and png.dtype == np.uint8


def test_resume_continues_from_last_checkpoint(synth_root, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(synth_root, "trainer.max_epochs=1"), run)
    assert len((run / "history.jsonl").read_text().splitlines()) == 1
    # a second train into the same folder without --resume refuses, so nothing is lost
    with pytest.raises(SeglabError, match="already holds a trained run"):
        train(tiny_config(synth_root), run)
    assert main(["train", "--resume", str(run), "trainer.max_epochs=2"]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1
    # the resumed run remembers its best: best.ckpt holds the epoch metrics.json reports
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == json.loads((run / "metrics.json").read_text())["epoch"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {bach_size: 2}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.bach_size: unknown key; did you mean 'batch_size'?" in err


def test_missing_image_stops_before_training(synth_root, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    doc = json.loads((data / "train.json").read_text())
    (data / doc["images"][2]["file_name"]).unlink()
    with pytest.raises(SeglabError) as e:
        train(tiny_config(data), tmp_path / "r")
    assert f"train.json: image 2 ({doc['images'][2]['file_name']!r}): image file not found" in str(e.value)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_overrides_may_follow_options(tmp_path, monkeypatch):
    """The README's form `seglab train CFG --out RUN key=value` reaches the config."""
    import seglab.core.training

    seen = {}
    monkeypatch.setattr(seglab.core.training, "train", lambda cfg, run_dir, resume=False, **_: seen.update(cfg=cfg, run=run_dir) or {})
    cfg = ROOT / "configs" / "demo.yaml"
    assert main(["train", str(cfg), "--out", str(tmp_path / "r"), "optim.lr=0.5", "data.batch_size=2"]) == 0
    assert seen["cfg"].optim.lr == 0.5 and seen["cfg"].data.batch_size == 2
    assert Path(seen["run"]) == tmp_path / "r"
    with pytest.raises(SystemExit):
        main(["train", str(cfg), "--out", str(tmp_path / "r"), "--bogus"])


def test_a_run_with_auto_class_weights_loads_for_inference(synth_root, tmp_path):
    run = tmp_path / "auto"
    train(tiny_config(synth_root, "trainer.max_epochs=1", "loss=[{name: ce, class_weights: auto}]", "logging.viz_every_n_epochs=0"), run)
    scores = evaluate_run(run, "val")
    assert 0.0 <= scores["mIoU"] <= 1.0
