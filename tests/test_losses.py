"""Losses against hand-computed values on tiny tensors (math on Python floats, not torch losses)."""

import math

import pytest
import torch

from seglab.config import LossSpec
from seglab.errors import ConfigError
from seglab.losses import (
    LOSSES,
    TARGETS,
    auto_class_weights,
    boundary_band,
    build_loss,
    validate_loss_specs,
)

IGN = 255


def make(name, targets="index", num_classes=2, **params):
    """A loss for class-index targets ("index": multiclass, classification) or 0/1 channels ("binary": multilabel)."""
    return LOSSES.get(name)(targets, num_classes, IGN, **params)


def nll(zs, y):
    """-log softmax(zs)[y] by hand."""
    return math.log(sum(math.exp(z) for z in zs)) - zs[y]


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


# One 2x2 image, 2 classes; pixel (1,0) is ignored.
Z0 = [[2.0, 0.0], [1.0, -1.0]]
Z1 = [[0.0, 1.0], [3.0, 0.5]]
T = [[0, 1], [IGN, 1]]
LOGITS = torch.tensor([[Z0, Z1]])  # [1, 2, 2, 2]
TARGET = torch.tensor([T])  # [1, 2, 2]
PIXELS = [((Z0[i][j], Z1[i][j]), T[i][j]) for i in range(2) for j in range(2) if T[i][j] != IGN]


def test_ce_ignores_pixels_and_matches_formula():
    expected = sum(nll(z, y) for z, y in PIXELS) / 3
    assert make("ce")(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_ce_class_weights_are_a_weighted_mean():
    w = [1.0, 3.0]
    expected = sum(w[y] * nll(z, y) for z, y in PIXELS) / sum(w[y] for _, y in PIXELS)
    assert make("ce", class_weights=w)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_ce_label_smoothing():
    eps = 0.2
    per = [(1 - eps) * nll(z, y) + eps / 2 * (nll(z, 0) + nll(z, 1)) for z, y in PIXELS]
    assert make("ce", label_smoothing=eps)(LOGITS, TARGET).item() == pytest.approx(sum(per) / 3, rel=1e-6)


def test_ce_classification_shape_with_smoothing():
    rows, target = [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], [1, 2]
    loss = make("ce", num_classes=3, label_smoothing=0.1)(torch.tensor(rows), torch.tensor(target))
    per = [0.9 * nll(z, y) + 0.1 / 3 * sum(nll(z, c) for c in range(3)) for z, y in zip(rows, target)]
    assert loss.item() == pytest.approx(sum(per) / 2, rel=1e-6)


def test_focal_gradient_is_finite_at_ignored_pixels_for_gamma_below_1():
    logits = LOGITS.clone().requires_grad_()
    make("focal", gamma=0.5)(logits, TARGET).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[0, :, 1, 0] == 0).all()


def test_all_ignored_batch_gives_zero_not_nan():
    logits = LOGITS.clone().requires_grad_()
    for name in ("ce", "focal", "boundary_ce", "ohem_ce"):
        loss = make(name)(logits, torch.full_like(TARGET, IGN))
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(logits.grad).all(), name


def test_focal_gamma0_is_ce_and_gamma2_matches_formula():
    ce = make("ce")(LOGITS, TARGET)
    assert make("focal", gamma=0)(LOGITS, TARGET).item() == pytest.approx(ce.item(), rel=1e-6)
    per = [(1 - math.exp(-nll(z, y))) ** 2 * nll(z, y) for z, y in PIXELS]
    assert make("focal", gamma=2)(LOGITS, TARGET).item() == pytest.approx(sum(per) / 3, rel=1e-5)
    alpha = [0.25, 0.75]
    per = [alpha[y] * (1 - math.exp(-nll(z, y))) ** 2 * nll(z, y) for z, y in PIXELS]
    assert make("focal", alpha=alpha)(LOGITS, TARGET).item() == pytest.approx(sum(per) / 3, rel=1e-5)


def test_focal_classification_shape():
    rows, target = [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], [0, 2]
    per = [(1 - math.exp(-nll(z, y))) ** 2 * nll(z, y) for z, y in zip(rows, target)]
    loss = make("focal", num_classes=3, gamma=2)(torch.tensor(rows), torch.tensor(target))
    assert loss.item() == pytest.approx(sum(per) / 2, rel=1e-5)


