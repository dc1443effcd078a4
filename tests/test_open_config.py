"""An open config: `task` and `data.format` are checked against the registries, each task and
data format declares its own options under its own key (and only the configured ones are
read: another's section is refused), the reference documents them all, and a config saved
by an older seglab (its layout options in `data`, every task's section) still loads for
evaluate, predict and resume, read in today's keys with one note."""

from __future__ import annotations

import logging

import pytest
import yaml

from seglab.cli import main
from seglab.config import config_from_dict, load_config, to_yaml
from seglab.config.reference import markdown_reference
from seglab.config.schema import Config, DataConfig, plugin_sections
from seglab.core.resuming import resume_config
from seglab.core.run import load_run
from seglab.data.sources.registry import SOURCES
from seglab.errors import ConfigError
from seglab.task import TASKS
from tests.workflow_helpers import ROOT, constructed_run, tiny_config


def refused(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, "c.yaml")
    return str(e.value)


@pytest.mark.parametrize("raw, message", [
    ({"task": "multiclas"}, "c.yaml: task: unknown task 'multiclas'; did you mean 'multiclass'? (known: classification, multiclass, multilabel)"),
    ({"task": "nope"}, "c.yaml: task: unknown task 'nope' (known: classification, multiclass, multilabel)"),
    ({"data": {"format": "cocoo"}}, "c.yaml: data.format: unknown data format 'cocoo'; did you mean 'coco'? (known: coco, csv, imagefolder, labelmap, maskstatus, polygons)"),
])
def test_task_and_format_are_names_in_the_registries(raw, message):
    assert refused(raw) == message


def test_names_are_read_whatever_their_case_and_saved_as_registered():
    cfg = config_from_dict({"task": "MultiLabel", "data": {"format": "Polygons", "polygons": {"image_dir": "DCM"}}})
    assert cfg.task == "multilabel" and cfg.data.format == "polygons" and cfg.data.polygons.image_dir == "DCM"


def test_another_plugins_section_is_refused_naming_whose_it_is():
    assert refused({"data": {"format": "coco", "labelmap": {"mask_dir": "m"}}}) == (
        "c.yaml: data.labelmap: options of the data format labelmap, read only when data.format is labelmap "
        "(a section of another data format is refused)")
    assert refused({"task": "multiclass", "classification": {"head": "arcface"}}) == (
        "c.yaml: classification: options of the task classification, read only when task is classification "
        "(a section of another task is refused)")
    # null is no section: an override that switches the format drops the old one so
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["data.format=labelmap", "data.coco=null", "data.labelmap.mask_dir=m"])
    assert cfg.data.format_options.mask_dir == "m" and "coco" not in cfg.data.model_dump()


def test_an_option_under_its_old_key_names_its_new_one():
    assert refused({"data": {"format": "labelmap", "classes": ["a", "b"], "mask_dir": "m"}}) == (
        "c.yaml: data.mask_dir: unknown key; it is an option of the labelmap data format now: data.labelmap.mask_dir")
    assert refused({"data": {"format": "coco", "image_dir": "x"}}).endswith(
        "data.image_dir: unknown key; it is an option of the labelmap or polygons data format now: "
        "data.labelmap.image_dir, data.polygons.image_dir")
    message = refused({"data": {"format": "labelmap", "labelmap": {"mask_dri": "m"}}, "seed": "x"})
    assert message.splitlines() == ["c.yaml: seed: Input should be a valid integer, unable to parse string as an integer (got 'x')",
                                    "c.yaml: data.labelmap.mask_dri: unknown key; did you mean 'mask_dir'?"]


def test_options_are_the_configured_plugins_own_and_round_trip():
    cfg = config_from_dict({"task": "classification", "data": {"format": "maskstatus", "image_size": [8, 8],
                                                               "maskstatus": {"age_bounds": [30, 59]}},
                            "classification": {"head": "arcface"}})
    assert cfg.task_options is cfg.classification and cfg.classification.head == "arcface"
    assert cfg.data.format_options.age_bounds == (30, 59)
    assert set(yaml.safe_load(to_yaml(cfg))["data"]) >= {"maskstatus"} and "coco" not in yaml.safe_load(to_yaml(cfg))["data"]
    assert config_from_dict(yaml.safe_load(to_yaml(cfg))) == cfg
    assert config_from_dict({}).task_options is None  # multiclass declares none
    assert "data.maskstatus.age_bounds: age_bounds must be two increasing" in refused(
        {"task": "classification", "data": {"format": "maskstatus", "image_size": [8, 8], "maskstatus": {"age_bounds": [60, 30]}}})


