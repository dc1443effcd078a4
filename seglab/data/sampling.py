"""Training samplers: class-balanced sampling (oversample images that hold rare classes).

`data.sampler: {name: class_balanced, power: 0.5}`: each image gets the weight
max over the classes c present in it of f_c^-power, where f_c is the share of
training images holding class c (the repeat-factor idea of LVIS, Gupta et al. 2019;
power 0.5 is its square root, 1 balances single-class images fully, 0 is uniform).
Presence is read once (COCO annotations, image labels, or the cached masks). Images are then drawn with replacement
in proportion to their weights, as torch's WeightedRandomSampler does.

Under DDP every process draws the same sequence from a seed shared per epoch
(`set_epoch`, called by Lightning each epoch) and keeps every world_size-th index, so
the processes see disjoint shards of one weighted draw.
"""

from __future__ import annotations

import logging
import math

import torch
from torch.utils.data import Sampler

log = logging.getLogger("seglab")


def class_balanced_weights(presence: torch.Tensor, power: float) -> torch.Tensor:
    """[N] image weights: max over the image's classes of (share of images holding the class)^-power.

    An image without any valid label gets weight 1 (the weight of a class present everywhere).
    """
    share = presence.double().mean(0)
    class_weight = torch.where(share > 0, share.clamp(min=1e-12) ** -power, torch.zeros_like(share))
    weights = (presence.double() * class_weight).amax(1)
    return torch.where(weights > 0, weights, torch.ones_like(weights))


class WeightedEpochSampler(Sampler):
    """Weighted draw with replacement, reproducible per epoch and sharded across processes.

    Each epoch draws ceil(num_samples / world_size) * world_size indices with
    torch.multinomial from a generator seeded with seed + epoch (the same on every
    process); process `rank` takes positions rank, rank + world_size, ...
    """

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.total = math.ceil(num_samples / world_size) * world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total, replacement=True, generator=generator)
        return iter(drawn[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.total // self.world_size


def build_train_sampler(dataset, sampler_cfg, seed: int, rank: int = 0, world_size: int = 1) -> Sampler | None:
    """The sampler `data.sampler` asks for; None for plain shuffling (the loader's default)."""
    if sampler_cfg.name == "shuffle":
        return None
    from seglab.data.presence import class_presence

    labels = dataset.source.labels
    presence = torch.from_numpy(class_presence(dataset.source, labels))
    weights = class_balanced_weights(presence, sampler_cfg.power)
    expected = (weights[:, None] * presence.double()).sum(0) / weights.sum()
    before = presence.double().mean(0)
    if rank == 0:
        rarest = torch.argsort(before)[:4].tolist()
        log.info("class_balanced sampler (power %s): share of drawn images holding %s", sampler_cfg.power,
                 ", ".join(f"{labels.classes[c]} {before[c]:.1%} -> {expected[c]:.1%}" for c in rarest))
    return WeightedEpochSampler(weights, sampler_cfg.num_samples or len(dataset), seed, rank, world_size)
