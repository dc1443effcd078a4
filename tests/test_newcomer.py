"""A newcomer's first hour (issue 15): each mistake reported there ends with exit code 2,
one line naming the problem and the fix, no traceback, and nothing left behind that a
retry trips over."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seglab.cli import build_parser, main
from seglab.config import to_yaml
from seglab.core.training import train
from seglab.data.synth.coco import make_coco_dataset
from tests.workflow_helpers import ROOT, constructed_run, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("newcomer") / "data"
    make_coco_dataset(root, n_train=8, n_val=3, n_test=2, size=32, seed=0)
    return root


@pytest.fixture(scope="module")
def config(data) -> Path:
    path = data.parent / "my.yaml"
    path.write_text(to_yaml(tiny_config(data)))
    return path


@pytest.fixture(scope="module")
def run(data) -> Path:
    return constructed_run(data.parent / "constructed", tiny_config(data))


@pytest.fixture(scope="module")
def trained(data) -> Path:
    """A finished 1-epoch run (two steps)."""
    out = data.parent / "trained"
    train(tiny_config(data, "trainer.limit_train_batches=2"), out)
    return out


def one_line_error(capsys, argv, *expected) -> str:
    """Run the CLI; assert exit code 2 and a single `error:` line containing `expected`."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ preflight: before anything is written


@pytest.mark.parametrize("override, expected", [
    ("data.image_size=[32,40]", "augment.train[0] (RandomResizedCrop): output [24, 24] differs from data.image_size [32, 40]"),
    ("schedule.warmup_epochs=1", "schedule.warmup_epochs=1 covers the whole run (trainer.max_epochs=1); use schedule.warmup_epochs=0"),
    ("trainer.accelerator=tpu", "trainer.accelerator: 'tpu' is not supported by seglab (use cpu, gpu or auto)"),
])
def test_preflight_stops_before_the_run_folder_exists(config, tmp_path, capsys, override, expected):
    out = tmp_path / "runs" / "exp1"
    crop = "augment.train=[{name: RandomResizedCrop, size: [24, 24], p: 0.5}]" if "image_size" in override else "seed=1"
    one_line_error(capsys, ["train", config, "--out", out, override, crop], expected)
    assert not (tmp_path / "runs").exists()  # nothing a retry trips over


def test_crop_problems_name_the_fix(data):
    from seglab.core.combinations import crop_problems, warmup_problems

    cfg = tiny_config(data, "data.image_size=[128,160]", "augment.train=[{name: RandomResizedCrop, size: [512, 512], p: 0.5}, "
                      "{name: RandomCrop, height: 200, width: 100}, {name: CenterCrop, height: 64, width: 64}]")
    problems = crop_problems(cfg)
    assert problems == [
        "augment.train[0] (RandomResizedCrop): output [512, 512] differs from data.image_size [128, 160] and runs with p=0.5, "
        "so one batch mixes two sizes; set its size to [128, 160] (or p: 1)",
        "augment.train[1] (RandomCrop): crop [200, 100] is larger than data.image_size [128, 160]; make it at most [128, 160] "
        "(or set data.image_size to at least [200, 100])",
    ]  # a smaller crop at p=1 (CenterCrop 64) stacks: not a problem
    assert crop_problems(tiny_config(data, "augment.train=[{name: RandomResizedCrop, size: [512, 512], p: 0.5}]")) == []  # no image_size
    assert warmup_problems(tiny_config(data, "trainer.max_epochs=10", "schedule.warmup_epochs=12")) == [
        "schedule.warmup_epochs=12 covers the whole run (trainer.max_epochs=10); use schedule.warmup_epochs=1 or raise "
        "trainer.max_epochs above 12"]
    assert warmup_problems(tiny_config(data, "trainer.max_epochs=10", "schedule.warmup_epochs=2")) == []


def test_viz_aug_checks_the_crop_too(config, tmp_path, capsys):
    one_line_error(capsys, ["viz", "aug", config, "--out", tmp_path / "aug", "data.image_size=[32,32]",
                            "augment.train=[{name: RandomResizedCrop, size: [48, 48], p: 0.5}]"], "set its size to [32, 32]")
    assert not (tmp_path / "aug").exists()


