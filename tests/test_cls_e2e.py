"""What is specific to classification end to end, on the built-in mask-status data:
training with every classification option on (ArcFace head, mixup/cutmix, UDA on the test
images, class-balanced sampler, weighted CE + focal) and resumed from the CLI; the 18-class
confusion matrix and its mask/gender/age facet accuracies; the competition's info.csv
(organiser's rows and columns kept, `ans` filled) with the run's `tta.flips: [h]`;
`path,label,confidence` pseudo-labels read back by `data.extra_train`; an ensemble over
runs validated on other folds; the age_bounds knob.

The generic flow (SIGKILL + resume, evaluate, every writer runs, `ensemble RUN RUN`,
k-fold OOF, TTA views, report, runs) is tests/test_tasks_e2e.py's, for the three tasks."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import load_config
from seglab.core.run import load_run
from seglab.core.training import train
from seglab.data import open_source, resolve_labels
from seglab.data.maskstatus import FACETS, class_names
from seglab.data.synth.maskstatus import make_maskstatus_dataset
from seglab.inference.ensemble import Member
from seglab.inference.predict import evaluate, predictions

from tests.workflow_helpers import constructed_run

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
    # The organiser's info.csv may hold more columns than ImageID and ans: the submission keeps them.
    info = root / "eval" / "info.csv"
    with open(info, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(info, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageID", "note", "ans"])
        w.writerows([r["ImageID"], f"n{i}", r["ans"]] for i, r in enumerate(rows))
    return root


def tiny_config(root, *extra):
    return load_config(ROOT / "configs" / "demo_cls.yaml", [
        f"data.root={root}", "data.image_size=[32,32]", "data.batch_size=16", "kfold.folds=4",
        "trainer.max_epochs=2", "trainer.progress_bar=false", "logging.viz_every_n_epochs=1", "logging.loggers=[]",
        "schedule.warmup_epochs=0", *extra,
    ])


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory):
    """One epoch with every training option on, then resumed from the CLI for a second."""
    run = tmp_path_factory.mktemp("clsrun") / "r"
    cfg = tiny_config(data_root, "trainer.max_epochs=1", "classification.head=arcface", "classification.arcface_scale=16",
                      "classification.mixup_alpha=0.4", "classification.cutmix_alpha=1.0",
                      "data.sampler={name: class_balanced, power: 1}", "logging.loggers=[csv]", "trainer.log_every_n_steps=1",
                      "classification.uda.weight=1.0", "classification.uda.threshold=0.0", "classification.uda.batch_size=8",
                      "loss=[{name: ce, class_weights: auto, label_smoothing: 0.1}, {name: focal, weight: 0.5}]")
    train(cfg, run)
    assert len((run / "history.jsonl").read_text().splitlines()) == 1
    assert main(["train", "--resume", str(run), "trainer.max_epochs=2"]) == 0
    return run


def member(run: Path, **kwargs) -> Member:
    return Member(load_run(run, device="cpu"), **kwargs)


def test_config_defaults_of_the_task(data_root):
    cfg = tiny_config(data_root)
    assert cfg.model.arch == "classifier" and cfg.eval.monitor == "macro_f1" and cfg.submission.format == "maskstatus"
    assert cfg.tta.flips == ["h"] and cfg.data.fold == 0
    assert tiny_config(data_root, "data.format=csv", "data.maskstatus=null", "data.train=train/train.csv",
                       "data.test=null").submission.format == "id_label"


def test_run_folder_contract(trained_run):
    run = trained_run
    for path in ("config.yaml", "labels.json", "metrics.json", "history.jsonl", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / path).is_file(), path
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("macro_f1", "accuracy", "mean_class_accuracy", "mask_accuracy", "gender_accuracy", "age_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["monitor"] == "macro_f1" and len(metrics["per_class_f1"]) == 18
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    cm = np.array(history[-1]["confusion_matrix"])
    assert cm.shape == (18, 18) and cm.sum() == sum(history[-1]["support"].values()) == 21  # fold 0: 3 persons x 7
    labels = json.loads((run / "labels.json").read_text())
    assert labels["target"] == "class" and labels["classes"][17] == "not_worn/female/>=60"
    assert {k: tuple(v) for k, v in labels["facets"].items()} == FACETS
    viz = run / "viz" / "epoch_001"
    assert (viz / "confusion_matrix.png").is_file() and (viz / "per_class_f1.png").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == history[-1]["step"]
    # UDA ran after the resume (the unlabelled loader came back with the labelled one): its loss
    # and kept share were logged every step. (Lightning's CSV logger restarts its file on resume.)
    with open(run / "csv" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("train/uda_loss")]
    assert {int(r["epoch"]) for r in logged} == {1} and len(logged) == 3  # 63 training images, batches of 16
    assert all(float(r["train/uda_kept"]) == 1.0 for r in logged)  # uda.threshold 0 keeps every image
    assert type(load_run(run, device="cpu").module.model.head).__name__ == "ArcFaceHead"


def test_facet_accuracies_come_from_the_confusion_matrix(trained_run):
    """Evaluated without the run's TTA, the ArcFace run scores as its best validation did;
    each facet's accuracy is the share of images whose predicted class has the true
    class's mask kind / gender / age band."""
    best = json.loads((trained_run / "metrics.json").read_text())
    m = member(trained_run)
    m.tta = m.tta.model_copy(update={"flips": []})
    scores, metric = evaluate([m], "val")
    assert scores["macro_f1"] == pytest.approx(best["macro_f1"], abs=1e-9)
    history = [json.loads(line) for line in (trained_run / "history.jsonl").read_text().splitlines()]
    cm = np.array(metric.mat.cpu().tolist())
    assert cm.tolist() == history[best["epoch"]]["confusion_matrix"]
    true, pred = np.nonzero(cm)
    for facet, values in FACETS.items():
        right = sum(cm[t, p] for t, p in zip(true, pred) if values[t] == values[p])
        assert scores[f"{facet}_accuracy"] == pytest.approx(right / cm.sum(), abs=1e-12)
    assert all(scores[f"{facet}_accuracy"] >= scores["accuracy"] for facet in FACETS)
    assert any(scores[f"{facet}_accuracy"] > scores["accuracy"] for facet in FACETS)  # some errors get a facet right


