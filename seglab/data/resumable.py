"""Training data order that survives a kill: deterministic per epoch, with the position
in the epoch saved in every checkpoint.

`ResumableLoader` wraps any sampler whose order is a function of the epoch (one with
`set_epoch`: `SeededShuffle` below, a DistributedSampler, a seeded weighted sampler)
in a `ResumableSampler` that

- skips the samples a resumed epoch has already trained on (indices only: nothing is
  loaded to skip them), and
- pairs every index with an augmentation seed from (seed, epoch, rank, position), so a
  sample gets the same augmentation in any worker and in a resumed run (an image drawn
  twice in one epoch by a weighted sampler still gets two different draws).

The loader's `state_dict` / `load_state_dict` hold the position. They are saved in
every checkpoint and restored before a resumed epoch's first batch by seglab's
ExactResume callback (Lightning 2.6 restores stateful loaders itself only when the
loader was not already built to estimate the step count, which the LR schedule needs).
The loader draws its worker seeds from its own generator, so starting an epoch never
shifts the global random state that dropout and batch augmentation use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def augmentation_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 32-bit seed for one drawn sample's augmentation."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank, position]).generate_state(1)[0])


class SeededShuffle(Sampler):
    """A shuffle that is a function of (seed, epoch) alone, not of the global random state.

    Under DDP (process group initialised) each process takes every world_size-th index of
    the same permutation, padded so every shard is equally long.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / _rank_and_world()[1])

    def __iter__(self):
        rank, world = _rank_and_world()
        g = torch.Generator().manual_seed((self.seed & 0xFFFFFFFF) * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        total = len(self) * world
        order += order[: total - len(order)]
        return iter(order[rank:total:world])


class ResumableSampler(DistributedSampler):
    """Wraps an epoch-deterministic sampler: skips a resumed epoch's done part and yields
    (index, augmentation seed) pairs.

    A DistributedSampler subclass only so that Lightning, seeing one, leaves it in place
    under DDP instead of wrapping it (the inner sampler does any sharding itself).
    """

    def __init__(self, sampler, seed: int):  # noqa: D107 - DistributedSampler.__init__ is not wanted
        self.sampler, self.seed = sampler, seed
        self.epoch, self.pending_skip = 0, 0
        self.shuffle, self.drop_last = True, False  # read by Lightning's checks

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.pending_skip = 0  # a resume position only applies to the epoch it was saved in
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def resume_at(self, epoch: int, samples_done: int) -> None:
        self.set_epoch(epoch)
        self.pending_skip = samples_done

    def __iter__(self):
        skip, self.pending_skip = self.pending_skip, 0
        rank = _rank_and_world()[0]
        for position, index in enumerate(self.sampler):
            if position >= skip:
                yield index, augmentation_seed(self.seed, self.epoch, rank, position)


class ResumableLoader(DataLoader):
    """A training DataLoader whose position in the epoch is saved in checkpoints."""

    def __init__(self, dataset, *, sampler, seed: int, **kwargs):
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed & 0xFFFFFFFF))
        super().__init__(dataset, sampler=ResumableSampler(sampler, seed), **kwargs)
        self._batches_done = 0

    def __iter__(self):
        # A generator: its body (and the sampler's) runs at the first batch, after
        # Lightning has set the epoch and ExactResume has restored a saved position.
        self._batches_done = self.sampler.pending_skip // self.batch_size
        for batch in super().__iter__():
            self._batches_done += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "samples_done": self._batches_done * self.batch_size, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") == self.sampler.seed:  # another seed means another order: start the epoch afresh
            self.sampler.resume_at(int(state["epoch"]), int(state["samples_done"]))
