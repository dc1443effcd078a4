"""Class-balanced sampling: weights from class presence, the expected draw rate, DDP sharding."""

import math

import numpy as np
import pytest
import torch

from seglab.config import config_from_dict
from seglab.core.loaders import eval_loader, train_loader
from seglab.data.labels import LabelSpec
from seglab.data.presence import class_presence
from seglab.data.resumable import SeededShuffle
from seglab.data.sources.base import Source
from seglab.data.sampling import WeightedEpochSampler, class_balanced_weights


class MaskSource(Source):
    def __init__(self, masks, classes, target="class_map"):
        self.masks = masks
        self.labels = LabelSpec(classes=tuple(classes), ignore_index=255, target=target)

    def __len__(self):
        return len(self.masks)

    def load_target(self, i):
        return self.masks[i]


class MaskDataset(torch.utils.data.Dataset):
    def __init__(self, masks, classes=("Background", "common", "rare"), target="class_map"):
        self.source = MaskSource(masks, classes, target)

    def __len__(self):
        return len(self.source)

    @property
    def kind(self):
        return self.source.labels.kind

    def __getitem__(self, key):
        # training loaders send (index, augmentation seed), as LabDataset accepts
        i = key[0] if isinstance(key, tuple) else key
        return {"index": i, "target": torch.from_numpy(self.source.masks[i].astype(np.int64))}


def rare_dataset(n=20):
    """n images with Background and 'common'; image 7 also holds 'rare'; image 3 has ignored pixels."""
    masks = []
    for i in range(n):
        m = np.zeros((8, 8), np.uint8)
        m[:4] = 1
        if i == 7:
            m[6:, 6:] = 2
        if i == 3:
            m[0, :] = 255
        masks.append(m)
    return MaskDataset(masks)


def test_presence_and_weights():
    ds = rare_dataset()
    presence = torch.from_numpy(class_presence(ds.source, ds.source.labels))
    assert presence.shape == (20, 3) and presence[:, :2].all()
    assert presence[:, 2].nonzero().flatten().tolist() == [7]
    w = class_balanced_weights(presence, 0.5)
    assert w[7] == pytest.approx(math.sqrt(20)) and torch.allclose(w[torch.arange(20) != 7], torch.ones(19, dtype=w.dtype))
    assert torch.allclose(class_balanced_weights(presence, 0.0), torch.ones(20, dtype=w.dtype))


def test_presence_of_multilabel_masks():
    m = np.zeros((3, 4, 4), bool)
    m[0, 0, 0] = m[2, 1, 1] = True
    source = MaskDataset([m, np.zeros((3, 4, 4), bool)], ("a", "b", "c"), "binary_masks").source
    presence = torch.from_numpy(class_presence(source, source.labels))
    assert presence.tolist() == [[True, False, True], [False, False, False]]
    assert class_balanced_weights(presence, 1.0).tolist() == [2.0, 1.0]  # an image with no labels weighs 1


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_rare_image_is_drawn_at_the_expected_rate(power):
    ds = rare_dataset()
    weights = class_balanced_weights(torch.from_numpy(class_presence(ds.source, ds.source.labels)), power)
    sampler = WeightedEpochSampler(weights, len(ds), seed=0)
    drawn = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn.extend(sampler)
    drawn = np.array(drawn)
    assert len(drawn) == 200 * 20
    w_rare = 20 ** power  # the rare class is in 1 of 20 images; the others are in all
    expected = w_rare / (w_rare + 19)
    sigma = math.sqrt(expected * (1 - expected) / len(drawn))
    assert abs((drawn == 7).mean() - expected) < 4 * sigma
    # the other images share the rest evenly
    others = np.bincount(drawn, minlength=20)[np.arange(20) != 7] / len(drawn)
    assert np.allclose(others, (1 - expected) / 19, atol=4 * math.sqrt((1 - expected) / 19 / len(drawn)))


def test_epochs_differ_are_reproducible_and_shard_across_processes():
    weights = torch.rand(50, generator=torch.Generator().manual_seed(0)) + 0.1
    single = WeightedEpochSampler(weights, 50, seed=3)
    single.set_epoch(4)
    full = list(single)
    single.set_epoch(5)
    assert list(single) != full
    single.set_epoch(4)
    assert list(single) == full  # a resumed epoch replays the same draw
    shards = []
    for rank in range(3):
        s = WeightedEpochSampler(weights, 50, seed=3, rank=rank, world_size=3)
        s.set_epoch(4)
        shards.append(list(s))
        assert len(s) == len(shards[-1]) == 17  # ceil(50 / 3)
    # the processes split one shared draw of 51 (50 rounded up to the world size)
    interleaved = [shards[r][k] for k in range(17) for r in range(3)]
    assert interleaved[:50] == full


def test_train_loader_uses_the_configured_sampler():
    ds = rare_dataset()
    cfg = config_from_dict({"data": {"batch_size": 4, "num_workers": 0, "sampler": {"name": "class_balanced", "power": 1.0, "num_samples": 40}}})
    # the training loader wraps the configured order in the resumable sampler (exact resume)
    loader = train_loader(ds, cfg)
    assert isinstance(loader.sampler.sampler, WeightedEpochSampler) and len(loader.sampler) == 40
    assert sum(len(b["index"]) for b in loader) == 40
    ddp = train_loader(ds, cfg, rank=1, world_size=2)
    assert isinstance(ddp.sampler.sampler, WeightedEpochSampler) and len(ddp.sampler) == 20
    evaluation = eval_loader(ds, cfg)
    assert not isinstance(getattr(evaluation.sampler, "sampler", None), WeightedEpochSampler)
    assert [i for b in evaluation for i in b["index"].tolist()] == list(range(20))  # every image once, in order
    plain = config_from_dict({"data": {"batch_size": 4, "num_workers": 0}})
    assert isinstance(train_loader(ds, plain).sampler.sampler, SeededShuffle)
