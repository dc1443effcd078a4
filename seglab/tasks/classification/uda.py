"""Consistency training on unlabelled images (UDA, Xie et al. 2020).

The prediction on a weak (clean) view, sharpened by a temperature, is the target for
the prediction on a strongly augmented view of the same image; the loss is their KL
divergence. Images whose weak-view confidence is below a threshold are masked out, so
the model is not pushed towards its own guesses on images it cannot yet classify.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.images import images_under, read_image
from seglab.data.transforms import make_transform
from seglab.errors import ConfigError, DataError


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


class TwoViewDataset(Dataset):
    """Unlabelled images for consistency training: {"weak": uint8 [3,H,W], "strong": uint8 [3,H,W]}."""

    def __init__(self, paths: list[Path], weak, strong, batch_size: int | None = None):
        if not paths:
            raise DataError("classification.uda: no unlabelled images found")
        self.paths, self.weak, self.strong = paths, weak, strong
        self.batch_size = batch_size  # images per step; None = the labelled batch size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> dict:
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        if aug_seed is not None:  # drawn by a resumable sampler: the same views after a resume
            self.weak.set_random_seed(aug_seed)
            self.strong.set_random_seed(aug_seed + 1)
        image = read_image(self.paths[i], "unlabelled image")
        views = {k: t(image=image)["image"] for k, t in (("weak", self.weak), ("strong", self.strong))}
        return {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for k, v in views.items()}


def view_transform(specs: list[dict], image_size, where: str) -> A.Compose:
    from seglab.config import TransformSpec

    ops = [A.Resize(height=image_size[0], width=image_size[1])]
    ops += [make_transform(TransformSpec(**spec), f"{where}[{i}]") for i, spec in enumerate(specs)]
    return A.Compose(ops)


def unlabelled_dataset(cfg, uda, where: str = "classification.uda") -> TwoViewDataset:
    """The unlabelled images of the `uda` options (`where` in the config): uda.unlabelled's
    (searched recursively), else the test split's."""
    if uda.unlabelled:
        folder = cfg.data.resolve(uda.unlabelled)
        if not folder.is_dir():
            raise DataError(f"{where}.unlabelled: folder not found: {folder}")
        paths = images_under(folder)
    else:
        if cfg.data.test is None:
            raise ConfigError(f"{where}: give uda.unlabelled or data.test (its images are the unlabelled set)")
        from seglab.data import open_source

        test = open_source(cfg, "test", None)
        paths = [test.image_path(i) for i in range(len(test))]
    size = cfg.data.image_size
    return TwoViewDataset(paths, view_transform(uda.weak, size, f"{where}.weak"),
                          view_transform(uda.strong, size, f"{where}.strong"), uda.batch_size)


def check_views(uda, where: str = "classification.uda") -> list[str]:
    """Problems of the weak and strong view transforms (names and parameters)."""
    from seglab.config import TransformSpec

    problems = []
    for where, specs in ((f"{where}.weak", uda.weak), (f"{where}.strong", uda.strong)):
        for i, spec in enumerate(specs):
            try:
                if not isinstance(spec.get("name"), str):
                    raise ConfigError(f"{where}[{i}]: each transform needs a name (an albumentations class)")
                make_transform(TransformSpec(**spec), f"{where}[{i}]")
            except ConfigError as e:
                problems.append(str(e))
    return problems