def test_info_csv_keeps_the_organisers_rows_and_columns(trained_run, data_root, tmp_path):
    out = tmp_path / "info.csv"
    assert main(["predict", str(trained_run), "--device", "cpu", "--out", str(out)]) == 0  # submission.format: maskstatus
    with open(data_root / "eval" / "info.csv") as f:
        expected = list(csv.DictReader(f))
    with open(out) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["ImageID", "note", "ans"]
    assert [(r["ImageID"], r["note"]) for r in rows] == [(r["ImageID"], r["note"]) for r in expected] and len(rows) == 14
    # ans is the argmax of the probabilities averaged over the run's TTA views (tta.flips: [h])
    default = list(predictions([member(trained_run)], "test"))
    assert [int(r["ans"]) for r in rows] == [int(p.probs.argmax()) for p in default] == [int(p.output) for p in default]
    plain = member(trained_run)
    plain.tta = plain.tta.model_copy(update={"flips": []})
    unflipped = torch.stack([p.probs for p in predictions([plain], "test")])
    assert not torch.allclose(unflipped, torch.stack([p.probs for p in default]))
    # `--no-tta` on the command line reaches the writer
    assert main(["predict", str(trained_run), "--device", "cpu", "--no-tta", "--format", "probs", "--out", str(tmp_path / "p.csv")]) == 0
    written = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, usecols=range(1, 19))
    assert np.allclose(written, unflipped.numpy(), atol=1e-6) and np.allclose(written.sum(1), 1, atol=1e-4)


