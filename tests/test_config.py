from pathlib import Path

import pytest
import yaml

from seglab.config import Config, load_config, markdown_reference, to_yaml
from seglab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_validate():
    for path in (ROOT / "configs").glob("*.yaml"):
        assert isinstance(load_config(path), Config), path


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
    ("loss: [{name: focall}]\n", "did you mean 'focal'"),
    ("augment: {train: [{name: HorizontalFlipp}]}\n", "augment.train[0]: unknown albumentations transform 'HorizontalFlipp'; did you mean 'HorizontalFlip'?"),
    ("augment: {train: [{name: HorizontalFlip, prob: 0.5}]}\n", "augment.train[0].prob: unknown parameter for HorizontalFlip"),
])
def test_wrong_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)


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
    assert markdown_reference() in readme, "README config reference is stale: run `make readme-config`"
