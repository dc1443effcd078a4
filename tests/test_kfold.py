"""k-fold end to end on the tiny synthetic set: OUT/folds.csv, fold runs that validate on
their fold (data.folds/data.fold), OOF = the summed fold metric states, resume after a
kill, a k-fold folder as an ensemble."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml

import seglab.core.training
from seglab.cli import main
from seglab.config import load_config, to_yaml
from seglab.core.run import load_run
from seglab.data import build_dataset
from seglab.errors import SeglabError
from seglab.inference.ensemble import Member, resolve_members
from seglab.inference.predict import evaluate, predictions
from seglab.kfold import run_kfold
from tests.workflow_helpers import tiny_config

ATOL = 1e-4     # probabilities of one image alone vs in a batch differ by ~1e-5 at most
MARGIN = 1e-3   # decisions are compared only where the top two classes are further apart (> 2 ATOL)


@pytest.fixture(scope="module")
def kfold_out(synth_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("kfold")
    config = base / "tiny.yaml"
    config.write_text(to_yaml(tiny_config(synth_root)))
    out = base / "out"
    assert main(["kfold", str(config), "trainer.max_epochs=1", "--folds", "3", "--out", str(out), "--device", "cpu"]) == 0
    return out


def _folds_csv(out) -> dict[str, int]:
    with open(out / "folds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sample_id", "group", "fold", "stratum"]
    return {r["sample_id"]: int(r["fold"]) for r in rows}


def _ids(dataset) -> list[str]:
    return [dataset.source.sample_id(i) for i in range(len(dataset))]


def test_kfold_writes_the_folds_file_fold_runs_and_the_summary(kfold_out, synth_root):
    summary = json.loads((kfold_out / "kfold.json").read_text())
    assert summary["folds"] == 3 and summary["strategy"] == "stratified" and summary["task"] == "multiclass"
    assert summary["monitor"] == "mIoU" and summary["per_class_key"] == "per_class_iou"
    assert summary["metrics"] == ["mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU"]
    split = json.loads((kfold_out / "kfold_split.json").read_text())
    assert split["folds"] == 3 and split["samples"] == 12
    train_ids = [im["file_name"] for im in json.loads((synth_root / "train.json").read_text())["images"]]
    assignment = _folds_csv(kfold_out)
    assert sorted(assignment) == sorted(train_ids) and set(assignment.values()) == {0, 1, 2}
    counts = [list(assignment.values()).count(k) for k in range(3)]
    assert [r["fold"] for r in summary["per_fold"]] == [0, 1, 2]
    assert [r["n_val"] for r in summary["per_fold"]] == counts
    assert [r["n_train"] for r in summary["per_fold"]] == [12 - n for n in counts]
    for k in range(3):
        run = kfold_out / f"fold_{k}"
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "metrics.json").is_file()
        raw = yaml.safe_load((run / "config.yaml").read_text())["data"]
        assert raw["fold"] == k and raw["val"] is None
        assert raw["folds"] == str((kfold_out / "folds.csv").resolve())
        # the fold run validates on fold k of the training split and trains on the rest
        cfg = load_config(run / "config.yaml")
        labels = load_run(run, device="cpu").labels
        val = _ids(build_dataset(cfg, "val", labels, with_targets=True))
        train = _ids(build_dataset(cfg, "train", labels, with_targets=True))
        assert sorted(val) == sorted(sid for sid, f in assignment.items() if f == k)
        assert sorted(train + val) == sorted(train_ids) and not set(train) & set(val)
    metrics = json.loads((kfold_out / "metrics.json").read_text())
    assert metrics["monitor"] == "mIoU" and metrics["source"] == "out-of-fold"
    assert metrics["mIoU"] == summary["oof"]["mIoU"] and "metric_state" not in metrics
    # the fold mean is the mean of the fold scores, reported beside (not as) the OOF score
    per_fold = [r["mIoU"] for r in summary["per_fold"]]
    assert summary["fold_mean"] == pytest.approx(np.mean(per_fold)) and summary["fold_std"] == pytest.approx(np.std(per_fold))


def test_oof_is_the_sum_of_the_fold_metric_states(kfold_out):
    """Each fold re-evaluated through the same `evaluate` (the same batches as the k-fold's
    own evaluation, so bit for bit the same decisions); the states summed."""
    summary = json.loads((kfold_out / "kfold.json").read_text())
    oof = None
    images = 0
    for k in range(3):
        run = load_run(kfold_out / f"fold_{k}", device="cpu")
        scores, metric = evaluate([Member(run)], "val")
        assert scores["images"] == summary["per_fold"][k]["n_val"]
        images += scores["images"]
        state = json.loads((kfold_out / f"fold_{k}" / "kfold_state.json").read_text())
        assert metric.state() == state["metric_state"]
        assert scores["mIoU"] == pytest.approx(summary["per_fold"][k]["mIoU"], abs=1e-12)
        if oof is None:
            oof = run.task.metric(run.labels)
            labels = run.labels
        oof.add_state(metric.state())
    assert images == 12  # every training image predicted once, by the fold that did not train on it
    assert int(oof.mat.sum()) == 12 * 64 * 64
    assert oof.state() == summary["oof"]["metric_state"]
    scores = oof.compute(list(labels.classes))
    assert scores["mIoU"] == pytest.approx(summary["oof"]["mIoU"], abs=1e-12)
    assert scores["per_class_iou"] == pytest.approx(summary["oof"]["per_class_iou"], abs=1e-12)


def test_oof_matrix_counts_each_held_out_image_once_with_its_own_target(kfold_out):
    """The OOF matrix rebuilt from per-image predictions of each fold model (the batched
    stream, so the same decisions), counted by hand against each image's target; and those
    probabilities agree with the fold model run on the image alone, within float noise
    (decisions compared only where the margin is clear)."""
    summary = json.loads((kfold_out / "kfold.json").read_text())
    n = len(summary["oof"]["per_class_iou"])
    mat = np.zeros((n, n), np.int64)
    seen = []
    for k in range(3):
        run = load_run(kfold_out / f"fold_{k}", device="cpu")
        val = build_dataset(run.cfg, "val", run.labels, train=False, with_targets=True)
        items = {val[i]["id"]: val[i] for i in range(len(val))}
        for p in predictions([Member(run)], "val"):
            seen.append(p.id)
            target = items[p.id]["target"].numpy().astype(np.int64)
            mat += np.bincount((target * n + p.output).ravel(), minlength=n * n).reshape(n, n)
            with torch.no_grad():
                alone = run.module(items[p.id]["image"][None]).softmax(1)[0]
            torch.testing.assert_close(p.probs, alone, atol=ATOL, rtol=0)
            top2 = alone.topk(2, dim=0).values
            clear = ((top2[0] - top2[1]) > MARGIN).numpy()
            assert clear.mean() > 0.9, clear.mean()
            assert np.array_equal(p.output[clear], alone.argmax(0).numpy()[clear])
    assert sorted(seen) == sorted(_folds_csv(kfold_out))
    assert mat.tolist() == summary["oof"]["metric_state"]["confusion_matrix"]


def test_a_kfold_folder_is_an_ensemble_member(kfold_out, synth_root, tmp_path, capsys):
    members, base = resolve_members([str(kfold_out)], device="cpu")
    assert base == kfold_out / "config.yaml"
    assert [m.run.path for m in members] == [kfold_out / f"fold_{k}" for k in range(3)]
    capsys.readouterr()
    assert main(["ensemble", str(kfold_out), "--split", "val", "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    # read from the base config's val.json (not a fold's), averaged over the three folds
    assert scores["images"] == 6 and len(scores["members"]) == 3
    assert scores["weights"] == pytest.approx([1 / 3] * 3)
    expected, _ = evaluate(members, "val", base)
    assert scores["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-12)
    out = tmp_path / "sub.csv"
    assert main(["ensemble", str(kfold_out), "--split", "test", "--out", str(out), "--device", "cpu"]) == 0
    assert len(out.read_text().splitlines()) == 1 + 4


def test_existing_kfold_folder_is_not_overwritten(kfold_out, synth_root):
    with pytest.raises(SeglabError, match="already holds a k-fold"):
        run_kfold(tiny_config(synth_root), kfold_out)


def test_killed_kfold_resumes_at_the_fold_it_stopped_in(synth_root, tmp_path, monkeypatch):
    real_train = seglab.core.training.train
    calls = []

    def killed_in_fold_1(cfg, run_dir, resume=False):
        calls.append((run_dir.name, resume))
        if run_dir.name == "fold_1" and not resume:
            # one epoch of two, then the process dies: last.ckpt and config.yaml (2 epochs) stay
            real_train(cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"max_epochs": 1})}), run_dir)
            (run_dir / "config.yaml").write_text(to_yaml(cfg))
            raise KeyboardInterrupt
        return real_train(cfg, run_dir, resume)

    monkeypatch.setattr(seglab.core.training, "train", killed_in_fold_1)
    cfg = tiny_config(synth_root, "trainer.max_epochs=2", "kfold.folds=2")
    out = tmp_path / "kf"
    with pytest.raises(KeyboardInterrupt):
        run_kfold(cfg, out, device="cpu")
    assert calls == [("fold_0", False), ("fold_1", False)]
    assert not (out / "kfold.json").exists() and (out / "folds.csv").is_file()
    assert json.loads((out / "fold_0" / "kfold_state.json").read_text())["trained"] is True
    assert not (out / "fold_1" / "kfold_state.json").exists()

    calls.clear()
    assert main(["kfold", "--resume", str(out), "--device", "cpu"]) == 0
    assert calls == [("fold_1", True)]  # fold 0 is finished and skipped; fold 1 continues
    history = [json.loads(line)["epoch"] for line in (out / "fold_1" / "history.jsonl").read_text().splitlines()]
    assert history == [0, 1]
    assert torch.load(out / "fold_1" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    summary = json.loads((out / "kfold.json").read_text())
    assert [r["fold"] for r in summary["per_fold"]] == [0, 1]
    assert sum(r["n_val"] for r in summary["per_fold"]) == 12
    assert int(np.sum(summary["oof"]["metric_state"]["confusion_matrix"])) == 12 * 64 * 64