def test_pseudo_labels_keep_the_confident_images_and_join_training(trained_run, data_root, tmp_path):
    probs = {p.id: p.probs for p in predictions([member(trained_run)], "test")}
    confidence = sorted(float(p.max()) for p in probs.values())
    # a threshold halfway across the widest gap between two confidences: no image sits on it
    gap, k = max((confidence[i + 1] - confidence[i], i) for i in range(len(confidence) - 1))
    assert gap > 1e-4
    threshold = (confidence[k] + confidence[k + 1]) / 2
    out = tmp_path / "pseudo.csv"
    assert main(["pseudo", str(trained_run), "--device", "cpu", "--threshold", str(threshold), "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    classes = class_names()
    expected = {i: classes[int(p.argmax())] for i, p in probs.items() if float(p.max()) >= threshold}
    assert len(rows) == len(expected) == len(confidence) - k - 1
    assert {Path(r["path"]).name: r["label"] for r in rows} == expected
    assert all(r["path"].startswith("eval/images/") and float(r["confidence"]) >= threshold - 1e-4 for r in rows)

    cfg = tiny_config(data_root, f"data.extra_train=[{out}]")
    labels = resolve_labels(cfg)
    plain, joined = open_source(tiny_config(data_root), "train", labels), open_source(cfg, "train", labels)
    assert len(joined) == len(plain) + len(rows)
    extra = [(Path(joined.image_path(i)).name, classes[int(joined.load_target(i))]) for i in range(len(plain), len(joined))]
    assert dict(extra) == expected


def test_ensemble_over_runs_of_other_folds_reads_the_first_members_images(trained_run, data_root, tmp_path, capsys):
    """Members predict the same images: the first member's split (here its validation fold),
    whatever fold the others validated on; probabilities are the weighted mean."""
    other = constructed_run(tmp_path / "fold1", tiny_config(data_root, "data.fold=1"))
    out = tmp_path / "ens.csv"
    assert main(["ensemble", str(trained_run), str(other), "--weights", "3,1", "--device", "cpu", "--split", "test",
                 "--format", "probs", "--out", str(out)]) == 0
    a = torch.stack([p.probs for p in predictions([member(trained_run)], "test")])
    b = torch.stack([p.probs for p in predictions([member(other)], "test")])
    written = np.loadtxt(out, delimiter=",", skiprows=1, usecols=range(1, 19))
    assert np.allclose(written, (0.75 * a + 0.25 * b).numpy(), atol=1e-6)
    assert not np.allclose(written, a.numpy(), atol=1e-3)  # the second member counts
    capsys.readouterr()
    assert main(["ensemble", str(trained_run), str(other), "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    fold0 = open_source(tiny_config(data_root), "val", load_run(trained_run, device="cpu").labels)
    assert scores["images"] == len(fold0) == 21 and scores["split"] == "val"


def test_age_bounds_knob_renames_the_classes_and_relabels_the_images(trained_run, data_root, tmp_path, capsys):
    with open(data_root / "train" / "train.csv") as f:
        ages = sorted({int(r["age"]) for r in csv.DictReader(f) if 30 < int(r["age"]) < 60})
    bound = ages[-1]  # the oldest of the middle band: with this second bound, only persons of this age move up
    cfg = tiny_config(data_root, f"data.maskstatus.age_bounds=[30, {bound}]")
    run = constructed_run(tmp_path / "bounds", cfg)
    labels = json.loads((run / "labels.json").read_text())
    assert labels["classes"][17] == f"not_worn/female/>={bound}" and labels["classes"] == class_names((30, bound))
    assert load_config(run / "config.yaml").data.maskstatus.age_bounds == (30, bound)
    base = open_source(tiny_config(data_root, "data.fold=null", "data.val=train"), "val", None)
    moved = open_source(tiny_config(data_root, "data.fold=null", "data.val=train", f"data.maskstatus.age_bounds=[30, {bound}]"), "val", None)
    changed = [i for i in range(len(base)) if base.load_target(i) != moved.load_target(i)]
    assert changed and all(base.load_target(i) % 3 == 1 and moved.load_target(i) == base.load_target(i) + 1 for i in changed)
    assert changed == [i for i in range(len(base)) if f"_{bound}/" in base.sample_id(i)]
    # runs with other bands are other classes: they do not average
    capsys.readouterr()
    assert main(["ensemble", str(trained_run), str(run), "--device", "cpu"]) == 2
    assert "members must share one class list" in capsys.readouterr().err
