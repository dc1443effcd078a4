"""Loading never runs code: checkpoints are read weights-only, configs with safe YAML.

Two kinds of test: the package source is scanned (every `torch.load` passes
`weights_only=True`; no unsafe YAML loader, pickle, eval or exec), and files carrying a
code payload are fed to every loading path to check they are refused, not run.
"""

import ast
import os
from pathlib import Path

import pytest
import torch

from seglab.config import load_config
from seglab.errors import CheckpointError, ConfigError
from seglab.models.weights import read_state_dict
from seglab.core.checkpoints import AtomicCheckpointIO, load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "seglab").rglob("*.py"))  # the package; tests may reload files they made themselves


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_every_torch_load_is_weights_only():
    found = 0
    for path in SOURCES:
        for node, name in calls(path):
            if name == "torch.load":
                found += 1
                flags = {k.arg: k.value for k in node.keywords}
                assert isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True, (
                    f"{path.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True"
                )
    assert found >= 2  # the scan does see the package's loads (weights files, checkpoints)


def _safe_yaml_loader(path: Path, node: ast.Call) -> bool:
    """`yaml.load(..., Loader=X)` is safe when X is yaml's SafeLoader or a subclass of it
    (seglab's config reader uses one that also refuses repeated keys)."""
    import importlib

    import yaml

    loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
    if loader is None:
        return False
    value = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    for part in ast.unparse(loader).split("."):  # a name or dotted name looked up in the module: `X`, `yaml.SafeLoader`
        value = getattr(value, part, None)
    return isinstance(value, type) and issubclass(value, yaml.SafeLoader)


def test_no_code_evaluating_loaders_in_the_package():
    banned = {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
              "pickle.load", "pickle.loads", "eval", "exec", "torch.jit.load", "dill.load"}
    safe_yaml_loads = 0
    for path in SOURCES:
        for node, name in calls(path):
            if name == "yaml.load" and _safe_yaml_loader(path, node):
                safe_yaml_loads += 1
                continue
            assert name not in banned, f"{path.relative_to(ROOT)}:{node.lineno}: {name}() can run code from a file"
    assert safe_yaml_loads >= 1  # the config reader's yaml.load (with a SafeLoader subclass) was seen and judged


class Payload:
    """Unpickling this runs os.mkdir(marker): the stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_checkpoint_with_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload(marker)}, path)
    loaders = [load_checkpoint_file, AtomicCheckpointIO().load_checkpoint, read_state_dict]  # evaluate/predict, resume, model.weights
    for load in loaders:
        with pytest.raises(CheckpointError) as e:
            load(path)
        assert str(e.value).startswith(f"{path}: cannot load") and "weights-only" in str(e.value)
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_with_code(tmp_path):
    from seglab.data.synth.coco import make_coco_dataset
    from seglab.core.training import train

    make_coco_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, size=32, seed=0)
    marker = tmp_path / "code-ran"
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"seglab": {}, "extra": Payload(marker)}, last)
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.root={tmp_path / 'data'}"])
    with pytest.raises(CheckpointError, match=rf"{last}: cannot load checkpoint weights-only \(UnpicklingError"):
        train(cfg, tmp_path / "run", resume=True)
    assert not marker.exists()


def test_config_yaml_cannot_run_code(tmp_path):
    marker = tmp_path / "code-ran"
    config = tmp_path / "c.yaml"
    config.write_text(f"name: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(ConfigError, match=r"c.yaml: invalid YAML at line 1"):
        load_config(config)
    plain = tmp_path / "plain.yaml"
    plain.write_text("{}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(plain, [f"name=!!python/object/apply:os.mkdir ['{marker}']"])
    assert not marker.exists()