# Multilabel: one image, 2 classes, 1x2 pixels.
ML_X = [[[2.0, -1.0]], [[0.5, 0.0]]]
ML_Y = [[[1.0, 0.0]], [[1.0, 1.0]]]
ML_LOGITS, ML_TARGET = torch.tensor([ML_X]), torch.tensor([ML_Y])
ML_PAIRS = [(ML_X[c][0][j], ML_Y[c][0][j]) for c in range(2) for j in range(2)]


def bce_by_hand(pos_weight=(1.0, 1.0)):
    per = [
        -(pos_weight[c] * y * math.log(sig(x)) + (1 - y) * math.log(1 - sig(x)))
        for c in range(2)
        for x, y in zip(ML_X[c][0], ML_Y[c][0])
    ]
    return sum(per) / 4


def dice_by_hand_multilabel():
    losses = []
    for c in range(2):
        p, t = [sig(x) for x in ML_X[c][0]], ML_Y[c][0]
        losses.append(1 - 2 * sum(a * b for a, b in zip(p, t)) / (sum(p) + sum(t)))
    return sum(losses) / 2


def test_bce_and_pos_weight():
    assert make("bce", "binary")(ML_LOGITS, ML_TARGET).item() == pytest.approx(bce_by_hand(), rel=1e-6)
    loss = make("bce", "binary", pos_weight=[2.0, 0.5])(ML_LOGITS, ML_TARGET.bool())
    assert loss.item() == pytest.approx(bce_by_hand((2.0, 0.5)), rel=1e-6)


def test_focal_multilabel_gamma0_is_bce():
    assert make("focal", "binary", gamma=0)(ML_LOGITS, ML_TARGET).item() == pytest.approx(bce_by_hand(), rel=1e-6)


def test_dice_multilabel_and_bce_dice():
    assert make("dice", "binary")(ML_LOGITS, ML_TARGET).item() == pytest.approx(dice_by_hand_multilabel(), rel=1e-5)
    loss = make("bce_dice", "binary", bce_weight=0.3, dice_weight=2.0)(ML_LOGITS, ML_TARGET)
    assert loss.item() == pytest.approx(0.3 * bce_by_hand() + 2.0 * dice_by_hand_multilabel(), rel=1e-5)


def test_dice_multiclass_excludes_ignored_pixels():
    probs = [[math.exp(-nll(z, c)) for c in range(2)] for z, _ in PIXELS]
    losses = []
    for c in range(2):
        inter = sum(p[c] for p, (_, y) in zip(probs, PIXELS) if y == c)
        cardinality = sum(p[c] for p in probs) + sum(1 for _, y in PIXELS if y == c)
        losses.append(1 - 2 * inter / cardinality)
    assert make("dice")(LOGITS, TARGET).item() == pytest.approx(sum(losses) / 2, rel=1e-5)
    assert make("dice", classes=[1])(LOGITS, TARGET).item() == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.parametrize("name", ["jaccard", "lovasz"])
def test_iou_losses_near_zero_when_perfect_and_larger_when_wrong(name):
    target = torch.tensor([[[0, 1, 1], [2, 2, IGN]]])
    perfect = 20.0 * torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    wrong = perfect.roll(1, dims=1)
    loss = make(name, num_classes=3)
    assert loss(perfect, target).item() < 1e-4
    assert loss(wrong, target).item() > 0.5
    ml_target = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    ml_loss = make(name, "binary")
    assert ml_loss(20.0 * (2 * ml_target - 1), ml_target).item() < 1e-4
    # smp scores a class with no true pixels as 0 for jaccard, so the wrong case is 1/2 there
    assert ml_loss(-20.0 * (2 * ml_target - 1), ml_target).item() >= 0.5 - 1e-6


