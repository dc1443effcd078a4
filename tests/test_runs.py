import json
import subprocess
import sys
from pathlib import Path

import yaml

from seglab.runs import MISSING, config_diff, diff_runs, find_runs, flatten, runs_table


def make_run(folder: Path, config: dict, metrics: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


BASE = {"model": {"arch": "unet", "encoder": "resnet34", "classes": 3},
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


def test_runs_table_lists_model_score_and_epoch(tmp_path):
    make_run(tmp_path / "r1", BASE, {"epoch": 7, "mIoU": 0.6123456})
    make_run(tmp_path / "r2", {"model": {"name": "fcn8s", "backbone": {"name": "vgg16"}}})
    lines = runs_table(tmp_path).splitlines()
    assert len(lines) == 3 and lines[0].split()[:2] == ["run", "model"]
    assert lines[1].split()[:4] == ["r1", "unet+resnet34", "0.6123", "7"]
    assert lines[2].split()[:4] == ["r2", "fcn8s+vgg16", "-", "-"]
    assert runs_table(tmp_path / "r1" / "nothing").startswith("no runs")


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
    rows = {line.split()[0] if not line.strip().startswith("IoU") else " ".join(line.split()[:2]):
            line.split() for line in text.split("metrics (best validation):")[1].splitlines()[2:]}
    assert rows["mIoU"][-1] == "+0.0500"
    assert rows["IoU cat"][-1] == "+0.0500"
    assert rows["IoU dog"][-2:] == ["0.3000", "-"]   # absent in a: no delta
    assert "(identical)" in diff_runs(a, a)


def test_runs_and_report_do_not_import_torch_or_lightning():
    code = ("import sys, seglab.runs, seglab.report; "
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
