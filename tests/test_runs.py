import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seglab.cli import main
from seglab.errors import SeglabError
from seglab.runs import MISSING, config_diff, diff_runs, find_runs, flatten, runs_table


def make_run(folder: Path, config: dict, metrics: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


BASE = {"task": "multiclass", "model": {"arch": "unet", "encoder": "resnet34", "classes": 3},
        "optim": {"lr": 0.001, "name": "adamw"}, "data": {"size": [512, 512]}, "seed": 1}


def test_flatten_nested_mappings():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": {}, "f": None}


def test_find_runs_recursive_sorted_and_skips_run_outputs(tmp_path):
    make_run(tmp_path / "b", BASE)
    make_run(tmp_path / "a" / "fold0", BASE)
    make_run(tmp_path / "a" / "fold1", BASE)
    make_run(tmp_path / "b" / "viz" / "junk", BASE)   # inside a run's output folder
    (tmp_path / "notarun").mkdir()
    assert find_runs(tmp_path) == [tmp_path / "a" / "fold0", tmp_path / "a" / "fold1", tmp_path / "b"]


def test_runs_table_lists_task_model_metric_score_and_epoch(tmp_path):
    make_run(tmp_path / "r1", BASE, {"epoch": 7, "step": 70, "monitor": "mIoU", "mIoU": 0.6123456, "fwIoU": 0.9})
    make_run(tmp_path / "r2", {"model": {"name": "fcn8s", "backbone": {"name": "vgg16"}}})  # no metrics yet
    lines = runs_table(tmp_path).splitlines()
    assert len(lines) == 3 and lines[0].split() == ["run", "task", "model", "metric", "best", "epoch", "date"]
    assert lines[1].split()[:6] == ["r1", "multiclass", "unet+resnet34", "mIoU", "0.6123", "7"]
    assert lines[2].split()[:6] == ["r2", "-", "fcn8s+vgg16", "-", "-", "-"]
    (tmp_path / "empty").mkdir()
    assert runs_table(tmp_path / "empty") == f"no runs under {tmp_path / 'empty'}"
    with pytest.raises(SeglabError, match="nothing: no such folder"):
        runs_table(tmp_path / "r1" / "nothing")


# Hand-written best-validation files of a multilabel (Dice) and a classification (macro F1)
# run, as record_validation writes them: "monitor" names the metric.
DICE_RUN = {"epoch": 4, "step": 40, "monitor": "dice", "dice": 0.8125, "images": 6,
            "per_class_dice": {"finger-1": 0.9, "Radius": 0.725}, "val_loss": 0.25}
F1_RUN = {"epoch": 2, "step": 12, "monitor": "macro_f1", "macro_f1": 0.4375, "accuracy": 0.625,
          "mean_class_accuracy": 0.5, "per_class_f1": {"cat": 0.75, "dog": 0.125},
          "per_class_precision": {"cat": 0.6, "dog": 1.0}, "per_class_recall": {"cat": 1.0, "dog": 0.0625},
          "support": {"cat": 3, "dog": 16}, "val_loss": 0.9}


def metric_rows(text: str) -> dict[str, list[str]]:
    """{row name: [a, b, b - a]} of diff_runs' metrics table (fixed-width columns; names may hold spaces)."""
    lines = text.split("metrics (best validation):\n")[1].splitlines()[1:]
    return {line[2:-30].strip(): line[-30:].split() for line in lines}


def test_each_task_shows_its_own_metric(tmp_path):
    make_run(tmp_path / "seg", dict(BASE, task="multilabel"), DICE_RUN)
    make_run(tmp_path / "cls", dict(BASE, task="classification", model={"arch": "classifier", "encoder": "resnet18"}), F1_RUN)
    rows = {line.split()[0]: line.split()[:6] for line in runs_table(tmp_path).splitlines()[1:]}
    assert rows["seg"] == ["seg", "multilabel", "unet+resnet34", "dice", "0.8125", "4"]
    assert rows["cls"] == ["cls", "classification", "classifier+resnet18", "macro_f1", "0.4375", "2"]
    # a k-fold folder's metrics.json holds its out-of-fold scores, marked as such
    make_run(tmp_path / "kf", dict(BASE, task="multilabel"), {"monitor": "dice", "source": "out-of-fold", "dice": 0.6875})
    kfold = next(line.split() for line in runs_table(tmp_path).splitlines() if line.startswith("kf "))
    assert kfold[:7] == ["kf", "multilabel", "unet+resnet34", "dice", "(OOF)", "0.6875", "-"]

    better = make_run(tmp_path / "seg2", dict(BASE, task="multilabel"), dict(DICE_RUN, dice=0.875, per_class_dice={"finger-1": 0.9, "Radius": 0.85}))
    rows = metric_rows(diff_runs(tmp_path / "seg", better))
    assert list(rows)[:2] == ["epoch", "dice"]  # the monitored metric first
    assert rows["dice"] == ["0.8125", "0.8750", "+0.0625"]
    assert rows["dice Radius"] == ["0.7250", "0.8500", "+0.1250"]
    assert rows["dice finger-1"] == ["0.9000", "0.9000", "+0.0000"]
    assert set(rows) == {"epoch", "dice", "val_loss", "dice finger-1", "dice Radius"}  # no image count, no mIoU

    other = make_run(tmp_path / "cls2", dict(BASE, task="classification", model={"arch": "classifier", "encoder": "resnet18"}),
                     dict(F1_RUN, macro_f1=0.5, per_class_f1={"cat": 0.75, "dog": 0.25}))
    text = diff_runs(tmp_path / "cls", other)
    assert "(identical)" in text.split("metrics")[0]
    rows = metric_rows(text)
    assert list(rows)[:2] == ["epoch", "macro_f1"]
    assert rows["macro_f1"] == ["0.4375", "0.5000", "+0.0625"]
    assert rows["f1 dog"] == ["0.1250", "0.2500", "+0.1250"]
    assert rows["recall dog"] == ["0.0625", "0.0625", "+0.0000"]
    assert {"accuracy", "mean_class_accuracy", "precision cat", "val_loss"} <= set(rows)


@pytest.mark.parametrize("command", [["runs", "diff"], ["report"]])
def test_runs_diff_and_report_refuse_a_folder_that_is_not_a_run(tmp_path, capsys, command):
    run = make_run(tmp_path / "run", BASE, {"epoch": 1, "monitor": "mIoU", "mIoU": 0.5})
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)  # looks like a run folder, has no config.yaml
    args = command + ([str(run), str(other)] if command[0] == "runs" else [str(other)])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"error: {other}: not a run folder (no config.yaml)\n"
    assert not (other / "report").exists()
    from seglab.report import write_report

    with pytest.raises(SeglabError, match="not a run folder"):
        diff_runs(other, run) if command[0] == "runs" else write_report(other)


