"""Training data order that survives a kill: a function of (seed, epoch) alone, with its
position in the epoch saved in every checkpoint.

`SeededSampler` shuffles with its own generator seeded by (seed, epoch), so the order
does not depend on how much global randomness was used before, and hands every index
a per-(seed, epoch, index) augmentation seed, so an image gets the same augmentation
however many workers there are and whether or not the run was resumed.

`ResumableLoader` is a DataLoader with `state_dict` / `load_state_dict`, saved in every
checkpoint and restored before a resumed epoch's first batch (by seglab's ExactResume
callback: Lightning 2.6 restores stateful loaders itself only when the loader was not
already built to estimate the step count, which the LR schedule needs), so a run
killed mid-epoch continues at the next batch of the same order. It draws its worker
seeds from its own generator, so starting an epoch's iterator never shifts the global
random state that dropout and friends use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation, independent for each (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


class SeededSampler(DistributedSampler):
    """Shuffled indices from (seed, epoch); yields (index, augmentation seed) pairs.

    It is a DistributedSampler so that Lightning keeps it under DDP instead of wrapping
    it: each process takes its own shard of the same permutation (rank and world size
    are read when iterating, once the process group exists).
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True):  # noqa: D107 - no DistributedSampler.__init__
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0
        self.drop_last = False
        self.pending_skip = 0  # samples of this process's shard already trained on (a resumed epoch)

    @property
    def num_replicas(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def num_samples(self) -> int:
        return math.ceil(self.size / self.num_replicas)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.pending_skip = 0  # a resume position only applies to the epoch it was saved in
        self.epoch = epoch

    def resume_at(self, epoch: int, samples_done: int) -> None:
        self.epoch, self.pending_skip = epoch, samples_done

    def order(self) -> list[int]:
        """This process's indices for the current epoch (padded so every shard is equally long)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed((self.seed & 0xFFFFFFFF) * 100_003 + self.epoch)
            indices = torch.randperm(self.size, generator=g).tolist()
        else:
            indices = list(range(self.size))
        total = self.num_samples * self.num_replicas
        indices += indices[: total - len(indices)]
        return indices[self.rank : total : self.num_replicas]

    def __iter__(self):
        skip, self.pending_skip = self.pending_skip, 0
        for index in self.order()[skip:]:
            yield index, augmentation_seed(self.seed, self.epoch, index)


class ResumableLoader(DataLoader):
    """A training DataLoader over a SeededSampler whose position is saved in checkpoints."""

    def __init__(self, dataset, *args, **kwargs):
        sampler = kwargs.get("sampler")
        if not isinstance(sampler, SeededSampler):
            raise TypeError("ResumableLoader needs sampler=SeededSampler(...)")
        kwargs.setdefault("generator", torch.Generator().manual_seed(sampler.seed & 0xFFFFFFFF))
        super().__init__(dataset, *args, **kwargs)
        self._batches_done = 0

    def __iter__(self):
        # A generator: its body (and the sampler's) runs at the first batch, after
        # Lightning has set the epoch and restored a saved position.
        self._batches_done = self.sampler.pending_skip // self.batch_size
        for batch in super().__iter__():
            self._batches_done += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "samples_done": self._batches_done * self.batch_size, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") == self.sampler.seed:  # another seed means another order: start the epoch afresh
            self.sampler.resume_at(int(state["epoch"]), int(state["samples_done"]))
