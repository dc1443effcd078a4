"""Consistency training on unlabelled images (UDA, Xie et al. 2020).

The prediction on a weak (clean) view, sharpened by a temperature, is the target for
the prediction on a strongly augmented view of the same image; the loss is their KL
divergence. Images whose weak-view confidence is below a threshold are masked out, so
the model is not pushed towards its own guesses on images it cannot yet classify.
"""

from __future__ import annotations

import torch


def consistency_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor, temperature: float = 0.4,
                     threshold: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over the batch of mask * KL(sharpened p_weak || p_strong), fraction of images kept).

    No gradient flows through the weak view. Masked images count as zero in the mean (as
    in UDA), so the loss grows with the share of confident images.
    """
    with torch.no_grad():
        weak = logits_weak.detach().float()
        keep = (weak.softmax(1).max(1).values >= threshold).float()
        target = (weak / temperature).softmax(1)
    log_strong = logits_strong.float().log_softmax(1)
    kl = (target * (target.clamp_min(1e-12).log() - log_strong)).sum(1)
    return (kl * keep).mean(), keep.mean()
