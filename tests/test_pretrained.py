"""Pretrained encoders by tag, offline: local caches built in the exact layout the hub
loaders read (HF hub: models--ORG--NAME/snapshots/<rev>/<file> + refs/main; torch hub:
hub/checkpoints/<file>), small random tensors under the real file names, HF_HUB_OFFLINE=1
and HF_HOME / TORCH_HOME in tmp dirs (tests/conftest.py sets them for every test)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from seglab.cli import main
from seglab.config import ModelConfig, config_from_dict
from seglab.errors import CheckpointError, SeglabError
from seglab.models import MODELS, build_model, model_encoder_ref
from seglab.models.pretrained import describe_origin, encoder_ref, pretrained_spec, resolve_config
from seglab.models.weights_cache import convert_keys
from tests.workflow_helpers import ROOT, task_data


def random_like(state_dict: dict) -> dict:
    torch.manual_seed(0)
    return {k: torch.randn(v.shape) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype) for k, v in state_dict.items()}


def hf_cache_entry(repo_id: str, filename: str, tensors: dict | None = None, revision: str | None = None,
                   text: str | None = None) -> Path:
    """One file of an HF hub cache at the path hf_hub_download reads; returns the file."""
    import os

    repo = Path(os.environ["HF_HOME"]) / "hub" / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "0123456789abcdef0123456789abcdef01234567"
    path = repo / "snapshots" / revision / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    if tensors is not None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        path.write_text(text or "")
    return path


def smp_resnet18_cache(mean=(0.1, 0.2, 0.3)) -> tuple[dict, Path]:
    """smp-hub/resnet18.imagenet at smp's pinned revision: config.json + model.safetensors."""
    from segmentation_models_pytorch.encoders import get_encoder

    f = pretrained_spec(encoder_ref("resnet18")).files[0]
    tensors = random_like(get_encoder("resnet18", weights=None).state_dict())
    path = hf_cache_entry(f.repo_id, "model.safetensors", tensors, f.revision)
    hf_cache_entry(f.repo_id, "config.json", revision=f.revision, text=json.dumps({"mean": list(mean), "std": [0.5, 0.5, 0.5]}))
    return tensors, path


def test_smp_encoder_weights_come_from_the_hf_cache_without_network(monkeypatch):
    tensors, path = smp_resnet18_cache()
    assert path.name == "model.safetensors" and "models--smp-hub--resnet18.imagenet" in str(path)
    # Cached: nothing may reach the network even with HF_HUB_OFFLINE unset.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("seglab.models.pretrained._download", lambda f: pytest.fail(f"downloaded {f}"))
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("network access"))
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="imagenet"), 3)
    assert torch.equal(model.net.encoder.conv1.weight, tensors["conv1.weight"])
    assert torch.equal(model.net.encoder.layer4[1].bn2.running_var, tensors["layer4.1.bn2.running_var"])
    line = describe_origin(model)
    assert "encoder pretrained: imagenet (HF hub smp-hub/resnet18.imagenet@" in line and "decoder random" in line
    # One input channel: RGB filters summed, as smp and timm adapt them.
    grey = build_model(ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="imagenet", in_channels=1), 3)
    assert torch.allclose(grey.net.encoder.conv1.weight, tensors["conv1.weight"].sum(1, keepdim=True))


def test_timm_encoders_and_classifier_backbones_load_timms_hub_file():
    import timm

    from seglab.tasks.classification.models import build_classifier

    spec = pretrained_spec(encoder_ref("tu-test_resnet"))
    assert spec.files[0].repo_id == "timm/test_resnet.r160_in1k" and spec.files[0].filename == "model.safetensors"
    tensors = random_like(timm.create_model("test_resnet", pretrained=False).state_dict())
    hf_cache_entry("timm/test_resnet.r160_in1k", "model.safetensors", tensors)
    seg = build_model(ModelConfig(arch="Unet", encoder="tu-test_resnet", encoder_weights="imagenet"), 2)
    key = next(k for k in tensors if k.endswith(("conv.weight", "conv1.0.weight")))
    assert torch.equal(seg.net.encoder.model.state_dict()[key], tensors[key])
    assert set(seg.weights_origin) == {"encoder"}
    cfg = config_from_dict({"task": "classification", "data": {"format": "csv", "image_size": [32, 32]},
                            "model": {"encoder": "test_resnet", "encoder_weights": "imagenet"}})
    cls = build_classifier(cfg, cfg.classification, 3)
    assert torch.equal(cls.encoder.state_dict()[key], tensors[key])
    assert "encoder pretrained: r160_in1k (HF hub timm/test_resnet.r160_in1k/model.safetensors)" in describe_origin(cls)
    assert "head random" in describe_origin(cls)


