"""One end-to-end flow, the same for the three tasks, on data the tests make:
multiclass on COCO shapes, multilabel on hand-bone-layout polygons, classification on
mask-status faces. Every workflow is one code path, so every step is asked of every task:
train; SIGKILL mid-epoch and --resume equals the uninterrupted run; evaluate; predict with
every writer the task has; `ensemble RUN RUN` equals RUN; k-fold with its OOF score;
pseudo-labels back into training; TTA; report; runs and runs diff with the task's metric.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil

import pytest
import torch
import yaml

from seglab.cli import main
from seglab.config import load_config
from seglab.core.run import load_run
from seglab.data import build_dataset, resolve_labels
from seglab.data.sources import SOURCES
from seglab.inference.ensemble import Member
from seglab.inference.predict import evaluate
from tests.workflow_helpers import TASKS, finish, seglab_process, task_data, tensors, train_and_kill

COMMON = ["trainer.max_epochs=2", "trainer.deterministic=true", "trainer.checkpoint_every_n_steps=1",
          "trainer.progress_bar=false", "logging.loggers=[]", "schedule.warmup_epochs=0", "data.num_workers=0"]


def cli(*args: str) -> tuple[int, str]:
    """The CLI in this process: (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Per task, lazily: (config, overrides, run folder) of one uninterrupted training run."""
    made: dict[str, tuple] = {}

    def get(task: str):
        if task not in made:
            base = tmp_path_factory.mktemp(task)
            config, overrides = task_data(task, base / "data")
            overrides += COMMON + [f"data.cache_dir={base / 'cache'}"]
            run = base / "run"
            finish(seglab_process("train", str(config), *overrides, "--out", str(run)))
            made[task] = (config, overrides, run)
        return made[task]

    return get


def scores_of(out: str) -> dict:
    return json.loads(out[out.index("{"):])


@pytest.mark.parametrize("task", TASKS)
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(task, trained, tmp_path):
    config, overrides, full = trained(task)
    steps_per_epoch = tensors(full / "checkpoints" / "last.ckpt")["global_step"] // 2
    kill_at = steps_per_epoch + 1  # the second epoch's first step
    killed = tmp_path / "killed"
    train_and_kill([str(config), *overrides], killed, kill_at)
    at_kill = tensors(killed / "checkpoints" / "last.ckpt")
    assert steps_per_epoch >= 2 and at_kill["global_step"] == kill_at  # mid-epoch

    finish(seglab_process("train", "--resume", str(killed)))
    a, b = tensors(full / "checkpoints" / "last.ckpt"), tensors(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 2 * steps_per_epoch
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert json.loads((full / "metrics.json").read_text()) == json.loads((killed / "metrics.json").read_text())
    assert (full / "history.jsonl").read_text() == (killed / "history.jsonl").read_text()


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_scores_the_best_checkpoint_as_validation_did(task, trained):
    config, overrides, run = trained(task)
    # In a one-thread process, as the run validated: the same computation, not only the same maths.
    scores = scores_of(finish(seglab_process("evaluate", str(run), "--no-tta")))
    best = json.loads((run / "metrics.json").read_text())
    monitor = best["monitor"]
    assert monitor == load_config(config, overrides).eval.monitor
    assert scores[monitor] == pytest.approx(best[monitor], abs=1e-9)
    assert scores["resolution"] and scores["split"] == "val"


@pytest.mark.parametrize("task", TASKS)
def test_predict_writes_every_format_the_task_has(task, trained, tmp_path):
    config, overrides, run = trained(task)
    cfg = load_config(config, overrides)
    labels = resolve_labels(cfg)
    test_ids = [build_dataset(cfg, "test", labels).source.sample_id(i) for i in range(len(build_dataset(cfg, "test", labels)))]
    task_obj = load_run(run, device="cpu").task
    assert task_obj.writers
    for fmt in task_obj.writers:
        out = tmp_path / fmt
        code, printed = cli("predict", run, "--format", fmt, "--out", out)
        assert code == 0 and f"wrote {len(test_ids)} predictions ({fmt})" in printed
        assert out.exists()
        if fmt in ("coco_csv", "id_label", "probs"):
            rows = list(csv.reader(out.open()))
            assert [r[0] for r in rows[1:]] == test_ids  # one row per image, in split order
        elif fmt == "rle":
            rows = list(csv.reader(out.open()))
            assert len(rows) - 1 == len(test_ids) * len(labels.classes[1:] if labels.target == "class_map" else labels.classes)
        elif fmt == "maskstatus":
            rows = list(csv.DictReader(out.open()))
            assert [r["ImageID"] for r in rows] == test_ids and all(0 <= int(r["ans"]) < 18 for r in rows)
        elif fmt == "png":
            assert len([p for p in out.rglob("*.png")]) >= len(test_ids)
    code, _ = cli("predict", run, "--format", "no_such_writer", "--out", tmp_path / "x")
    assert code == 2


@pytest.mark.parametrize("task", TASKS)
def test_an_ensemble_of_a_run_with_itself_equals_the_run(task, trained, tmp_path):
    config, overrides, run = trained(task)
    _, alone = cli("evaluate", run)
    _, twice = cli("ensemble", run, run)
    alone, twice = scores_of(alone), scores_of(twice)
    for key, value in alone.items():
        if isinstance(value, (float, int)) and key not in ("images",):
            assert twice[key] == value, key
    cli("predict", run, "--out", tmp_path / "one")
    cli("ensemble", run, run, "--split", "test", "--out", tmp_path / "two")
    one, two = tmp_path / "one", tmp_path / "two"
    read = (lambda p: sorted(q.read_bytes() for q in p.rglob("*.png"))) if one.is_dir() else (lambda p: p.read_bytes())
    assert read(one) == read(two)


@pytest.mark.parametrize("task", TASKS)
def test_kfold_oof_is_the_task_metric_over_the_summed_held_out_folds(task, trained, tmp_path):
    config, overrides, _ = trained(task)
    out = tmp_path / "kf"
    code, printed = cli("kfold", config, *overrides, "trainer.checkpoint_every_n_steps=null", "--folds", "2", "--out", out)
    assert code == 0 and "OOF" in printed
    summary = json.loads((out / "kfold.json").read_text())
    assert summary["task"] == task and summary["folds"] == 2
    # The expectation, through the same evaluation of each fold, summed independently.
    runs = [load_run(out / f"fold_{k}", device="cpu") for k in range(2)]
    metric = runs[0].task.metric(runs[0].labels)
    held_out = []
    for run in runs:
        _, fold_metric = evaluate([Member(run)], "val")
        metric.add_state(fold_metric.state())
        val = build_dataset(run.cfg, "val", run.labels).source
        held_out += [val.sample_id(i) for i in range(len(val))]
    cfg = load_config(config, overrides)
    pool = SOURCES.get(cfg.data.format)(cfg.data, "train", resolve_labels(cfg))
    assert sorted(held_out) == sorted(pool.sample_id(i) for i in range(len(pool)))  # each sample held out once
    expected = metric.compute(list(runs[0].labels.classes))
    monitor = summary["monitor"]
    assert summary["oof"][monitor] == pytest.approx(expected[monitor], abs=1e-12)
    assert json.loads((out / "metrics.json").read_text())[monitor] == pytest.approx(expected[monitor], abs=1e-12)
    _, table = cli("runs", tmp_path)
    assert f"{monitor} (OOF)" in table


@pytest.mark.parametrize("task", TASKS)
def test_pseudo_labels_of_the_test_split_join_training(task, trained, tmp_path):
    config, overrides, run = trained(task)
    suffix = ".csv" if task == "classification" else ".json"
    out = tmp_path / f"pseudo{suffix}"
    code, printed = cli("pseudo", run, "--out", out, "--threshold", "0", "--min-confident", "0")
    assert code == 0 and out.is_file()
    cfg = load_config(config, overrides)
    labels = resolve_labels(cfg)
    plain = build_dataset(cfg, "train", labels, train=True)
    with_pseudo = build_dataset(load_config(config, overrides + [f"data.extra_train=[{out}]"]), "train", labels, train=True)
    n_test = len(build_dataset(cfg, "test", labels))
    assert len(with_pseudo) == len(plain) + n_test
    item = with_pseudo[len(with_pseudo) - 1]
    assert item["target"].shape == plain[0]["target"].shape  # a pseudo-labelled sample is an ordinary one


@pytest.mark.parametrize("task", TASKS)
def test_tta_views_are_averaged_and_recorded(task, trained):
    _, _, run = trained(task)
    _, plain = cli("evaluate", run, "--no-tta")
    _, flipped = cli("evaluate", run, "--flips", "h,v", "--scales", "1,1.5")
    plain, flipped = scores_of(plain), scores_of(flipped)
    assert plain["tta"] == {"flips": [], "scales": [1.0]}
    assert flipped["tta"] == {"flips": ["h", "v"], "scales": [1.0, 1.5]}
    members = [Member(load_run(run, device="cpu"))]
    members[0].tta = members[0].tta.model_copy(update={"flips": ["h", "v"], "scales": [1.0, 1.5]})
    monitor = json.loads((run / "metrics.json").read_text())["monitor"]
    assert evaluate(members, "val")[0][monitor] == pytest.approx(flipped[monitor], abs=1e-12)
    code, _ = cli("evaluate", run, "--flips", "x")
    assert code == 2


@pytest.mark.parametrize("task", TASKS)
def test_report_runs_and_runs_diff_show_the_task_metric(task, trained, tmp_path):
    config, overrides, run = trained(task)
    monitor = json.loads((run / "metrics.json").read_text())["monitor"]
    value = json.loads((run / "metrics.json").read_text())[monitor]
    code, printed = cli("report", run)
    page = (run / "report" / "index.html").read_text()
    assert code == 0 and monitor in page and f"{value:.4f}" in page
    other = tmp_path / "other"
    shutil.copytree(run, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["seed"] = 7
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    _, table = cli("runs", tmp_path)
    assert monitor in table and f"{value:.4f}" in table and task in table
    _, diff = cli("runs", "diff", run, other)
    assert "seed: 42 -> 7" in diff and any(line.strip().startswith(monitor) for line in diff.splitlines())


def test_multilabel_tuned_thresholds_are_what_evaluate_then_scores(trained, tmp_path):
    """With TTA and post-processing on, at both resolutions: tune-thresholds' "after" figure
    is exactly what evaluate reports with the saved thresholds."""
    _, _, trained_run = trained("multilabel")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["tta"] = {"flips": ["h", "v"], "scales": [1.0]}
    cfg["postprocess"]["opening"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for size_flag in ([], ["--original-size"]):
        code, printed = cli("tune-thresholds", run, *size_flag, "--grid", "0.2,0.4,0.5,0.6,0.8")
        assert code == 0 and "post-processed" in printed
        record = json.loads((run / "thresholds.json").read_text())
        _, out = cli("evaluate", run, *size_flag)
        scores = scores_of(out)
        assert scores["thresholds_from"].endswith("thresholds.json")
        assert scores["resolution"] == record["resolution"]
        assert scores["dice"] == pytest.approx(record["dice_after"], abs=1e-9)
        for name, value in record["per_class_dice_after"].items():
            assert scores["per_class_dice"][name] == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize("task", TASKS)
def test_viz_aug_draws_the_training_samples_of_every_task(task, tmp_path):
    config, overrides = task_data(task, tmp_path / "data")
    code, printed = cli("viz", "aug", config, *overrides, f"data.cache_dir={tmp_path / 'cache'}", "--n", "2", "--out", tmp_path / "aug")
    pngs = sorted((tmp_path / "aug").glob("aug_*.png"))
    assert code == 0 and len(pngs) == 2
    if task == "classification":  # the image's class is named in the panel's file name
        assert all(any(band in p.name for band in ("30", "60")) for p in pngs)
