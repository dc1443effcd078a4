import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seglab.cli import main
from seglab.config import Config, load_config, to_yaml
from seglab.config.reference import markdown_reference
from seglab.core.training import config_problems
from seglab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_validate():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        cfg = load_config(path)
        assert isinstance(cfg, Config), path
        assert config_problems(cfg) == [], path  # the preflight's config checks pass too


def test_unknown_key_names_the_path_and_suggests(tmp_path):
    path = write(tmp_path, "data:\n  bach_size: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: data.bach_size: unknown key; did you mean 'batch_size'?"


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer: unknown key; did you mean 'optim'\?"):
        load_config(write(tmp_path, "optimizer: {lr: 0.1}\n"))


@pytest.mark.parametrize("text, message", [
    ("data: {batch_size: 0}\n", "data.batch_size: Input should be greater than 0"),
    ("data: {batch_size: many}\n", "data.batch_size: Input should be a valid integer"),
    ("optim: {lr: -0.1}\n", "optim.lr: Input should be greater than 0 (got -0.1)"),
    ("data: {paint_order: random}\n", "data.paint_order"),
    ("trainer: {max_epochs: 0}\n", "trainer.max_epochs"),
    ("optim: {name: adamm}\n", "optim.name: unknown optimizer 'adamm'"),
    ("schedule: {name: cosin}\n", "schedule.name: unknown schedule 'cosin'"),
])
def test_wrong_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)


# Loss, transform, batch-augment and model names need the training stack: the config
# loads (torch-free), and the preflight's config_problems (also run by `seglab config`,
# `seglab data validate` and `train`) names the key.
PREFLIGHT_CASES = [
    ("loss: [{name: focall}]\n", "loss[0].name: unknown loss 'focall'; did you mean 'focal'?"),
    ("loss: [{name: focal, gama: 1}]\n", "loss[0].gama: unknown parameter for loss 'focal'; did you mean 'gamma'?"),
    ("loss: [{name: bce}]\n", "loss[0]: loss 'bce' does not take class-index targets"),
    ("augment: {train: [{name: HorizontalFlipp}]}\n", "augment.train[0]: unknown albumentations transform 'HorizontalFlipp'; did you mean 'HorizontalFlip'?"),
    ("augment: {train: [{name: HorizontalFlip, prob: 0.5}]}\n", "augment.train[0].prob: unknown parameter for HorizontalFlip"),
    ("augment: {batch: [{name: cutmixx}]}\n", "augment.batch[0]: unknown batch augmentation 'cutmixx'; did you mean 'cutmix'?"),
    ("model: {arch: Unett}\n", "model.arch: unknown model 'Unett'; did you mean 'Unet'?"),
]


@pytest.mark.parametrize("text, message", PREFLIGHT_CASES)
def test_stack_checks_run_in_the_preflight_not_at_load(tmp_path, text, message):
    cfg = load_config(write(tmp_path, text))  # loads: nothing here needs torch
    problems = config_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(message), problems


@pytest.mark.parametrize("text, message, fix", [
    ("loss: [{name: focall}]\n", "loss[0].name: unknown loss 'focall'; did you mean 'focal'?", "loss=[{name: focal}]"),
    ("model: {arch: Unett}\n", "model.arch: unknown model 'Unett'; did you mean 'Unet'?", "model.arch=Unet"),
])
def test_seglab_config_reports_preflight_problems(tmp_path, capsys, text, message, fix):
    path = write(tmp_path, text)
    assert main(["config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no config printed
    assert sum(message in line for line in captured.err.splitlines()) == 1  # the problem, on one line
    assert "Traceback" not in captured.err
    # fixed by an override: the resolved YAML is printed, exit 0
    assert main(["config", str(path), fix]) == 0
    expected = load_config(path, [fix])
    (tmp_path / "resolved.yaml").write_text(capsys.readouterr().out)
    assert load_config(tmp_path / "resolved.yaml") == expected


def test_loading_a_config_imports_no_torch(tmp_path):
    path = write(tmp_path, "task: multilabel\nloss: [{name: focall}]\nmodel: {arch: Unett}\n")
    code = ("import sys; from seglab.config import load_config; "
            f"cfg = load_config({str(path)!r}); assert cfg.eval.monitor == 'dice'; "
            "print(sorted(m for m in ('torch', 'lightning', 'albumentations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2"):
        load_config(write(tmp_path, "data:\n  - : [\n"))


def test_overrides_parse_yaml_values_and_reach_nested_keys(tmp_path):
    path = write(tmp_path, "loss: [{name: ce}, {name: dice, weight: 0.5}]\n")
    cfg = load_config(path, ["optim.lr=0.01", "data.image_size=[64, 96]", "model.encoder_weights=null", "loss.1.weight=2", "trainer.precision=bf16"])
    assert cfg.optim.lr == 0.01
    assert cfg.data.image_size == (64, 96)
    assert cfg.model.encoder_weights is None
    assert cfg.loss[1].weight == 2
    assert cfg.trainer.precision == "bf16"


def test_override_of_unknown_key_is_an_error_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.max_epoch: unknown key; did you mean 'max_epochs'\?"):
        load_config(write(tmp_path, "{}\n"), ["trainer.max_epoch=3"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(write(tmp_path, "{}\n"), ["trainer.max_epochs"])


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["optim.lr=0.005"])
    again = load_config(write(tmp_path, to_yaml(cfg)))
    assert again == cfg
    assert yaml.safe_load(to_yaml(cfg))["optim"]["lr"] == 0.005


def test_readme_config_reference_is_generated_from_the_schema():
    readme = (ROOT / "README.md").read_text()
    table = markdown_reference()
    assert "| `data.fold` |" in table and "| `optim.lr` |" in table
    assert table in readme, "README config reference is stale: run `make readme-config`"