def test_boundary_band_is_one_pixel_each_side_of_a_square_at_k1():
    target = torch.zeros(1, 7, 7, dtype=torch.long)
    target[0, 2:5, 2:5] = 1
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[1:6, 1:6] = True
    expected[3, 3] = False  # the square's centre sees only class 1
    assert torch.equal(boundary_band(target, 1, IGN)[0], expected)

    # An ignored row next to the square is excluded and does not create a band of its own.
    target[0, 6, :] = IGN
    band = boundary_band(target, 1, IGN)[0]
    assert not band[6].any()
    assert torch.equal(band[:6], expected[:6])


def test_boundary_ce_weights_and_factor1_equals_ce():
    target = torch.zeros(1, 7, 7, dtype=torch.long)
    target[0, 2:5, 2:5] = 1
    target[0, 0, 0] = IGN
    logits = torch.randn(1, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    ce = make("ce")(logits, target)
    assert make("boundary_ce", k=1, factor=1.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)

    weights = make("boundary_ce", k=1, factor=5.0).loss.pixel_weights(target)[0]
    expected = torch.ones(7, 7)
    expected[1:6, 1:6] = 5.0
    expected[3, 3] = 1.0
    expected[0, 0] = 0.0
    assert torch.equal(weights, expected)

    pixels = [(i, j) for i in range(7) for j in range(7) if (i, j) != (0, 0)]
    per = [nll(logits[0, :, i, j].tolist(), int(target[0, i, j])) for i, j in pixels]
    w = [float(expected[i, j]) for i, j in pixels]
    by_hand = sum(a * b for a, b in zip(per, w)) / sum(w)
    assert make("boundary_ce", k=1, factor=5.0)(logits, target).item() == pytest.approx(by_hand, rel=1e-5)


def logits_with_true_probs(probs):
    """Two-class logits (class 1 is the target) whose softmax gives class 1 the probability p."""
    z1 = torch.tensor([math.log(p / (1 - p)) for p in probs])
    return torch.stack([torch.zeros_like(z1), z1]).view(1, 2, 1, -1), torch.ones(1, 1, len(probs), dtype=torch.long)


def test_ohem_keeps_pixels_below_threshold_and_tops_up_to_min_kept():
    logits, target = logits_with_true_probs([0.9, 0.8, 0.6, 0.3])
    assert make("ohem_ce", thresh=0.7)(logits, target).item() == pytest.approx(
        -(math.log(0.6) + math.log(0.3)) / 2, rel=1e-5
    )
    assert make("ohem_ce", thresh=0.7, min_kept=3)(logits, target).item() == pytest.approx(
        -(math.log(0.8) + math.log(0.6) + math.log(0.3)) / 3, rel=1e-5
    )
    # All easy: the default keeps the hardest 1/16 of valid pixels (32 -> 2); ignored ones don't count.
    logits, target = logits_with_true_probs([0.95] * 30 + [0.9, 0.91] + [0.5] * 4)
    target[0, 0, -4:] = IGN
    assert make("ohem_ce")(logits, target).item() == pytest.approx(-(math.log(0.9) + math.log(0.91)) / 2, rel=1e-5)


def test_auto_class_weights_inverse_sqrt_frequency():
    w = auto_class_weights(torch.tensor([64.0, 16.0, 4.0, 16.0]))
    # sqrt(f) = .8, .4, .2, .4, sum 1.8; w_c = 1 / (sqrt(f_c) * 1.8) so that sum f_c w_c = 1
    assert w.tolist() == pytest.approx([1 / 1.44, 1 / 0.72, 1 / 0.36, 1 / 0.72], rel=1e-6)
    # An unseen class gets the rarest seen class's weight, never inf: f = .75, .25 -> w_1 = 1 / (.5 * (sqrt(.75) + .5))
    w = auto_class_weights(torch.tensor([3.0, 1.0, 0.0])).tolist()
    assert w[2] == w[1] == pytest.approx(1 / (0.5 * (0.75**0.5 + 0.5)), rel=1e-6)


def test_auto_class_weights_in_build_loss():
    specs = [LossSpec(name="ce", class_weights="auto")]
    with pytest.raises(ConfigError, match="auto"):
        build_loss(specs, "index", 2, IGN)
    freqs = torch.tensor([0.8, 0.2])
    w = auto_class_weights(freqs).tolist()
    expected = sum(w[y] * nll(z, y) for z, y in PIXELS) / sum(w[y] for _, y in PIXELS)
    loss = build_loss(specs, "index", 2, IGN, class_frequencies=freqs)
    assert loss(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_combined_weights_and_components():
    specs = [
        LossSpec(name="ce"),
        LossSpec(name="dice", weight=0.5),
        LossSpec(name="ce", weight=2.0, label_smoothing=0.1),
    ]
    combined = build_loss(specs, "index", 2, IGN)
    total = combined(LOGITS, TARGET)
    parts = combined.last_components
    assert list(parts) == ["ce", "dice", "ce_2"]
    assert parts["ce"] == pytest.approx(make("ce")(LOGITS, TARGET).item(), rel=1e-6)
    assert parts["ce_2"] == pytest.approx(make("ce", label_smoothing=0.1)(LOGITS, TARGET).item(), rel=1e-6)
    assert total.item() == pytest.approx(parts["ce"] + 0.5 * parts["dice"] + 2.0 * parts["ce_2"], rel=1e-6)


def test_loss_spec_extra_keys_are_params():
    spec = LossSpec.model_validate({"name": "focal", "gamma": 1.5})
    assert (spec.weight, spec.params) == (1.0, {"gamma": 1.5})


def test_validate_unknown_name_suggests_closest():
    with pytest.raises(ConfigError, match=r"loss\[0\]\.name: unknown loss 'dcie'; did you mean 'dice'"):
        validate_loss_specs([LossSpec(name="dcie")], "index")


def test_validate_unknown_param_suggests_closest():
    specs = [LossSpec(name="ce"), LossSpec(name="focal", gama=2)]
    with pytest.raises(ConfigError) as err:
        validate_loss_specs(specs, "index")
    assert str(err.value) == "loss[1].gama: unknown parameter for loss 'focal'; did you mean 'gamma'?"


def test_validate_weight_and_targets():
    with pytest.raises(ConfigError, match=r"loss\[0\]\.weight"):
        validate_loss_specs([LossSpec(name="ce", weight=0)], "index")
    with pytest.raises(ConfigError) as e:
        validate_loss_specs([LossSpec(name="ce"), LossSpec(name="bce")], "index")
    assert str(e.value) == ("loss[1]: loss 'bce' does not take class-index targets (multiclass, classification) "
                            "(it takes binary masks (multilabel))")
    with pytest.raises(ConfigError, match=r"^loss 'ce' does not take binary masks \(multilabel\)"):
        make("ce", "binary")
    with pytest.raises(ConfigError, match="unknown target kind 'multiclass'"):
        validate_loss_specs([LossSpec(name="ce")], "multiclass")  # the old task names are not target kinds
    validate_loss_specs([LossSpec(name="bce_dice", dice_weight=2), LossSpec(name="lovasz")], "binary")
    validate_loss_specs([LossSpec(name="focal"), LossSpec(name="dice")], "index")


def test_bad_param_values_are_config_errors_at_build():
    with pytest.raises(ConfigError, match=r"loss\[0\]: .*class_weights needs 2"):
        build_loss([LossSpec(name="ce", class_weights=[1.0, 2.0, 3.0])], "index", 2, IGN)
    with pytest.raises(ConfigError, match="per-class"):
        make("focal", alpha=0.25)


def test_every_loss_runs_in_bf16_autocast_and_backprops():
    g = torch.Generator().manual_seed(1)
    mc_target = torch.randint(0, 3, (2, 8, 8), generator=g)
    mc_target[:, 0] = IGN
    ml_target = torch.randint(0, 2, (2, 3, 8, 8), generator=g).bool()
    covered = set()
    for name in LOSSES:
        for task in LOSSES.get(name).targets:
            covered.add(task)
            target = mc_target if task == "index" else ml_target
            logits = torch.randn(2, 3, 8, 8, generator=g).bfloat16().requires_grad_()
            loss = LOSSES.get(name)(task, 3, IGN)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                value = loss(logits, target)
            reference = loss(logits.detach().float(), target)
            value.backward()
            assert value.dtype == torch.float32, (name, task)
            assert value.item() == pytest.approx(reference.item(), rel=1e-5), (name, task)
            assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0, (name, task)
    assert covered == set(TARGETS)
