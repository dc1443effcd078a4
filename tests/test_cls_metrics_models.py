"""Classification metrics against scikit-learn, the ArcFace head, the models and the UDA loss."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from seglab.errors import ConfigError
from seglab.metrics.f1 import ClassificationConfusion, classification_scores, format_table
from seglab.optim import OptimConfig, build_optimizer
from seglab.tasks.classification.models import ArcFaceHead, arcface_logits, classifier, timm_backbone
from seglab.tasks.classification.uda import consistency_loss


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 18
    # Classes 3 and 7 never occur, class 5 is only predicted, class 9 only true.
    true = rng.choice([c for c in range(n) if c not in (3, 7, 5)], 200)
    pred = np.where(rng.random(200) < 0.6, true, rng.choice([c for c in range(n) if c not in (3, 7, 9)], 200))
    cm = ClassificationConfusion(n)
    for chunk in np.array_split(np.arange(200), 7):  # accumulated over batches, computed once
        cm.update(torch.as_tensor(pred[chunk]), torch.as_tensor(true[chunk]))
    scores = classification_scores(cm.mat, [f"c{i}" for i in range(n)])
    assert scores["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0), abs=1e-12)
    assert scores["accuracy"] == pytest.approx(accuracy_score(true, pred), abs=1e-12)
    present = sorted(set(true) | set(pred))
    per_class = f1_score(true, pred, labels=present, average=None, zero_division=0)
    assert [scores["per_class_f1"][f"c{c}"] for c in present] == pytest.approx(list(per_class), abs=1e-12)
    assert scores["per_class_f1"]["c3"] is None and scores["per_class_f1"]["c5"] == 0.0
    assert "macro F1" in format_table(scores)
    assert cm.compute([f"c{i}" for i in range(n)]) == scores  # no facets: the plain scores


def test_facet_accuracies_count_a_prediction_right_on_each_part_of_the_class():
    from seglab.data.maskstatus import FACETS, decode

    rng = np.random.default_rng(7)
    true = rng.integers(0, 18, 300)
    pred = np.where(rng.random(300) < 0.5, true, rng.integers(0, 18, 300))
    cm = ClassificationConfusion(18, FACETS)
    cm.update(torch.as_tensor(pred), torch.as_tensor(true))
    scores = cm.compute()
    for i, facet in enumerate(("mask", "gender", "age")):
        right = [decode(int(t))[i] == decode(int(p))[i] for t, p in zip(true, pred)]
        assert scores[f"{facet}_accuracy"] == pytest.approx(np.mean(right), abs=1e-12)
    assert scores["accuracy"] == pytest.approx(accuracy_score(true, pred), abs=1e-12)
    assert scores["mask_accuracy"] > scores["accuracy"]  # a wrong class can still be right on its mask kind
    assert "mask accuracy" in format_table(scores)


def test_arcface_logits_hand_computed():
    s, m = 10.0, 0.5
    cos = torch.tensor([[1.0, 0.0, math.sqrt(0.5)], [0.6, -0.8, 0.0]])
    target = torch.tensor([2, 0])
    out = arcface_logits(cos, target, s, m)
    # sample 0: true class 2 at 45 degrees -> cos(pi/4 + 0.5); others unchanged
    # sample 1: true class 0 at acos(0.6) -> cos(acos(0.6) + 0.5) = 0.6 cos 0.5 - 0.8 sin 0.5
    expected = torch.tensor([[10.0, 0.0, 10 * math.cos(math.pi / 4 + 0.5)],
                             [10 * (0.6 * math.cos(0.5) - 0.8 * math.sin(0.5)), -8.0, 0.0]])
    assert torch.allclose(out, expected, atol=1e-5)
    assert out[0, 2] == pytest.approx(2.8154, abs=1e-4)  # 10 * cos(1.2854)


def test_arcface_stays_monotonic_past_pi():
    m = 0.5
    cos = torch.linspace(-1, 1, 201).unsqueeze(1).repeat(1, 2)
    out = arcface_logits(cos, torch.zeros(201, dtype=torch.long), 1.0, m)[:, 0]
    assert (out[1:] >= out[:-1]).all(), "the margin logit must grow with cos(theta)"
    # theta + m beyond pi: the linear continuation cos(theta) - m sin(pi - m)
    assert out[0] == pytest.approx(-1 - m * math.sin(math.pi - m), abs=1e-6)


def test_arcface_head_scales_cosines_and_adds_the_margin_only_with_a_target():
    head = ArcFaceHead(4, 3, scale=16.0, margin=0.3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 1.0, 1.0]]))
    f = torch.tensor([[5.0, 0, 0, 0]])
    assert torch.allclose(head(f), torch.tensor([[16.0, 0.0, 0.0]]))
    assert head(f, torch.tensor([0]))[0, 0].item() == pytest.approx(16 * math.cos(0.3), abs=1e-5)


def test_timm_classifier_parts_cover_every_parameter_and_take_encoder_lr():
    model = classifier("test_resnet", num_classes=5, head="arcface")
    parts = model.parts()
    assert set(parts) == {"encoder", "head"}
    assert sum(p.numel() for part in parts.values() for p in part.parameters()) == sum(p.numel() for p in model.parameters())
    opt = build_optimizer(model, OptimConfig(lr=1e-3, encoder_lr=1e-4))
    assert sorted(g["lr"] for g in opt.param_groups) == [1e-4, 1e-3]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_local_backbone_weights_load_and_unknown_models_are_named(tmp_path):
    from seglab.config import config_from_dict
    from seglab.tasks.classification.models import build_classifier

    donor = timm_backbone("test_resnet")
    torch.save(donor.state_dict(), tmp_path / "w.pth")
    cfg = config_from_dict({"task": "classification", "data": {"format": "csv", "image_size": [32, 32]},
                            "model": {"encoder": "test_resnet", "encoder_weights": str(tmp_path / "w.pth")}})
    model = build_classifier(cfg, cfg.classification, 4)
    for k, v in donor.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v)
    with pytest.raises(ConfigError, match="not a timm model; did you mean 'resnet18'"):
        timm_backbone("resnet18x")


def test_consistency_loss_masks_unsure_images_and_trains_only_the_strong_view():
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]], requires_grad=True)
    loss, kept = consistency_loss(weak, strong, temperature=1.0, threshold=0.8)
    assert kept.item() == 0.5  # the second image is unsure (max p ~ 0.36)
    p = weak[0].softmax(0)
    kl = (p * (p.log() - strong[0].log_softmax(0))).sum()
    assert loss.item() == pytest.approx(kl.item() / 2, rel=1e-5)
    loss.backward()
    assert weak.grad is None and strong.grad[1].abs().sum() == 0 and strong.grad[0].abs().sum() > 0
    same, _ = consistency_loss(strong.detach(), strong.detach(), 1.0, 0.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
