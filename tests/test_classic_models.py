"""The classic model zoo: sizes, parts, trainability and VGG weight loading (tiny widths)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

import seglab.models.classic  # noqa: F401  (registers the models)
from seglab.errors import CheckpointError, ConfigError
from seglab.models.classic import CLASSIC_MODELS
from seglab.models.registry import MODELS

TINY = 1 / 16
BN_MODELS = {"deconvnet", "segnet", "deeplabv3"}
# Models that turn torchvision's fc6/fc7 Linear weights into convs.
FC_MODELS = {"fcn32s", "fcn16s", "fcn8s", "deconvnet", "deeplabv1"}
DROPOUT_MODELS = {"fcn32s", "fcn16s", "fcn8s", "deeplabv1", "deeplabv2"}


def build(name: str, num_classes: int = 3, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.get(name)(num_classes, width=TINY, **kwargs)


def build_full_zeroed(name: str) -> torch.nn.Module:
    """A paper-size model with all-zero weights: built on the meta device so that 250M
    parameters skip their random init; loaded weights then visibly replace the zeros."""
    with torch.device("meta"):
        model = MODELS.get(name)(3)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.zero_()
    return model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The tiny models are latency-bound: on a 2-core shared CPU, thread hand-offs cost
    # more than they gain and make the timings erratic.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_every_classic_model_is_registered():
    assert set(CLASSIC_MODELS) <= set(MODELS.names())


@pytest.mark.parametrize("name", CLASSIC_MODELS)
def test_output_matches_odd_and_even_input_sizes(name):
    model = build(name, num_classes=5).eval()
    with torch.no_grad():
        for shape in [(1, 3, 97, 131), (2, 3, 64, 64), (1, 3, 32, 45)]:
            out = model(torch.randn(shape))
            assert out.shape == (shape[0], 5, *shape[2:])
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["fcn8s", "segnet", "deeplabv3"])
def test_in_channels_is_respected(name):
    model = MODELS.get(name)(2, in_channels=1, width=TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 40, 50)).shape == (1, 2, 40, 50)


@pytest.mark.parametrize("name", CLASSIC_MODELS)
def test_parts_hold_every_parameter_exactly_once(name):
    model = build(name)
    parts = model.parts()
    assert set(parts) <= {"encoder", "neck", "decoder", "head"}
    ids = [id(p) for part in parts.values() for p in part.parameters()]
    assert len(ids) == len(set(ids)), "a parameter belongs to two parts"
    assert set(ids) == {id(p) for p in model.parameters()}


def test_width_scales_channels():
    small = sum(p.numel() for p in build("segnet").parameters())
    torch.manual_seed(0)
    larger = sum(p.numel() for p in MODELS.get("segnet")(3, width=1 / 8).parameters())
    assert 3 * small < larger  # conv weights grow with width squared


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="dropuot"):
        MODELS.get("fcn8s")(3, width=TINY, dropuot=0.1)
    with pytest.raises(ConfigError, match="output_stride"):
        MODELS.get("deeplabv3")(3, width=TINY, output_stride=32)


def test_deeplabv3_output_stride_8():
    model = build("deeplabv3", output_stride=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 3, 50, 70)


def test_deeplabv3_trains_with_batch_of_one():
    # The image-pooling branch sees one value per channel; plain BatchNorm would raise.
    model = build("deeplabv3").train()
    out = model(torch.randn(1, 3, 48, 48))
    out.sum().backward()
    assert model.aspp.branches[-1].conv.weight.grad.abs().sum() > 0


def blob_batch(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images whose classes (background, a disc, a square) differ in colour and place."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(2, size, size, dtype=torch.long)
    for i, (cy, cx) in enumerate([(20, 22), (40, 44)]):
        masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2] = 1
        sy, sx = size - cy, size - cx
        masks[i][(abs(yy - sy) < size // 8) & (abs(xx - sx) < size // 8)] = 2
    colours = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]])
    images = colours[masks].permute(0, 3, 1, 2) + 0.3 * torch.randn(2, 3, size, size, generator=g)
    return images, masks


@pytest.mark.parametrize("name", CLASSIC_MODELS)
def test_overfits_one_tiny_batch(name):
    images, masks = blob_batch(48)
    # Without dropout (where a model has it) the fit is a clean capacity check; over
    # seeds 0-2 every model ends at 0.13-0.40 of its starting loss with these settings.
    options = {"dropout": 0.0} if name in DROPOUT_MODELS else {}
    model = build(name, **options).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), masks)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.fixture(scope="module")
def vgg_state_dicts() -> dict[bool, dict[str, torch.Tensor]]:
    """Random torchvision VGG16 / VGG16-BN weights at full width (no download)."""
    torch.manual_seed(1)
    plain = torchvision.models.vgg16(weights=None).state_dict()
    with_bn = torchvision.models.vgg16_bn(weights=None).state_dict()
    return {False: plain, True: with_bn}


@pytest.mark.parametrize("name", CLASSIC_MODELS)
def test_loads_torchvision_vgg_weights(name, vgg_state_dicts):
    model = build_full_zeroed(name)
    state = vgg_state_dicts[name in BN_MODELS]
    missing, unexpected = model.load_encoder_state_dict(state)
    assert missing == []
    assert {"classifier.6.weight", "classifier.6.bias"} <= set(unexpected)
    assert ("classifier.0.weight" in unexpected) == (name not in FC_MODELS)
    model_sd = model.encoder.features.state_dict()
    for key, value in state.items():
        if key.startswith("features."):
            assert torch.equal(model_sd[key.removeprefix("features.")], value), key
    if name in FC_MODELS:
        fc6 = model.neck.fc6.weight
        source = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
        if name == "deeplabv1":  # DeepLab's decimation: every 4th filter, taps 0/3/6
            source = source[::4, :, ::3, ::3]
        assert torch.equal(fc6, source)
        assert torch.equal(model.neck.fc7.bias, state["classifier.3.bias"][:: 4096 // fc6.shape[0]])


def test_features_only_dict_reports_fc_as_missing(vgg_state_dicts):
    model = build_full_zeroed("fcn32s")
    features = {k.removeprefix("features."): v for k, v in vgg_state_dicts[False].items() if k.startswith("features.")}
    missing, unexpected = model.load_encoder_state_dict(features)
    assert unexpected == []
    assert sorted(missing) == ["classifier.0.bias", "classifier.0.weight", "classifier.3.bias", "classifier.3.weight"]
    assert torch.equal(model.encoder.features[28].weight, features["28.weight"])


def test_shape_mismatch_raises_and_changes_nothing(vgg_state_dicts):
    model = build("fcn8s")
    before = model.encoder.features[0].weight.clone()
    with pytest.raises(CheckpointError, match=r"features\.\d+\.weight.*\(64, 3, 3, 3\).*\(4, 3, 3, 3\)"):
        model.load_encoder_state_dict(vgg_state_dicts[False])
    assert torch.equal(model.encoder.features[0].weight, before)


def test_fc_that_cannot_become_the_conv_raises(vgg_state_dicts):
    model = build_full_zeroed("fcn32s")
    state = dict(vgg_state_dicts[False])
    state["classifier.0.weight"] = torch.zeros(4096, 1000)
    with pytest.raises(CheckpointError, match=r"classifier\.0\.weight.*\(4096, 1000\).*\(4096, 512, 7, 7\)"):
        model.load_encoder_state_dict(state)


def test_bn_and_plain_checkpoints_are_not_confused(vgg_state_dicts):
    with pytest.raises(CheckpointError, match="vgg16_bn"):
        build_full_zeroed("segnet").load_encoder_state_dict(vgg_state_dicts[False])
    with pytest.raises(CheckpointError, match="vgg16_bn"):
        build_full_zeroed("fcn8s").load_encoder_state_dict(vgg_state_dicts[True])