def test_classic_models_take_torchvisions_vgg_file_from_the_torch_hub_cache():
    import os

    from seglab.models.classic.segnet import SegNet

    small = SegNet(2, width=0.125)  # the real file name, tensors shaped for a small model
    tensors = {f"features.{k}": v for k, v in random_like(small.encoder.features.state_dict()).items()}
    target = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "vgg16_bn-6c64b313.pth"
    target.parent.mkdir(parents=True)
    torch.save(tensors, target)
    model = build_model(ModelConfig(arch="segnet", encoder_weights="imagenet", params={"width": 0.125}), 2)
    assert torch.equal(model.encoder.features[0].weight, tensors["features.0.weight"])
    assert set(model.weights_origin) == {"encoder"}
    grey = build_model(ModelConfig(arch="segnet", encoder_weights="imagenet", in_channels=1, params={"width": 0.125}), 2)
    assert torch.allclose(grey.encoder.features[0].weight, tensors["features.0.weight"].sum(1, keepdim=True))
    with pytest.raises(CheckpointError, match=r"vgg16-397923af\.pth.*seglab weights download tv-vgg16 --tag imagenet"):
        build_model(ModelConfig(arch="fcn8s", encoder_weights="imagenet", params={"width": 0.125}), 2)


def test_a_missing_cache_is_one_line_naming_the_file_and_both_fixes(capsys, monkeypatch):
    with pytest.raises(CheckpointError) as e:
        build_model(ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="imagenet"), 3)
    assert "\n" not in str(e.value)
    assert main(["weights", "download", "resnet34"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for part in ("smp-hub/resnet34.imagenet", "model.safetensors", "HF_HUB_OFFLINE", "seglab weights download resnet34 --tag imagenet",
                 "seglab weights import FILE --encoder resnet34"):
        assert part in err
    # Online mode but no network: the same one line, at once, no hub client retries.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("seglab.models.pretrained._download", lambda f: pytest.fail(f"tried to download {f}"))

    def no_route(address, timeout=None):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    assert main(["weights", "download", "tv-vgg16_bn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "download.pytorch.org cannot be reached" in err and "vgg16_bn-6c64b313.pth" in err
    with pytest.raises(SeglabError, match=r"'ssl2' is not a tag of smp encoder 'resnet18' \(tags: imagenet, ssl, swsl\)"):
        build_model(ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="ssl2"), 3)


def test_import_converts_torchvision_names_and_the_model_then_loads_it(tmp_path, capsys):
    import torchvision

    donor = random_like(torchvision.models.resnet18().state_dict())
    # A DataParallel-wrapped torchvision checkpoint, with its fc head: names converted, head dropped.
    torch.save({"model": {f"module.{k}": v for k, v in donor.items()}}, tmp_path / "r18.pth")
    assert main(["weights", "import", str(tmp_path / "r18.pth"), "--encoder", "resnet18"]) == 0
    model = build_model(ModelConfig(arch="FPN", encoder="resnet18", encoder_weights="imagenet"), 2)
    assert torch.equal(model.net.encoder.layer2[0].downsample[0].weight, donor["layer2.0.downsample.0.weight"])
    # The same file for timm's resnet18 under one of its tags (timm's layout: refs/main + snapshot).
    assert main(["weights", "import", str(tmp_path / "r18.pth"), "--encoder", "tu-resnet18", "--tag", "tv_in1k"]) == 0
    repo = tmp_path / "hf_home" / "hub" / "models--timm--resnet18.tv_in1k"
    assert (repo / "snapshots" / (repo / "refs" / "main").read_text() / "model.safetensors").is_file()
    tu = build_model(ModelConfig(arch="Unet", encoder="tu-resnet18", encoder_weights="tv_in1k"), 2)
    assert torch.equal(tu.net.encoder.model.conv1.weight, donor["conv1.weight"])
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert "resnet18" in listing and "tu-resnet18" in listing and "tv_in1k" in listing and "models--smp-hub--resnet18.imagenet" in listing


def test_import_refuses_a_wrong_shape_naming_the_first_mismatching_key(tmp_path, capsys):
    import timm

    donor = timm.create_model("resnet18", pretrained=False).state_dict()
    donor["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    donor["layer1.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(donor, tmp_path / "bad.pth")
    assert main(["weights", "import", str(tmp_path / "bad.pth"), "--encoder", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "conv1.weight: shape (32, 3, 7, 7) in the file, (64, 3, 7, 7) in resnet18" in err and "nothing was written" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "hf_home" / "hub").exists()


def test_key_conversion_adds_or_strips_wrapper_prefixes():
    target = {"features.0.weight": 0, "features.0.bias": 0, "classifier.0.weight": 0}
    assert set(convert_keys({"0.weight": 1, "0.bias": 1}, target)) == {"features.0.weight", "features.0.bias"}
    run_checkpoint = {"model.net.encoder.features.0.weight": 1, "model.net.decoder.x": 1}
    assert convert_keys(run_checkpoint, target) == {"features.0.weight": 1}


def test_training_records_the_source_and_checksum_and_uses_the_weights_statistics(tmp_path, caplog):
    from seglab.core.training import train

    tensors, path = smp_resnet18_cache(mean=(0.1, 0.2, 0.3))
    config, overrides = task_data("multiclass", tmp_path / "data")
    from seglab.config import load_config

    cfg = load_config(config, overrides + ["model.encoder=resnet18", "model.encoder_weights=imagenet", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "schedule.warmup_epochs=0",
                                           "trainer.progress_bar=false", "logging.loggers=[]", "logging.viz_every_n_epochs=0"])
    with caplog.at_level(logging.INFO, logger="seglab"):
        train(cfg, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    record = saved["model"]["encoder_weights_resolved"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["file"] == str(path) and "smp-hub/resnet18.imagenet" in record["source"] and record["tag"] == "imagenet"
    assert saved["augment"]["mean"] == [0.1, 0.2, 0.3]  # config.json's, since the config sets none
    assert any("encoder pretrained: imagenet" in r.getMessage() and "decoder random" in r.getMessage() for r in caplog.records)
    # Repeating the run with another file under the same tag is refused.
    repeated = load_config(tmp_path / "run" / "config.yaml")
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}, str(path))
    with pytest.raises(SeglabError, match="is not the file this config was trained with"):
        resolve_config(repeated, encoder_ref("resnet18"))


def test_a_mean_written_in_the_config_wins_over_the_encoders():
    smp_resnet18_cache(mean=(0.1, 0.2, 0.3))
    cfg = config_from_dict({"model": {"encoder": "resnet18", "encoder_weights": "imagenet"}, "augment": {"mean": [0.5, 0.5, 0.5]}})
    resolved = resolve_config(cfg, encoder_ref("resnet18"))
    assert tuple(resolved.augment.mean) == (0.5, 0.5, 0.5) and tuple(resolved.augment.std) == (0.5, 0.5, 0.5)


def test_every_registered_model_resolves_its_default_encoders_pretrained_file_offline():
    """The closing check: each `seglab models` entry, with its default encoder (classic:
    torchvision VGG), names a real hub file for `imagenet`, without network."""
    names = {}
    for arch in MODELS.names():
        spec = pretrained_spec(model_encoder_ref(ModelConfig(arch=arch)))
        names[arch] = spec.files[0].describe()
    assert names["Unet"] == "HF hub smp-hub/resnet34.imagenet@7a57b34f/model.safetensors"
    assert names["fcn8s"] == names["deeplabv1"] == "torch hub checkpoints/vgg16-397923af.pth"
    assert names["segnet"] == names["deeplabv3"] == "torch hub checkpoints/vgg16_bn-6c64b313.pth"
    for encoder in ("tu-convnext_small.fb_in22k_ft_in1k", "tu-efficientnet_b0", "timm-regnetx_002"):
        assert pretrained_spec(encoder_ref(encoder)).files[0].filename
    # Every tag of every smp encoder, and every timm pretrained model.tag, names a hub file.
    import timm
    from segmentation_models_pytorch.encoders import encoders

    for name, entry in encoders.items():
        for tag in entry["pretrained_settings"]:
            assert pretrained_spec(encoder_ref(name), tag).files[0].filename == "model.safetensors"
    hubs = {pretrained_spec(encoder_ref("tu-" + full.partition(".")[0]), full.partition(".")[2]).files[0].hub
            for full in timm.list_pretrained()}
    assert hubs == {"hf", "torch"}


def test_competition_configs_start_pretrained_and_the_demos_random():
    from seglab.config import load_config

    for name in ("trash_coco.yaml", "trash_recipe.yaml", "handbone.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.model.encoder_weights == "imagenet", name
        pretrained_spec(encoder_ref(cfg.model.encoder))
    for name in ("demo.yaml", "demo_multilabel.yaml", "demo_cls.yaml"):
        assert load_config(ROOT / "configs" / name).model.encoder_weights is None, name


def test_the_preflight_lists_weights_missing_offline_with_the_other_problems(tmp_path):
    from seglab.config import load_config
    from seglab.core.training import train
    from seglab.errors import DataValidationError

    config, overrides = task_data("multiclass", tmp_path / "data")
    cfg = load_config(config, overrides + ["model.encoder=resnet18", "model.encoder_weights=imagenet"])
    with pytest.raises(DataValidationError, match=r"smp-hub/resnet18\.imagenet.*seglab weights download resnet18"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
