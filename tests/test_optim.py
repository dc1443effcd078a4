import math

import pytest
import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from seglab.config import OptimConfig, ScheduleConfig
from seglab.config.schema import OPTIMIZER_NAMES, SCHEDULE_NAMES
from seglab.errors import ConfigError
from seglab.optim import (
    OPTIMIZERS, SCHEDULES, build_optimizer, build_param_groups, build_scheduler,
    check_optimizer_covers, freeze_parts, keep_frozen_norms_in_eval,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(4, 2, 1)

    def parts(self):
        return {"encoder": self.encoder, "decoder": self.decoder, "head": self.head}

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x)))


def numel(module):
    return sum(p.numel() for p in module.parameters())


def group_of(optimizer, param):
    return [g for g in optimizer.param_groups if any(p is param for p in g["params"])]


# ---------------------------------------------------------------- groups


def test_seed_001_encoder_only_group_is_an_error():
    model = Tiny()
    cfg = OptimConfig(name="adam", param_groups=[{"parts": ["encoder"], "lr": 1e-4}])
    with pytest.raises(ConfigError) as err:
        build_optimizer(model, cfg)
    msg = str(err.value)
    assert f"leave {numel(model.decoder) + numel(model.head):,} trainable parameters in no group" in msg
    assert "(parts: decoder, head)" in msg and "parts: [rest]" in msg


def test_part_in_two_groups_and_unknown_part_are_errors():
    with pytest.raises(ConfigError, match="part 'decoder' is in groups 0 and 1"):
        build_param_groups(Tiny(), OptimConfig(param_groups=[{"parts": ["decoder"]}, {"parts": ["decoder", "rest"]}]))
    with pytest.raises(ConfigError, match=r"unknown part\(s\) 'decodr' \(model parts: encoder, decoder, head, rest\)"):
        build_param_groups(Tiny(), OptimConfig(param_groups=[{"parts": ["decodr"]}, {"parts": ["rest"]}]))


def test_encoder_lr_gives_encoder_its_lr_and_everything_else_optim_lr():
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(lr=1e-3, encoder_lr=1e-5))
    for name, part in model.parts().items():
        for p in part.parameters():
            (group,) = group_of(opt, p)
            assert group["lr"] == (1e-5 if name == "encoder" else 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_explicit_groups_rest_and_weight_decay_split():
    model = Tiny()
    cfg = OptimConfig(weight_decay=0.05, no_weight_decay_on_norm_and_bias=True,
                      param_groups=[{"parts": ["head"], "lr": 0.1, "weight_decay": 0.5}, {"parts": ["rest"]}])
    groups = build_param_groups(model, cfg)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"head", "head/no_decay", "rest", "rest/no_decay"}
    assert by_name["head"]["params"] == [model.head.weight] and by_name["head"]["weight_decay"] == 0.5
    assert by_name["head/no_decay"]["params"] == [model.head.bias] and by_name["head/no_decay"]["lr"] == 0.1
    assert all(p.ndim <= 1 for p in by_name["rest/no_decay"]["params"]) and by_name["rest/no_decay"]["weight_decay"] == 0
    assert by_name["rest"]["weight_decay"] == 0.05 and by_name["rest"]["lr"] == 1e-3


def test_config_errors_name_the_field():
    class Outer(BaseModel):
        optim: OptimConfig

    with pytest.raises(ValidationError) as err:
        Outer(optim={"lr": -1})
    assert err.value.errors()[0]["loc"] == ("optim", "lr")
    with pytest.raises(ValidationError, match="not both"):
        OptimConfig(encoder_lr=1e-4, param_groups=[{"parts": ["rest"]}])
    with pytest.raises(ValidationError, match="unknown optimizer 'adamx'"):
        OptimConfig(name="adamx")
    with pytest.raises(ValidationError):
        OptimConfig(nosuchknob=1)


def test_optimizer_coverage_check_catches_a_wrapper_that_drops_parameters():
    model = Tiny()
    partial = torch.optim.Adam(model.encoder.parameters())
    with pytest.raises(ConfigError, match="misses .* parameters \\(parts: decoder, head\\)"):
        check_optimizer_covers(model, partial)
    check_optimizer_covers(model, torch.optim.Adam(model.parameters()))


