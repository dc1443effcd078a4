"""The smp side of the model zoo, the registry, and per-part optimisation on real models."""

import pytest
import torch

from seglab.config import ModelConfig, OptimConfig
from seglab.errors import CheckpointError, ConfigError
from seglab.models import MODELS, build_model, describe_models
from seglab.models.smp_models import SMP_ARCHS
from seglab.optim import build_optimizer

ENCODER = "resnet18"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smp(arch: str, classes: int = 3):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, encoder=ENCODER), classes)


def test_registry_has_every_smp_and_classic_model():
    names = set(MODELS.names())
    assert set(SMP_ARCHS) <= names
    assert {"fcn32s", "fcn16s", "fcn8s", "deconvnet", "segnet", "deeplabv1", "deeplabv2", "deeplabv3"} <= names


@pytest.mark.parametrize("arch", SMP_ARCHS)
def test_smp_models_take_any_size_and_cover_their_parameters(arch):
    model = smp(arch).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131)).shape == (1, 3, 97, 131)
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3, 64, 64)
    ids = [id(p) for part in model.parts().values() for p in part.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


# Three representative architectures run by default; the rest with `-m slow` (minutes on 2 cores).
FAST_OVERFIT = ("Unet", "FPN", "DeepLabV3Plus")


@pytest.mark.parametrize("arch", [a if a in FAST_OVERFIT else pytest.param(a, marks=pytest.mark.slow) for a in SMP_ARCHS])
def test_smp_models_overfit_one_tiny_batch(arch):
    model = smp(arch, classes=3).train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 10:30, 10:40] = 1
    y[1, 40:60, 5:25] = 2
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (arch, losses[0], losses[-1])


def test_unknown_arch_and_encoder_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model 'Uent'; did you mean 'Unet'"):
        build_model(ModelConfig(arch="Uent"), 3)
    with pytest.raises(ConfigError, match="cannot build 'Unet' with encoder 'resnet999'"):
        build_model(ModelConfig(arch="Unet", encoder="resnet999"), 3)


def test_encoder_weights_from_a_torchvision_state_dict_report_missing_keys(tmp_path, caplog):
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    state = tv.state_dict()
    state.pop("layer4.1.bn2.weight")  # one key missing
    torch.save(state, tmp_path / "r18.pth")
    caplog.set_level("INFO", logger="seglab")
    model = build_model(ModelConfig(arch="Unet", encoder=ENCODER, encoder_weights=str(tmp_path / "r18.pth")), 3)
    enc = model.parts()["encoder"].state_dict()
    assert torch.equal(enc["conv1.weight"], state["conv1.weight"])
    assert "1 missing" in caplog.text and "layer4.1.bn2.weight" in caplog.text
    assert "unexpected" in caplog.text  # torchvision's fc.* has no place in an encoder


def test_whole_model_weights_round_trip_and_shape_mismatch_is_an_error(tmp_path):
    model = smp("FPN", classes=3)
    torch.save(model.state_dict(), tmp_path / "fpn.pth")
    again = build_model(ModelConfig(arch="FPN", encoder=ENCODER, weights=str(tmp_path / "fpn.pth")), 3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(CheckpointError, match=r"segmentation_head.0.weight: shape \(3, .*\) in the file, \(5, .*\) in the model"):
        build_model(ModelConfig(arch="FPN", encoder=ENCODER, weights=str(tmp_path / "fpn.pth")), 5)


def test_encoder_only_param_group_is_the_course_bug_and_raises():
    model = smp("Unet")
    cfg = OptimConfig(param_groups=[{"parts": ["encoder"], "lr": 1e-4}])
    with pytest.raises(ConfigError, match=r"no group \(parts: decoder, head\)"):
        build_optimizer(model, cfg)


def test_encoder_lr_and_freeze_on_a_real_model():
    model = smp("Unet")
    opt = build_optimizer(model, OptimConfig(lr=1e-3, encoder_lr=1e-4))
    by_id = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(by_id[id(p)] == 1e-4 for p in model.parts()["encoder"].parameters())
    assert all(by_id[id(p)] == 1e-3 for p in model.parts()["decoder"].parameters())
    frozen = build_optimizer(smp("Unet"), OptimConfig(freeze=["encoder"]))
    n_params = sum(p.numel() for g in frozen.param_groups for p in g["params"])
    assert n_params == sum(p.numel() for k in ("decoder", "head") for p in model.parts()[k].parameters())


def test_describe_models_counts_parameters_by_part():
    rows = {r["name"]: r for r in describe_models(num_classes=4, encoder=ENCODER, width=1 / 16)}
    unet = rows["Unet"]
    assert unet["params"] == sum(unet["parts"].values())
    assert unet["parts"]["encoder"] == sum(p.numel() for p in smp("Unet", 4).parts()["encoder"].parameters())
    assert set(rows["fcn8s"]["parts"]) >= {"encoder", "head"}


def test_describe_models_yields_each_row_as_soon_as_its_model_is_built(monkeypatch):
    import seglab.models as models

    built = []
    original = models.build_model
    monkeypatch.setattr(models, "build_model", lambda cfg, n: built.append(cfg.arch) or original(cfg, n))
    first = next(describe_models(num_classes=4, encoder=ENCODER, width=1 / 16))
    assert built == [first["name"]]  # `seglab models` prints it before building the others
