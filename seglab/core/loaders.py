"""Loaders for every task: the training order is a function of (seed, epoch) and its
position is saved in checkpoints (exact mid-epoch resume); evaluation under DDP is
sharded without padding, so no image is counted twice in a dataset-level metric."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from seglab.data.resumable import ResumableLoader, SeededShuffle


class ShardSampler(Sampler):
    """Evaluation under DDP: rank r takes images r, r+W, r+2W, ... with no padding (Lightning's
    default DistributedSampler pads the set with repeats)."""

    def __init__(self, size: int, rank: int, world_size: int):
        self.indices = range(rank, size, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class Collate:
    """A batch of dataset items: their targets collated by the target kind (`kind.collate`:
    stacked tensors, or a list of per-image records), everything else by PyTorch's default
    collate; images of different sizes explained instead of torch.stack's "stack expects each
    tensor to be equal size"."""

    def __init__(self, kind=None):
        self.kind = kind  # None: items without targets (unlabelled images)

    def __call__(self, items: list[dict]) -> dict:
        try:
            if self.kind is None or "target" not in items[0]:
                return default_collate(items)
            batch = default_collate([{k: v for k, v in item.items() if k != "target"} for item in items])
            batch["target"] = self.kind.collate([item["target"] for item in items])
            return batch
        except RuntimeError as e:
            if "equal size" not in str(e) or not isinstance(items[0], dict):
                raise
            from seglab.errors import DataError

            key = next((k for k, v in items[0].items() if torch.is_tensor(v)
                        and len({tuple(item[k].shape) for item in items}) > 1), None)
            seen = {}
            for item in items:
                seen.setdefault(tuple(item[key].shape[-2:]) if key else (), item.get("id", "?"))
            sizes = ", ".join(f"{'x'.join(map(str, hw))} ({name!r})" for hw, name in list(seen.items())[:3])
            raise DataError(f"one batch holds images of different sizes: {sizes}; set data.image_size [height, width] "
                            "(or a crop in augment.train) so that every image of a batch has one size") from None


def _common(dataset, cfg, batch: int, train: bool, world_size: int, kind=None) -> dict:
    workers = cfg.data.workers()
    return dict(
        batch_size=batch, num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        collate_fn=Collate(kind),
        # BatchNorm cannot train on a last batch of one image.
        drop_last=train and len(dataset) > batch * world_size,
    )


def train_loader(dataset, cfg, rank: int = 0, world_size: int = 1) -> ResumableLoader:
    """The training loader: the configured order (shuffle or class-balanced), resumable."""
    if cfg.data.sampler.name != "shuffle":
        from seglab.data.sampling import build_train_sampler

        order = build_train_sampler(dataset, cfg.data.sampler, cfg.seed, rank, world_size)
    else:
        order = SeededShuffle(len(dataset), cfg.seed)
    return ResumableLoader(dataset, sampler=order, seed=cfg.seed,
                           **_common(dataset, cfg, cfg.data.batch_size, True, world_size, dataset.kind))


def draw_loader(dataset, cfg, batch: int, batches: int, seed: int, rank: int = 0, world_size: int = 1) -> ResumableLoader:
    """`batches` batches drawn uniformly with replacement per epoch (unlabelled images beside
    the labelled ones), resumable like the training loader."""
    from seglab.data.sampling import WeightedEpochSampler

    order = WeightedEpochSampler(torch.ones(len(dataset)), batches * batch * world_size, seed, rank, world_size)
    common = _common(dataset, cfg, batch, True, world_size)
    common["drop_last"] = False
    return ResumableLoader(dataset, sampler=order, seed=seed, **common)


def eval_loader(dataset, cfg, rank: int = 0, world_size: int = 1, batch_size: int | None = None) -> DataLoader:
    """In dataset order; under DDP a shard per process. Its own generator: starting evaluation
    workers never draws from the global random state."""
    batch = batch_size or cfg.data.val_batch_size or cfg.data.batch_size
    shard = ShardSampler(len(dataset), rank, world_size) if world_size > 1 else None
    return DataLoader(dataset, shuffle=False, sampler=shard, generator=torch.Generator().manual_seed(cfg.seed & 0xFFFFFFFF),
                      **_common(dataset, cfg, batch, False, world_size, dataset.kind))


class LabData(L.LightningDataModule):
    """Builds the loaders once the trainer knows this process's rank; with unlabelled images
    (consistency training) the training loader yields {"labelled": ..., "unlabelled": ...}."""

    def __init__(self, cfg, train_set, val_set, unlabelled_set=None):
        super().__init__()
        self.cfg, self.train_set, self.val_set, self.unlabelled_set = cfg, train_set, val_set, unlabelled_set

    def train_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        labelled = train_loader(self.train_set, self.cfg, rank, world)
        if self.unlabelled_set is None:
            return labelled
        from lightning.pytorch.utilities import CombinedLoader

        batch = getattr(self.unlabelled_set, "batch_size", None) or self.cfg.data.batch_size
        # As many batches as the labelled loader has: an epoch stays one pass over the labelled images.
        unlabelled = draw_loader(self.unlabelled_set, self.cfg, batch, len(labelled), self.cfg.seed + 1, rank, world)
        return CombinedLoader({"labelled": labelled, "unlabelled": unlabelled}, mode="min_size")

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_set, self.cfg, self.trainer.global_rank, self.trainer.world_size)
