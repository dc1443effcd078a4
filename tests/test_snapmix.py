"""SnapMix: label weights follow the class activation map mass of the boxes (hand-computed),
CAMs from the classifier's last feature map and weights, and one training step with it."""

from __future__ import annotations

import torch

from seglab.tasks.classification.snapmix import class_activation_maps, normalise_maps, snapmix_weights


def test_weights_follow_the_cam_mass_of_the_boxes():
    # Image 0: all its mass in the top-left pixel; image 1: spread evenly over its 4x4 pixels.
    cams = torch.zeros(2, 4, 4)
    cams[0, 0, 0] = 1.0
    cams[1] = 1.0 / 16
    perm = torch.tensor([1, 0])
    target = torch.tensor([3, 5])
    box_a = (0, 2, 0, 2)   # rows 0-1, columns 0-1 of every image are replaced ...
    box_b = (1, 4, 0, 1)   # ... by rows 1-3, column 0 of the partner (3 pixels)
    lam_a, lam_b = snapmix_weights(cams, perm, target, box_a, box_b)
    # Image 0 loses its only mass (1 - 1 = 0) and receives 3/16 of image 1's;
    # image 1 keeps 12/16 of its own and receives image 0's rows 1-3 of column 0: nothing.
    torch.testing.assert_close(lam_a, torch.tensor([0.0, 12 / 16]))
    torch.testing.assert_close(lam_b, torch.tensor([3 / 16, 0.0]))


def test_same_class_pairs_and_flat_maps():
    cams = torch.zeros(2, 4, 4)
    cams[0, 3, 3] = 1.0           # image 1's map is flat: the area share stands in
    perm = torch.tensor([1, 0])
    lam_a, lam_b = snapmix_weights(cams, perm, torch.tensor([2, 2]), (0, 2, 0, 2), (2, 4, 2, 4))
    # same class: image 0 keeps 1 (outside the box) + flat partner's area share 4/16, all on class 2
    torch.testing.assert_close(lam_a, torch.tensor([1 + 4 / 16, (1 - 4 / 16) + 1.0]))
    torch.testing.assert_close(lam_b, torch.zeros(2))


def test_cams_come_from_the_last_feature_map_and_the_head():
    from seglab.tasks.classification.models import classifier

    torch.manual_seed(0)
    model = classifier("resnet18", num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([0, 2])
    cams = class_activation_maps(model, x, target)
    assert cams.shape == (2, 64, 64)
    torch.testing.assert_close(cams.flatten(1).sum(1), torch.ones(2))
    features = torch.relu(model.encoder.forward_features(x))                      # [2, 512, 2, 2]
    w, b = model.head.fc.weight, model.head.fc.bias
    by_hand = torch.stack([(w[t][:, None, None] * f).sum(0) + b[t] for f, t in zip(features, target)])
    by_hand = torch.nn.functional.interpolate(by_hand[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(cams, normalise_maps(by_hand), atol=1e-5, rtol=1e-4)


def test_a_training_step_with_snapmix(tmp_path):
    from seglab.core.module import LabModule
    from seglab.data import resolve_labels
    from tests.workflow_helpers import task_data
    from seglab.config import load_config

    config, overrides = task_data("classification", tmp_path)
    cfg = load_config(config, overrides + ["classification.snapmix_alpha=5", "classification.mixup_alpha=0",
                                           "classification.cutmix_alpha=0"])
    labels = resolve_labels(cfg)
    module = LabModule(cfg, labels).train()
    batch = {"image": torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), "target": torch.tensor([0, 1, 2, 1])}
    loss = module.task.training_loss(module, batch)
    loss.backward()
    assert torch.isfinite(loss) and module.training
    assert any(p.grad is not None for p in module.model.head.parameters())