# ---------------------------------------------------------------- freezing


def test_freeze_removes_params_and_keeps_frozen_batchnorm_in_eval():
    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(freeze=["encoder"], encoder_lr=1e-5))
    assert not any(p.requires_grad for p in model.encoder.parameters())
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in [*model.decoder.parameters(), *model.head.parameters()]}
    assert [g["name"] for g in opt.param_groups] == ["rest"]  # the encoder group is empty, so dropped

    model.train()
    keep_frozen_norms_in_eval(model, ["encoder"])
    frozen_bn, live_bn = model.encoder[1], model.decoder[1]
    before_frozen, before_live = frozen_bn.running_mean.clone(), live_bn.running_mean.clone()
    model(torch.randn(2, 3, 8, 8) + 3)
    assert torch.equal(frozen_bn.running_mean, before_frozen) and not frozen_bn.training
    assert not torch.equal(live_bn.running_mean, before_live) and live_bn.training


def test_freeze_unknown_part_lists_model_parts():
    with pytest.raises(ConfigError, match=r"optim.freeze: unknown part\(s\) 'backbone' \(model parts: encoder, decoder, head\)"):
        freeze_parts(Tiny(), ["backbone"])


# ---------------------------------------------------------------- optimisers


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_builds_and_steps(name):
    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(name=name, lr=1e-2, lookahead={"k": 2}))
    assert not opt.defaults.get("fused")  # auto: parameters are on the CPU
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_fused_true_on_an_optimizer_without_a_fused_kernel_is_an_error():
    with pytest.raises(ConfigError, match="AdamP has no fused"):
        build_optimizer(Tiny(), OptimConfig(name="adamp", fused=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_auto_on_cuda():
    opt = build_optimizer(Tiny().cuda(), OptimConfig(name="adamw"))
    assert opt.defaults["fused"] is True


def test_lookahead_pulls_fast_weights_back_alpha_of_the_way():
    # f(w) = w^2 / 2 with plain SGD: every fast step multiplies w by (1 - lr).
    w = nn.Parameter(torch.tensor([1.0]))
    model = nn.Module()
    model.w = w
    model.parts = lambda: {"head": model}
    lr, k, alpha = 0.1, 3, 0.5
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=lr, momentum=0, weight_decay=0, lookahead={"k": k, "alpha": alpha}))
    values = []
    for _ in range(2 * k):
        opt.zero_grad()
        (0.5 * w.square()).sum().backward()
        opt.step()
        values.append(w.item())
    # timm anchors the slow weights at the first sync (after k steps); the next sync moves them alpha of the way.
    slow = (1 - lr) ** k
    assert values[k - 1] == pytest.approx(slow)
    assert values[2 * k - 1] == pytest.approx(slow + alpha * (slow * (1 - lr) ** k - slow))


# ---------------------------------------------------------------- schedules


def lr_curve(cfg, steps, lrs=(1.0,), spe=10, epochs=10, metrics=None):
    params = [nn.Parameter(torch.zeros(1)) for _ in lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=1.0)
    built = build_scheduler(opt, ScheduleConfig(**cfg), spe, epochs, "mIoU")
    curve = []
    for step in range(max(steps) + 1):
        if step in steps:
            curve.append([g["lr"] for g in opt.param_groups] if len(lrs) > 1 else opt.param_groups[0]["lr"])
        opt.step()
        built["scheduler"].step(*([metrics[step]] if metrics else []))
    return built, curve


def cos(x):
    return 0.5 * (1 + math.cos(math.pi * x))


