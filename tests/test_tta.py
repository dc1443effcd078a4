"""Test-time augmentation: views, averaging in probability space, config and CLI."""

import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from seglab.cli import main
from seglab.config import Config, TTAConfig
from seglab.core.module import LabModule
from seglab.core.run import Run, load_run
from seglab.task import get_task
from seglab.data import resolve_labels
from seglab.errors import ConfigError
from seglab.inference.ensemble import Member
from seglab.inference.predict import evaluate, member_probs, predictions
from seglab.inference.tta import parse_tta, tta_probs
from seglab.kinds import target_kind
from tests.workflow_helpers import constructed_run, tiny_config


def symmetric_conv_net(num_classes: int) -> nn.Module:
    """3x3 convs whose kernels are symmetric under both flips, with a pointwise head:
    a model whose output flips exactly with its input."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))
    with torch.no_grad():
        w = net[0].weight
        w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)
    return net


@pytest.fixture
def equivariant_run(synth_root, tmp_path):
    """A loaded run (no folder needed) whose model is flip-equivariant."""
    cfg = tiny_config(synth_root)
    labels = resolve_labels(cfg)
    module = LabModule(cfg, labels)
    module.model = symmetric_conv_net(labels.num_classes)
    return Run(tmp_path, "best", cfg, labels, get_task(cfg.task), module.eval())


def test_flip_tta_of_a_flip_equivariant_model_equals_the_plain_prediction(equivariant_run):
    images = torch.randint(0, 256, (2, 3, 24, 32), dtype=torch.uint8)
    plain = member_probs(Member(equivariant_run), images)
    tta = member_probs(Member(equivariant_run, tta=TTAConfig(flips=["h", "v", "hv"])), images)
    with torch.no_grad():
        assert torch.allclose(plain, equivariant_run.module(images).softmax(1), atol=1e-6)  # the run's own TTA is none
        # the views really differ: the model is not invariant, only equivariant
        assert not torch.allclose(plain, plain.flip(-1), atol=1e-3)
    assert tta.shape == plain.shape
    torch.testing.assert_close(tta, plain, atol=1e-6, rtol=1e-5)

DENSE = target_kind("class_map")


def test_flip_tta_averages_the_flipped_back_views():
    """A model that is not flip-equivariant: TTA is the mean of the plain view and the
    prediction on the flipped image, flipped back."""
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16)

    def prob_fn(x):  # class 0 probability grows to the right, whatever the image
        p0 = ramp.expand(x.shape[0], 1, x.shape[2], 16) * (x[:, :1].float() / 255)
        return torch.cat([p0, 1 - p0], 1)

    images = torch.randint(0, 256, (1, 3, 8, 16), dtype=torch.uint8)
    expected = (prob_fn(images) + prob_fn(images.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(tta_probs(prob_fn, images, TTAConfig(flips=["h"]), DENSE), expected)


def test_multi_scale_views_are_resized_back():
    sizes = []

    def prob_fn(x):
        sizes.append(tuple(x.shape[-2:]))
        return torch.full((x.shape[0], 3, *x.shape[-2:]), 1 / 3)

    images = torch.zeros(2, 3, 64, 48, dtype=torch.uint8)
    out = tta_probs(prob_fn, images, TTAConfig(flips=["h"], scales=[0.75, 1.0, 1.25]), DENSE)
    assert sizes == [(48, 36), (48, 36), (64, 48), (64, 48), (80, 60), (80, 60)]
    assert out.shape == (2, 3, 64, 48)
    torch.testing.assert_close(out, torch.full_like(out, 1 / 3))


def test_no_tta_is_the_plain_function():
    calls = []
    prob_fn = lambda x: calls.append(1) or torch.ones(1, 2, 4, 4)  # noqa: E731
    tta_probs(prob_fn, torch.zeros(1, 3, 4, 4), TTAConfig(), DENSE)
    tta_probs(prob_fn, torch.zeros(1, 3, 4, 4), None, DENSE)
    assert len(calls) == 2 and not TTAConfig().enabled and TTAConfig(scales=[0.5]).enabled


def test_tta_config_and_cli_text():
    assert parse_tta("h,v", "0.75,1,1.25").views()[:3] == [(0.75, None), (0.75, "h"), (0.75, "v")]
    assert parse_tta(None, "1.5", TTAConfig(flips=["h"])).flips == ["h"]
    assert parse_tta("none", None, TTAConfig(flips=["h"])).flips == []
    assert parse_tta("h", "2", off=True) == TTAConfig()
    with pytest.raises(ConfigError, match="--flips"):
        parse_tta("x", None)
    with pytest.raises(ConfigError, match="--scales"):
        parse_tta(None, "1,x")
    for bad in ({"tta": {"flips": ["d"]}}, {"tta": {"scales": [0]}}, {"tta": {"scales": []}}, {"tta": {"flips": ["h", "h"]}}):
        with pytest.raises(ValidationError, match="tta"):
            Config.model_validate(bad)


def _evaluate(run_dir, tta=None) -> dict:
    return evaluate([Member(load_run(run_dir, device="cpu"), tta=tta)], "val")[0]


def test_evaluate_uses_the_run_tta_section_and_the_cli_flags(synth_root, tmp_path, capsys):
    plain = constructed_run(tmp_path / "plain", tiny_config(synth_root))
    with_tta = constructed_run(tmp_path / "tta", tiny_config(synth_root, "tta.flips=[h]"))  # same seed, same weights
    a = _evaluate(plain)
    b = _evaluate(with_tta)
    c = _evaluate(plain, tta=TTAConfig(flips=["h"]))
    assert a["tta"] == TTAConfig().model_dump() and b["tta"] == c["tta"] == TTAConfig(flips=["h"]).model_dump()
    assert b["mIoU"] == pytest.approx(c["mIoU"], abs=1e-12)
    assert b["per_class_iou"] == c["per_class_iou"]
    assert _evaluate(with_tta, tta=TTAConfig())["mIoU"] == pytest.approx(a["mIoU"], abs=1e-12)
    capsys.readouterr()
    assert main(["evaluate", str(plain), "--flips", "h", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["mIoU"] == pytest.approx(c["mIoU"], abs=1e-12)
    assert main(["evaluate", str(with_tta), "--no-tta", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["mIoU"] == pytest.approx(a["mIoU"], abs=1e-12)

    out = tmp_path / "sub.csv"
    assert main(["predict", str(plain), "--out", str(out), "--flips", "h", "--scales", "1,0.5", "--device", "cpu"]) == 0
    assert len(out.read_text().splitlines()) == 1 + 4
    tta = TTAConfig(flips=["h"], scales=[1.0, 0.5])
    expected = list(predictions([Member(load_run(plain, device="cpu"), tta=tta)], "test"))
    untta = list(predictions([Member(load_run(plain, device="cpu"))], "test"))
    assert any(not torch.equal(p.probs, q.probs) for p, q in zip(expected, untta))  # the flags changed what was predicted
    import cv2

    rows = out.read_text().splitlines()[1:]
    assert len(expected) == len(rows) == 4
    for row, p in zip(rows, expected):
        name, values = row.split(",")
        small = cv2.resize(p.output, (128, 128), interpolation=cv2.INTER_NEAREST)
        assert name == p.id and values == " ".join(map(str, small.ravel().tolist()))


def test_bad_tta_value_in_config_names_the_key(tmp_path):
    from seglab.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("tta: {flips: [diagonal]}\n")
    with pytest.raises(ConfigError, match=r"tta\.flips\.0"):
        load_config(path)