def test_device_and_tta_values(run, capsys):
    import torch

    if not torch.cuda.is_available():
        one_line_error(capsys, ["evaluate", run, "--device", "cuda"], "--device cuda: no CUDA device", "use --device cpu")
    one_line_error(capsys, ["evaluate", run, "--device", "cpu", "--flips", "x"], "--flips x: 'x' is not a flip; use h, v, hv or none")
    one_line_error(capsys, ["evaluate", run, "--device", "cpu", "--scales", "a"], "--scales 'a': expected comma-separated numbers")
    one_line_error(capsys, ["evaluate", run, "--device", "nonsense"], "--device 'nonsense'")


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize("argv", [
    ["report", "{x}"], ["runs", "diff", "{run}", "{x}"], ["evaluate", "{x}"], ["predict", "{x}", "--out", "{tmp}/p.csv"],
    ["ensemble", "{x}"], ["pseudo", "{x}", "--out", "{tmp}/p.json"], ["tune-thresholds", "{x}"], ["train", "--resume", "{x}"],
])
def test_not_a_run_folder(run, tmp_path, capsys, argv):
    missing = tmp_path / "runs" / "does-not-exist"
    argv = [a.format(x=missing, run=run, tmp=tmp_path) for a in argv]
    one_line_error(capsys, argv, f"{missing}", "not a run folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no report folder, no output file


def test_version_and_help_defaults(capsys):
    from seglab import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"seglab {__version__}"

    def actions(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from actions(child, f"{name} {sub}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield name, parser, action

    for name, parser, action in actions(build_parser(), "seglab"):
        assert action.help, f"{name} {action.dest}: no help"
        if action.option_strings and action.nargs != 0 and not action.required:  # an option with a value
            shown = parser.formatter_class("x")._get_help_string(action) % {"default": action.default}
            assert "default" in shown.lower(), f"{name} {action.option_strings}: help does not say the default"


def test_broken_pipe_is_quiet(run, tmp_path):
    """`seglab runs diff A B | head`: a diff longer than the pipe's buffer, its reader gone."""
    script = ("import sys, seglab.runs; from seglab.cli import main; "
              "seglab.runs.diff_runs = lambda a, b: 'key: 1 -> 2' * 100000; "
              f"sys.exit(main(['runs', 'diff', {str(run)!r}, {str(run)!r}]))")
    shell = f"{sys.executable} -c \"{script}\" | head -c 10"
    proc = subprocess.run(shell, shell=True, capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.stdout == "key: 1 -> "
    assert proc.stderr == "", proc.stderr  # no BrokenPipeError, no traceback


# ------------------------------------------------------------------ --resume


def test_resume_records_overrides_refuses_fixed_keys_and_finished_runs(trained, tmp_path, capsys):
    run = tmp_path / "r"
    shutil.copytree(trained, run)
    config_before = (run / "config.yaml").read_text()
    one_line_error(capsys, ["train", "--resume", run], "the run is finished (1 of trainer.max_epochs=1 epochs)",
                   f"seglab train --resume {run} trainer.max_epochs=2")
    one_line_error(capsys, ["train", "--resume", run, "model.encoder=resnet34", "trainer.max_epochs=2"],
                   "model.encoder cannot change in a resumed run", "start a new run instead")
    one_line_error(capsys, ["train", "--resume", run, "data.classes=[a,b]", "trainer.max_epochs=2"], "data.classes cannot change")
    assert (run / "config.yaml").read_text() == config_before and not (run / "resumes.jsonl").exists()

    assert main(["train", "--resume", str(run), "trainer.max_epochs=2", "trainer.limit_train_batches=1"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2 and saved["trainer"]["limit_train_batches"] == 1
    history = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert [h["overrides"] for h in history] == [["trainer.max_epochs=2", "trainer.limit_train_batches=1"]]
    assert history[0]["from_epoch"] == 1


# ------------------------------------------------------------------ other data for a trained run


def roboflow_layout(data: Path, out: Path) -> Path:
    """The same data set as a Roboflow export: SPLIT/_annotations.coco.json beside SPLIT/*.jpg."""
    for split in ("train", "val", "test"):
        doc = json.loads((data / f"{split}.json").read_text())
        (out / split).mkdir(parents=True)
        for img in doc["images"]:
            shutil.copy(data / img["file_name"], out / split / Path(img["file_name"]).name)
            img["file_name"] = Path(img["file_name"]).name
        (out / split / "_annotations.coco.json").write_text(json.dumps(doc))
    return out


def test_evaluate_and_predict_on_data_elsewhere(run, data, tmp_path, capsys):
    moved = roboflow_layout(data, tmp_path / "export")
    splits = ["data.train=train/_annotations.coco.json", "data.val=val/_annotations.coco.json",
              "data.test=test/_annotations.coco.json"]
    assert main(["evaluate", str(run), "--device", "cpu", f"data.root={moved}", *splits]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["images"] == 3 and scores["data_overrides"] == [f"data.root={moved}", *splits]
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["mIoU"] == scores["mIoU"]  # the same images, read from the other layout

    out = tmp_path / "sub" / "submission.csv"
    assert main(["predict", str(run), "--device", "cpu", "--out", str(out), f"data.root={moved}", *splits]) == 0
    record = json.loads((tmp_path / "sub" / "submission.inputs.json").read_text())
    assert record["data_overrides"][0] == f"data.root={moved}" and record["split"] == "test"
    capsys.readouterr()
    one_line_error(capsys, ["predict", run, "--out", tmp_path / "x.csv", "optim.lr=1"], "only data.* keys can be overridden")
    one_line_error(capsys, ["evaluate", run, "--data", tmp_path / "nothere.yaml"], "--data", "not found")


def test_validate_names_the_split_and_collapses_missing_images(config, data, tmp_path, capsys):
    moved = roboflow_layout(data, tmp_path / "export")
    for image in (moved / "train").glob("*.jpg"):
        image.unlink()
    with pytest.raises(SystemExit) as e:  # problems found: exit code 1, the list on stdout
        main(["data", "validate", str(config), f"data.root={moved}", "data.train=train/_annotations.coco.json",
              "data.val=val/_annotations.coco.json", "data.test=test/_annotations.coco.json"])
    assert e.value.code == 1
    out = capsys.readouterr().out.splitlines()
    missing = [line for line in out if "not found" in line]
    assert len(missing) == 1, out
    assert missing[0].startswith("train/_annotations.coco.json: 8 of 8 image files not found under") and "check data.root" in missing[0]
    assert "images per split: train 8, val 3, test 2" in out


def test_validate_prints_the_map_counts_and_void(config, data, capsys):
    assert main(["data", "validate", str(config), "data.classes=[Background, disc, square, triangle, ring, bar, void]"]) == 0
    out = capsys.readouterr().out
    assert "label map (source id -> class): 0 -> 1 disc, 1 -> 2 square" in out and "5 -> 6 void" in out
    assert "images per split: train 8, val 3, test 2" in out
    assert "class 'void' looks like void" in out and "data.remap={void: ignore}" in out
    one_line_error(capsys, ["data", "validate", data / "train.json"], "seglab data inspect")


def test_device_checks_against_the_hardware(monkeypatch):
    """The GPU branches, with the machine's CUDA answers replaced (no GPU on CI)."""
    import torch

    from seglab.core.combinations import device_problems
    from seglab.core.run import pick_device
    from seglab.errors import SeglabError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_problems("gpu", 1) == ["trainer.accelerator=gpu: no CUDA GPU on this machine; use trainer.accelerator=cpu (or auto)"]
    assert device_problems("cpu", 1) == device_problems("auto", 1) == []
    assert device_problems("banana", 1) == ["trainer.accelerator=banana: not an accelerator (use cpu, gpu or auto)"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_problems("gpu", 4) == ["trainer.devices=4: this machine has 1 GPU(s); use trainer.devices=1 (or auto)"]
    assert device_problems("cuda", 1) == device_problems("gpu", "auto") == []
    with pytest.raises(SeglabError, match=r"--device cuda:3: this machine has 1 GPU\(s\), cuda:0 to cuda:0 \(use --device cuda:0\)"):
        pick_device("cuda:3")


def test_many_missing_images_of_any_source_collapse_to_one_line():
    from seglab.data import collapse_missing

    lines = [f"train.csv: id{i}: image file not found: /data/img{i}.jpg" for i in range(300)] + ["train.csv: row 7: bad label"]
    assert collapse_missing(lines, "train") == [
        "data.train: 300 image files not found (e.g. /data/img0.jpg, /data/img1.jpg, /data/img2.jpg); paths are read "
        "relative to data.root: check data.root", "train.csv: row 7: bad label"]
    assert collapse_missing(lines[:3], "val") == lines[:3]  # a few stay one line each
