"""The resumable training order (seglab.data.resumable), without training."""

import torch
from torch.utils.data import Dataset

from seglab.data.resumable import ResumableLoader, ResumableSampler, SeededShuffle


class Indices(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, key):
        index, seed = key
        return {"index": index, "seed": seed}


def epoch_batches(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [(b["index"].tolist(), b["seed"].tolist()) for b in loader]


def test_order_depends_on_seed_and_epoch_only():
    a, b = SeededShuffle(10, seed=3), SeededShuffle(10, seed=3)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(1)  # the global random state plays no part
    assert list(b) == first and sorted(first) == list(range(10))
    a.set_epoch(1)
    assert list(a) != first


def test_resumed_epoch_continues_at_the_next_batch_with_the_same_augmentation_seeds():
    full = ResumableLoader(Indices(), sampler=SeededShuffle(10, 7), seed=7, batch_size=3, drop_last=True)
    batches = epoch_batches(full, 2)
    it = iter(full)
    next(it), next(it)
    state = full.state_dict()
    assert state == {"epoch": 2, "samples_done": 6, "seed": 7}

    resumed = ResumableLoader(Indices(), sampler=SeededShuffle(10, 7), seed=7, batch_size=3, drop_last=True)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # Lightning sets the (same) epoch before the first batch
    rest = [(b["index"].tolist(), b["seed"].tolist()) for b in resumed]
    assert rest == batches[2:]
    assert resumed.state_dict()["samples_done"] == 9
    assert epoch_batches(resumed, 3) == epoch_batches(full, 3)  # the next epoch is whole again


def test_a_position_gets_its_own_seed_so_repeated_draws_differ():
    class Repeats(torch.utils.data.Sampler):
        def __iter__(self):
            return iter([4, 4, 4])

        def __len__(self):
            return 3

    seeds = [seed for _, seed in ResumableSampler(Repeats(), seed=0)]
    assert len(set(seeds)) == 3


def test_another_seed_starts_the_epoch_afresh():
    loader = ResumableLoader(Indices(), sampler=SeededShuffle(10, 1), seed=1, batch_size=2)
    loader.load_state_dict({"epoch": 0, "samples_done": 4, "seed": 2})
    assert len(list(loader)) == 5
