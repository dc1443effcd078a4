"""k-fold end to end on the tiny synthetic set: fold runs, OOF = the metric over the
concatenated validation predictions, resume after a kill, a k-fold folder as an ensemble."""

import json

import numpy as np
import pytest
import torch

import seglab.training
from seglab.cli import main
from seglab.config import to_yaml
from seglab.data import build_dataset
from seglab.errors import SeglabError
from seglab.inference import load_run, predict_probs
from seglab.kfold import run_kfold
from seglab.metrics.confusion import SegmentationConfusion as ConfusionMatrix
from tests.workflow_helpers import tiny_config


@pytest.fixture(scope="module")
def kfold_out(synth_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("kfold")
    config = base / "tiny.yaml"
    config.write_text(to_yaml(tiny_config(synth_root)))
    out = base / "out"
    assert main(["kfold", str(config), "trainer.max_epochs=1", "--folds", "3", "--out", str(out)]) == 0
    return out


def test_kfold_writes_fold_runs_and_the_summary(kfold_out, synth_root):
    summary = json.loads((kfold_out / "kfold.json").read_text())
    assert summary["folds"] == 3 and summary["strategy"] == "stratified"
    train_ids = [im["file_name"] for im in json.loads((synth_root / "train.json").read_text())["images"]]
    assignment = json.loads((kfold_out / "folds" / "folds.json").read_text())["assignment"]
    assert sorted(assignment) == sorted(train_ids)
    assert [r["n_val"] for r in summary["per_fold"]] == [list(assignment.values()).count(k) for k in range(3)]
    for k in range(3):
        run = kfold_out / f"fold_{k}"
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "metrics.json").is_file()
        cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
        assert cfg["data"]["val"].endswith(f"fold_{k}/val.json")
    metrics = json.loads((kfold_out / "metrics.json").read_text())
    assert metrics["mIoU"] == summary["oof"]["mIoU"]


def test_oof_equals_the_metric_over_the_concatenated_validation_predictions(kfold_out):
    summary = json.loads((kfold_out / "kfold.json").read_text())
    preds, masks = [], []
    for k in range(3):
        cfg, labels, module = load_run(kfold_out / f"fold_{k}")
        val = build_dataset(cfg, "val", labels, train=False, with_masks=True)
        with torch.no_grad():
            for i in range(len(val)):
                item = val[i]
                preds.append(predict_probs(module, item["image"][None]).argmax(1)[0])
                masks.append(item["mask"].long())
    assert len(preds) == 12  # every training image predicted once, by the fold that did not train on it
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index)
    cm.update(torch.cat([p.flatten() for p in preds]), torch.cat([m.flatten() for m in masks]))
    assert cm.mat.tolist() == summary["oof"]["confusion_matrix"]
    scores = cm.compute(list(labels.classes))
    assert scores["mIoU"] == pytest.approx(summary["oof"]["mIoU"], abs=1e-12)
    assert scores["per_class_iou"] == summary["oof"]["per_class_iou"]
    # and it is not the mean of the fold scores
    assert summary["fold_mIoU_mean"] == pytest.approx(np.mean([r["mIoU"] for r in summary["per_fold"]]))


def test_a_kfold_folder_is_an_ensemble_member(kfold_out, synth_root, tmp_path, capsys):
    capsys.readouterr()
    assert main(["ensemble", str(kfold_out), "--split", "val"]) == 0
    scores = json.loads(capsys.readouterr().out)
    # read from the base config's val.json (not a fold's), averaged over the three folds
    assert scores["images"] == 6 and len(scores["members"]) == 3
    assert scores["weights"] == pytest.approx([1 / 3] * 3)
    out = tmp_path / "sub.csv"
    assert main(["ensemble", str(kfold_out), "--split", "test", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + 4


def test_existing_kfold_folder_is_not_overwritten(kfold_out, synth_root):
    with pytest.raises(SeglabError, match="already holds a k-fold"):
        run_kfold(tiny_config(synth_root), kfold_out)


def test_killed_kfold_resumes_at_the_fold_it_stopped_in(synth_root, tmp_path, monkeypatch):
    real_train = seglab.training.train
    calls = []

    def killed_in_fold_1(cfg, run_dir, resume=False):
        calls.append((run_dir.name, resume))
        if run_dir.name == "fold_1" and not resume:
            # one epoch of two, then the process dies: last.ckpt and config.yaml (2 epochs) stay
            real_train(cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"max_epochs": 1})}), run_dir)
            (run_dir / "config.yaml").write_text(to_yaml(cfg))
            raise KeyboardInterrupt
        return real_train(cfg, run_dir, resume)

    monkeypatch.setattr(seglab.training, "train", killed_in_fold_1)
    cfg = tiny_config(synth_root, "trainer.max_epochs=2", "kfold.folds=2")
    out = tmp_path / "kf"
    with pytest.raises(KeyboardInterrupt):
        run_kfold(cfg, out)
    assert calls == [("fold_0", False), ("fold_1", False)]
    assert not (out / "kfold.json").exists()

    calls.clear()
    assert main(["kfold", "--resume", str(out)]) == 0
    assert calls == [("fold_1", True)]  # fold 0 is finished and skipped; fold 1 continues
    history = [json.loads(line)["epoch"] for line in (out / "fold_1" / "history.jsonl").read_text().splitlines()]
    assert history == [0, 1]
    assert torch.load(out / "fold_1" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    summary = json.loads((out / "kfold.json").read_text())
    assert [r["fold"] for r in summary["per_fold"]] == [0, 1]
    assert sum(r["n_val"] for r in summary["per_fold"]) == 12
