"""Ensembles: average the probabilities of several trained runs, batch by batch.

A member is a run folder plus a checkpoint (best, last or a .ckpt path) and a
weight; a k-fold output folder stands for all its folds. Every member predicts the
same images, read from one *reference* dataset (the first member's config, or a k-fold's
base config), each at its own input size and normalisation, with its own TTA; its
probabilities are resized to the reference batch and averaged with the weights. Only
one batch of probabilities per member is alive at a time, however many images there
are. Members trained for different class lists are an error.

Evaluation streams into one confusion matrix; predictions stream, one image at a
time at its original size, into a submission writer or the pseudo-labeller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from seglab.config import Config, load_config
from seglab.data import build_dataset
from seglab.data.dataset import SegmentationDataset
from seglab.data.labels import LabelSpec
from seglab.data.transforms import build_transform
from seglab.errors import ConfigError, SeglabError
from seglab.metrics import ConfusionMatrix
from seglab.tta import TTAConfig, tta_probs

CHECKPOINT_NAMES = ("best", "last")


@dataclass
class Member:
    run_dir: Path
    checkpoint: str = "best"
    weight: float = 1.0
    tta: TTAConfig | None = None  # None = the run's own config.tta
    # filled by load()
    cfg: Config | None = field(default=None, repr=False)
    labels: LabelSpec | None = field(default=None, repr=False)
    module: object = field(default=None, repr=False)

    def load(self, device: torch.device) -> "Member":
        from seglab.inference import load_run

        self.cfg, self.labels, self.module = load_run(self.run_dir, self.checkpoint, device)
        if self.tta is None:
            self.tta = self.cfg.tta
        return self

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        from seglab.inference import predict_probs

        return tta_probs(lambda x: predict_probs(self.module, x), images, self.tta)

    @property
    def name(self) -> str:
        return f"{self.run_dir}:{self.checkpoint}"


def is_kfold_dir(path: Path) -> bool:
    return (Path(path) / "kfold.json").is_file() or (Path(path) / "folds" / "folds.json").is_file()


def kfold_members(path: Path) -> list[Path]:
    runs = sorted((p for p in Path(path).glob("fold_*") if (p / "config.yaml").is_file()), key=lambda p: int(p.name.split("_")[1]))
    if not runs:
        raise SeglabError(f"{path}: a k-fold folder without trained folds (no fold_*/config.yaml)")
    return runs


def parse_member(text: str) -> tuple[Path, str]:
    """`RUN_DIR`, `RUN_DIR:last`, `RUN_DIR:best` or `RUN_DIR:path/to/file.ckpt`."""
    if ":" in text:
        head, tail = text.rsplit(":", 1)
        if tail in CHECKPOINT_NAMES or tail.endswith(".ckpt"):
            return Path(head), tail
    return Path(text), "best"


def resolve_members(specs: list[str], weights: list[float] | None = None, tta: TTAConfig | None = None) -> tuple[list[Member], Path | None]:
    """Members for the CLI's RUN_DIR... list (k-fold folders expanded, one weight per
    given spec shared by its folds) and the k-fold base config to read images from, if any."""
    if not specs:
        raise ConfigError("ensemble: give at least one RUN_DIR")
    if weights is not None and len(weights) != len(specs):
        raise ConfigError(f"--weights: {len(weights)} weights for {len(specs)} members")
    members, base = [], None
    for i, spec in enumerate(specs):
        path, ckpt = parse_member(spec)
        weight = 1.0 if weights is None else float(weights[i])
        if weight < 0:
            raise ConfigError(f"--weights: negative weight {weight} for {spec}")
        if is_kfold_dir(path):
            folds = kfold_members(path)
            if base is None and i == 0 and (path / "config.yaml").is_file():
                base = path / "config.yaml"
            members.extend(Member(run, ckpt, weight / len(folds), tta) for run in folds)
        else:
            if not (path / "config.yaml").is_file():
                raise SeglabError(f"{path}: not a run folder or k-fold folder (no config.yaml)")
            members.append(Member(path, ckpt, weight, tta))
    if sum(m.weight for m in members) <= 0:
        raise ConfigError("--weights: the weights sum to zero")
    return members, base


def check_same_classes(members: list[Member], labels: LabelSpec) -> None:
    for m in members:
        if list(m.labels.classes) != list(labels.classes):
            raise SeglabError(
                f"{m.run_dir}: trained for classes {list(m.labels.classes)}, but the ensemble's are {list(labels.classes)}; "
                "members must share one class list"
            )


def reference(members: list[Member], data_config: str | Path | None) -> tuple[Config, LabelSpec]:
    """The config the images (and masks) are read from, and its labels."""
    if data_config is None:
        return members[0].cfg, members[0].labels
    from seglab.data import resolve_labels

    path = Path(data_config)
    cfg = load_config(path / "config.yaml" if path.is_dir() else path)
    return cfg, resolve_labels(cfg)


def decide(member: "Member", probs: torch.Tensor) -> torch.Tensor:
    """The decision from averaged probabilities [B, C, H, W], by the members' task
    (argmax, or per-class thresholds for multilabel): the one place that rule lives."""
    return member.module.task.predict(probs, member.module.thresholds)


@torch.no_grad()
def iter_prob_batches(members: list[Member], ref_cfg: Config, ref_labels: LabelSpec, split: str,
                      with_masks: bool, batch_size: int | None = None) -> Iterator[tuple[dict, torch.Tensor, SegmentationDataset]]:
    """(reference batch, weighted mean probabilities [B, C, h, w] on the device, reference dataset).

    h x w is the reference batch's size (its data.image_size, else the images' own).
    """
    check_same_classes(members, ref_labels)
    ref = build_dataset(ref_cfg, split, ref_labels, train=False, with_masks=with_masks)
    batch = batch_size or ref_cfg.data.val_batch_size or ref_cfg.data.batch_size
    workers = ref_cfg.data.workers()

    def loader(dataset):
        return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers, pin_memory=torch.cuda.is_available())

    # Each member sees the reference images through its own resize / eval transforms;
    # members that read them alike share one stream.
    ref_key = _view_key(ref_cfg)
    streams = {}
    for m in members:
        key = _view_key(m.cfg)
        if key != ref_key and key not in streams:
            view = SegmentationDataset(ref.source, build_transform(m.cfg.augment, m.cfg.data.image_size, False), False)
            streams[key] = iter(loader(view))
    total_weight = sum(m.weight for m in members)
    device = members[0].module.device
    for ref_batch in loader(ref):
        size = tuple(ref_batch["image"].shape[-2:])
        views = {key: next(stream) for key, stream in streams.items()}
        views[ref_key] = ref_batch
        mean = None
        for m in members:
            if m.weight == 0:
                continue
            p = m.probs(views[_view_key(m.cfg)]["image"].to(m.module.device)).to(device)
            if tuple(p.shape[-2:]) != size:
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            p = p * (m.weight / total_weight)
            mean = p if mean is None else mean.add_(p)
        yield ref_batch, mean, ref


def _view_key(cfg: Config) -> str:
    """What decides how a run reads an image: its resize and eval transforms."""
    return json.dumps([cfg.data.image_size, [s.model_dump() for s in cfg.augment.eval]])


def load_members(members: list[Member], device: str | None = None) -> list[Member]:
    from seglab.inference import pick_device

    dev = pick_device(device)
    return [m if m.module is not None else m.load(dev) for m in members]


@torch.no_grad()
def evaluate_members(members: list[Member], split: str = "val", data_config=None, device: str | None = None,
                     batch_size: int | None = None) -> tuple[dict, ConfusionMatrix]:
    """Dataset-level scores of the weighted probability average, and its confusion matrix."""
    members = load_members(members, device)
    ref_cfg, labels = reference(members, data_config)
    # The task's metric: a confusion matrix (multiclass) or Dice sums (multilabel).
    cm = members[0].module.task.metric(labels).to(members[0].module.device)
    count = 0
    for batch, probs, _ in iter_prob_batches(members, ref_cfg, labels, split, True, batch_size):
        cm.update(decide(members[0], probs), batch["mask"].to(probs.device))
        count += len(batch["id"])
    scores = cm.compute(list(labels.classes))
    scores.update(split=split, images=count, members=[m.name for m in members], weights=[m.weight for m in members])
    return scores, cm


@torch.no_grad()
def iter_member_probs(members: list[Member], split: str = "test", data_config=None, device: str | None = None,
                      batch_size: int | None = None) -> Iterator[tuple[str, int, torch.Tensor, LabelSpec, SegmentationDataset]]:
    """(sample id, index, mean probabilities [C, H, W] at the image's original size, labels, reference dataset)."""
    members = load_members(members, device)
    ref_cfg, labels = reference(members, data_config)
    for batch, probs, ref in iter_prob_batches(members, ref_cfg, labels, split, False, batch_size):
        for j, index in enumerate(batch["index"].tolist()):
            size = ref.source.original_size(index)
            p = probs[j : j + 1]
            if tuple(p.shape[-2:]) != tuple(size):
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            yield batch["id"][j], index, p[0], labels, ref


def iter_ensemble_predictions(members: list[Member], split: str = "test", data_config=None, device: str | None = None,
                              batch_size: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(sample id, class map at original size) in split order: what submission writers take."""
    from seglab.inference import final_prediction

    members = load_members(members, device)
    for sample_id, _, p, _, _ in iter_member_probs(members, split, data_config, device, batch_size):
        yield sample_id, final_prediction(members[0].module, p[None], tuple(p.shape[-2:]))


def write_scores(path: Path, scores: dict) -> None:
    from seglab.io import write_json
    from seglab.training import _finite

    write_json(path, _finite(scores))


def describe(members: list[Member]) -> str:
    return "\n".join(f"  {m.weight:.4g} x {m.name}" for m in members)


__all__ = [
    "Member", "resolve_members", "evaluate_members", "iter_ensemble_predictions", "iter_member_probs",
    "decide", "is_kfold_dir", "kfold_members",
]