def test_every_plugins_options_are_in_the_reference():
    table = markdown_reference()
    for model, prefix in ((DataConfig, "data."), (Config, "")):
        for name, options in plugin_sections(model).items():
            for field in options.model_fields:
                assert f"| `{prefix}{name}.{field}` |" in table or f"| `{prefix}{name}.{field}." in table
    assert set(plugin_sections(DataConfig)) == {n for n in SOURCES if SOURCES.get(n).options is not None}
    assert set(plugin_sections(Config)) == {n for n in TASKS if TASKS.get(n).options is not None} == {"classification"}
    assert "| `data.mask_dir` |" not in table and "| `data.category_map` |" not in table


# ------------------------------------------------------------------ configs an older seglab saved


OLD_DATA_KEYS = {"image_dir": "images", "json_dir": "outputs_json", "mask_dir": "masks", "mask_ignore_value": 255,
                 "mask_value_map": None, "age_bounds": [30, 60], "path_column": "path", "label_column": "label",
                 "group_column": None, "category_map": None}


def older_seglab_wrote(cfg) -> dict:
    """RUN/config.yaml as seglab wrote it before formats and tasks had sections: every option
    of every layout in `data`, every task's section at the top level."""
    raw = yaml.safe_load(to_yaml(cfg))
    raw["data"] = {**raw["data"], **OLD_DATA_KEYS, **(raw["data"].pop(cfg.data.format, None) or {})}
    raw.setdefault("classification", {"head": "linear", "drop_rate": 0.0, "uda": {"weight": 0.0}})
    return raw


def test_a_run_saved_by_an_older_seglab_evaluates_predicts_and_resumes(synth_root, tmp_path, caplog, capsys):
    cfg = tiny_config(synth_root)
    run = constructed_run(tmp_path / "run", cfg)
    old = older_seglab_wrote(cfg)
    assert old["data"]["category_map"] == {"0": 1, "1": 2, "2": 3, "3": 4, "4": 5, "5": 6}  # what the labels mean
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    before = (run / "config.yaml").read_bytes()
    with caplog.at_level(logging.WARNING, logger="seglab"):
        loaded = load_run(run, device="cpu")
        load_run(run, device="cpu")
    assert loaded.cfg == cfg and loaded.cfg.data.coco.category_map == cfg.data.coco.category_map
    notes = [r.getMessage() for r in caplog.records if "older seglab" in r.getMessage()]
    assert len(notes) == 1 and "data.category_map -> data.coco.category_map" in notes[0]
    assert "option(s) of other layouts or tasks dropped" in notes[0]
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0 and '"mIoU"' in capsys.readouterr().out
    assert main(["predict", str(run), "--device", "cpu", "--out", str(tmp_path / "sub.csv")]) == 0
    assert (tmp_path / "sub.csv").is_file()
    (run / "checkpoints" / "last.ckpt").write_bytes((run / "checkpoints" / "best.ckpt").read_bytes())
    resumed, done = resume_config(run, ["trainer.max_epochs=2"])
    assert done == 0 and resumed.trainer.max_epochs == 2 and resumed.data.coco == cfg.data.coco
    assert (run / "config.yaml").read_bytes() == before  # an input is never written over by reading it


def test_a_user_config_with_the_old_keys_is_refused_not_aliased(tmp_path):
    old = older_seglab_wrote(load_config(ROOT / "configs" / "demo_multilabel.yaml"))
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}: data.json_dir: unknown key; it is an option of the polygons data format now: data.polygons.json_dir" in str(e.value)
    migrated = load_config(path, saved=True)  # what a run folder's copy of it gets
    assert migrated.data.polygons.image_dir == "DCM" and migrated.task == "multilabel"