def test_cosine_with_warmup_and_floor():
    # 100 steps, 10 of warmup from 0.01, then cosine over 90 steps to a 0.1 floor.
    built, curve = lr_curve({"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.1}, [0, 5, 10, 55, 99, 100])
    assert built["interval"] == "step" and built["monitor"] == "val/mIoU"
    assert curve == pytest.approx([0.01, 0.01 + 0.99 * 0.5, 1.0, 0.1 + 0.9 * 0.5, 0.1 + 0.9 * cos(89 / 90), 0.1])


def test_cosine_keeps_per_group_lr_ratio():
    _, curve = lr_curve({"name": "cosine", "warmup_epochs": 1}, [0, 30, 80], lrs=(1e-4, 1e-3))
    for encoder, rest in curve:
        assert rest / encoder == pytest.approx(10)
    assert curve[1][1] == pytest.approx(1e-3 * cos(20 / 90))


def test_poly():
    _, curve = lr_curve({"name": "poly", "power": 2.0}, [0, 50, 75, 100])
    assert curve == pytest.approx([1.0, 0.25, 0.0625, 0.0])


def test_step_and_multistep_count_epochs_from_the_start():
    _, curve = lr_curve({"name": "step", "step_size_epochs": 3, "gamma": 0.5, "warmup_epochs": 0.5}, [0, 29, 30, 60])
    assert curve == pytest.approx([0.01, 0.5 ** 0, 0.5, 0.25])
    _, curve = lr_curve({"name": "multistep", "milestones_epochs": [7, 2.5], "gamma": 0.1}, [24, 25, 69, 70])
    assert curve == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_cosine_restarts():
    _, curve = lr_curve({"name": "cosine_restarts", "restart_epochs": 2}, [0, 10, 19, 20, 30])
    assert curve == pytest.approx([1.0, 0.5, cos(19 / 20), 1.0, 0.5])
    # restart_mult 2: cycles of 20, 40 steps after a 10-step warmup -> restarts at steps 30 and 70.
    _, curve = lr_curve({"name": "cosine_restarts", "restart_epochs": 2, "restart_mult": 2, "warmup_epochs": 1}, [30, 50, 70])
    assert curve == pytest.approx([1.0, 0.5, 1.0])


def test_onecycle():
    # peak 2.0, warmup 10% of 100 steps from 2.0 * 0.01, then cosine down to start / 1e4.
    _, curve = lr_curve({"name": "onecycle", "warmup_epochs": 1, "max_lr_factor": 2.0}, [0, 9, 54, 99])
    start, peak = 0.02, 2.0
    low = start / 1e4
    assert curve == pytest.approx([start, peak, low + (peak - low) * 0.5, low])


def test_plateau_reduces_after_patience_and_steps_per_validation():
    metrics = [0.5, 0.6] + [0.6] * 10  # improves once, then never again
    built, curve = lr_curve({"name": "plateau", "plateau_patience": 2, "plateau_factor": 0.5, "min_lr_ratio": 0.2},
                            [4, 5, 7, 8, 11], metrics=metrics)
    assert built["interval"] == "epoch" and built["monitor"] == "val/mIoU" and built["frequency"] == 1
    # the 3rd validation without gain (> patience 2) halves the lr; the floor is 0.2 x lr
    assert curve == pytest.approx([1.0, 0.5, 0.5, 0.25, 0.2])
    with pytest.raises(ValidationError, match="warmup"):
        ScheduleConfig(name="plateau", warmup_epochs=1)


def test_none_schedule_and_schedule_errors():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_scheduler(opt, ScheduleConfig(name="none"), 10, 5, "val/mIoU") is None
    _, curve = lr_curve({"name": "none", "warmup_epochs": 1}, [0, 10, 90])
    assert curve == pytest.approx([0.01, 1.0, 1.0])
    with pytest.raises(ConfigError, match="covers the whole run"):
        build_scheduler(opt, ScheduleConfig(warmup_epochs=5), 10, 5, "mIoU")
    with pytest.raises(ValidationError, match="milestones"):
        ScheduleConfig(name="multistep")
    with pytest.raises(ValidationError, match="unknown schedule 'cosin'"):
        ScheduleConfig(name="cosin")
    assert set(SCHEDULES.names()) == {"none", "cosine", "cosine_restarts", "poly", "step", "multistep", "plateau", "onecycle"}


def test_config_load_checks_names_against_the_registries():
    # The torch-free schema checks optimiser and schedule names at load with its own lists:
    # they must name exactly what the registries build.
    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS.names())
    assert set(SCHEDULE_NAMES) == set(SCHEDULES.names())


def test_scheduler_on_a_lookahead_optimizer_moves_the_shared_groups():
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(lr=1.0, encoder_lr=0.1, lookahead={}))
    build_scheduler(opt, ScheduleConfig(warmup_epochs=1), 10, 10, "mIoU")
    assert [g["lr"] for g in opt._base_optimizer.param_groups] == pytest.approx([0.001, 0.01])