def test_diff_shows_exactly_the_two_differing_keys(tmp_path):
    other = json.loads(json.dumps(BASE))
    other["optim"]["lr"] = 0.0003          # changed
    other["model"]["decoder_attention"] = "scse"   # only in b
    a = make_run(tmp_path / "a", BASE, {"epoch": 3, "mIoU": 0.5,
                                        "per_class_iou": {"Background": 0.9, "cat": 0.1, "dog": None}})
    b = make_run(tmp_path / "b", other, {"epoch": 5, "mIoU": 0.55,
                                         "per_class_iou": {"Background": 0.95, "cat": 0.15, "dog": 0.3}})
    assert config_diff(BASE, other) == [("model.decoder_attention", MISSING, "scse"),
                                        ("optim.lr", 0.001, 0.0003)]
    text = diff_runs(a, b)
    config_part = text.split("config (a -> b):")[1].split("metrics")[0]
    changed = [line.strip() for line in config_part.splitlines() if line.strip()]
    assert changed == ["model.decoder_attention: <absent> -> 'scse'", "optim.lr: 0.001 -> 0.0003"]
    rows = metric_rows(text)
    assert rows["mIoU"] == ["0.5000", "0.5500", "+0.0500"]
    assert rows["iou cat"] == ["0.1000", "0.1500", "+0.0500"]
    assert rows["iou dog"] == ["-", "0.3000", "-"]   # absent in a: no delta
    assert "(identical)" in diff_runs(a, a)


def test_runs_and_report_do_not_import_torch_or_lightning():
    code = ("import sys, seglab.runs, seglab.report; "
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_monitoring_the_loss_shows_its_best_loss(tmp_path):
    # eval.monitor: loss (mode min) is allowed; record_validation writes the loss as val_loss.
    metrics = {"epoch": 3, "step": 30, "monitor": "loss", "mIoU": 0.5, "fwIoU": 0.75, "per_class_iou": {"a": 0.5}, "val_loss": 0.125}
    a = make_run(tmp_path / "a", dict(BASE, eval={"monitor": "loss", "mode": "min"}), metrics)
    b = make_run(tmp_path / "b", dict(BASE, eval={"monitor": "loss", "mode": "min"}), dict(metrics, val_loss=0.25))
    rows = {line.split()[0]: line.split() for line in runs_table(tmp_path).splitlines()[1:]}
    assert rows["a"][3:6] == ["loss", "0.1250", "3"] and rows["b"][4] == "0.2500"
    table = metric_rows(diff_runs(a, b))
    assert list(table)[:2] == ["epoch", "val_loss"]  # the monitored score first
    assert table["val_loss"] == ["0.1250", "0.2500", "+0.1250"]
