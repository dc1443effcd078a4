"""Probabilities of one run or an ensemble, batch by batch, and what is made of them:
dataset-level scores (`evaluate`) and final predictions (`predictions`, for writers and
pseudo-labels).

Every member predicts the same images, read from one *reference* dataset (the first
member's config, a k-fold's base config, or `--data`), each at its own input size and
normalisation, with its own TTA and sliding window; the target kind maps its outputs to
the reference batch's size and combines the members by their weights (probabilities: the
weighted mean). The decision and the post-processing are the first member's (its task,
its tuned thresholds). Everything streams: one batch of outputs per member is alive at a
time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from seglab.config import load_config
from seglab.config.loading import saved_config
from seglab.core.loaders import eval_loader
from seglab.data import build_dataset, resolve_labels
from seglab.data.dataset import LabDataset
from seglab.data.transforms import build_transform
from seglab.errors import SeglabError
from seglab.inference.ensemble import Member, check_compatible
from seglab.inference.tta import tta_probs
from seglab.progress import progress

AMP = {"bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16, "16": torch.float16, "16-mixed": torch.float16}


@dataclass
class Prediction:
    id: str
    image_path: Path
    probs: torch.Tensor   # [C, H, W] at the image's original size (segmentation) or [C]
    output: np.ndarray    # the decision after post-processing: class map, C x H x W masks, or a class index


@torch.no_grad()
def member_probs(member: Member, images: torch.Tensor) -> torch.Tensor:
    """One member's probabilities for uint8 images on its device: AMP as trained (CUDA),
    tile by tile when its sliding window is on, averaged over its TTA views."""
    run = member.run
    module, task, cfg = run.module, run.task, run.cfg
    dtype = AMP.get(cfg.trainer.precision)

    def plain(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=x.device.type == "cuda" and dtype is not None):
            if cfg.sliding_window.enabled:
                from seglab.core.sliding import sliding_window_from_config

                return sliding_window_from_config(lambda t: task.probabilities(module(t)), x, cfg.sliding_window).float()
            return task.probabilities(module(x))  # float32: the task's probabilities are, whatever autocast computed

    return tta_probs(plain, images, member.tta, task.kind)


class Reference(NamedTuple):
    """The config the images (and targets) are read from, and its class list."""

    cfg: object
    labels: object


def reference(members: list[Member], data_config=None, overrides=()) -> Reference:
    """The reference of `data_config`: a config file or run folder (read once here), None for
    the first member's own, or a Reference already read (returned as it is); `overrides`
    (`data.key=value`) apply to it, e.g. another data.root for the test images."""
    if isinstance(data_config, Reference):
        return data_config
    if data_config is None and not overrides:
        return Reference(members[0].run.cfg, members[0].run.labels)
    path = reference_path(members, data_config)
    cfg = load_config(path, list(overrides), saved=saved_config(path))
    labels = resolve_labels(cfg)
    if list(labels.classes) != list(members[0].run.labels.classes):
        raise SeglabError(f"{path}: its classes {list(labels.classes)} differ from the runs' {list(members[0].run.labels.classes)}")
    return Reference(cfg, labels)


def reference_path(members: list[Member], data_config=None) -> Path:
    """The config file the images are read from: `data_config` (a file, or a run folder's
    config.yaml) or the first member's config.yaml."""
    path = Path(data_config) if data_config is not None else members[0].run.path
    return path / "config.yaml" if path.is_dir() else path


def _view_key(cfg) -> str:
    """What decides how a run reads an image: its resize and eval transforms."""
    return json.dumps([cfg.data.image_size, [s.model_dump() for s in cfg.augment.eval]])


SPACES = ("train", "submission")  # class spaces: the runs' training classes, or their submission.classes


@torch.no_grad()
def stream(members: list[Member], split: str, data_config=None, with_targets: bool = False,
           batch_size: int | None = None, spaces: tuple[str, ...] = ("train",)) -> Iterator[tuple[dict, dict, LabDataset]]:
    """(reference batch, {space: weighted mean probabilities} on the first member's device,
    reference dataset), for each class space asked: "train" (the members' one training class
    list) and/or "submission" (each member's probabilities merged into its submission classes
    before averaging, so members trained on different splits of a class combine).

    Dense probabilities are at the reference batch's size (its data.image_size, else the
    images' own). `data_config` as for `reference`."""
    check_compatible(members, spaces)  # members built by hand, too: never average mismatched class lists
    ref_cfg, ref_labels = reference(members, data_config)
    ref = build_dataset(ref_cfg, split, ref_labels, train=False, with_targets=with_targets)
    loader = lambda dataset: eval_loader(dataset, ref_cfg, batch_size=batch_size)  # noqa: E731
    # Members that read the images alike share one stream of batches.
    ref_key = _view_key(ref_cfg)
    streams = {}
    for m in members:
        key = _view_key(m.run.cfg)
        if key != ref_key and key not in streams:
            view = LabDataset(ref.source, build_transform(m.run.cfg.augment, m.run.cfg.data.image_size, False), False)
            streams[key] = iter(loader(view))
    total_weight = sum(m.weight for m in members)
    first = members[0].run
    kind = first.task.kind
    for ref_batch in progress(loader(ref), f"{split}: {len(members)} member(s) predicting"):
        size = tuple(ref_batch["image"].shape[-2:])
        views = {key: next(s) for key, s in streams.items()}
        views[ref_key] = ref_batch
        means: dict[str, torch.Tensor] = {}
        for m in members:
            if m.weight == 0:
                continue
            p = kind.to_device(member_probs(m, views[_view_key(m.run.cfg)]["image"].to(m.run.device)), first.device)
            p = kind.weighted(kind.output_at(p, size), m.weight / total_weight)
            for space in spaces:
                means[space] = kind.summed(means.get(space), m.run.to_submission(p) if space == "submission" else p)
        yield ref_batch, {space: kind.averaged(total, 1) for space, total in means.items()}, ref


def in_space(run, space: str) -> tuple:
    """(class list, decision thresholds) of a run in a class space."""
    return (run.submission_labels, run.submission_thresholds) if space == "submission" else (run.labels, run.thresholds)


def final_output(run, probs: torch.Tensor, space: str = "train") -> np.ndarray:
    """One image's probabilities [1, C, ...] -> its decision after post-processing (numpy, as
    the target kind holds it: a class map [H, W], C x H x W booleans, or a class index)."""
    labels, thresholds = in_space(run, space)
    pred = run.task.kind.decision_array(run.task.decide(probs, thresholds)[0], labels)
    return run.task.postprocess(pred, run.cfg, labels, tuned_plan(run, labels))


def tuned_plan(run, labels) -> dict | None:
    """The run's tuned post-processing (RUN/postprocess.json) for a class list, by class
    name (a class a merge made has none), or None: the config's applies."""
    if run.postprocess_plan is None:
        return None
    if list(labels.classes) == list(run.labels.classes):
        return run.postprocess_plan
    names = list(labels.classes)
    return {names.index(run.labels.classes[c]): steps for c, steps in run.postprocess_plan.items()
            if run.labels.classes[c] in names}


def resolution(cfg, original_size: bool) -> str:
    if original_size:
        return "original size of each image"
    return f"{cfg.data.image_size[0]}x{cfg.data.image_size[1]} (data.image_size)" if cfg.data.image_size else "each image's own size"


def decide(run, probs: torch.Tensor, space: str = "train") -> torch.Tensor:
    """A batch's decisions as `evaluate` scores them: the task's decision with the run's
    thresholds, then its post-processing (the tuned plan, else the config's)."""
    labels, thresholds = in_space(run, space)
    pred = run.task.decide(probs, thresholds)
    plan = tuned_plan(run, labels)
    if plan or (plan is None and run.cfg.postprocess.morphology):  # morphology of dense decisions, image by image
        pred = torch.stack([torch.as_tensor(run.task.postprocess(p.cpu().numpy(), run.cfg, labels, plan)) for p in pred])
        return pred.to(run.device)
    return pred


@torch.no_grad()
def scored(members: list[Member], split: str, data_config=None, original_size: bool = False,
           batch_size: int | None = None, spaces: tuple[str, ...] = ("train",)) -> Iterator[tuple[dict, dict]]:
    """({space: probabilities}, {space: targets}) on the first member's device: batch by batch
    at the dataset's resolution, or one image at a time at its original size against its
    original target. What `evaluate` and `tune-thresholds` score."""
    run = members[0].run
    kind = run.task.kind

    def targets(target) -> dict:
        return {s: run.task.merge_targets(target, run.merge) if s == "submission" and run.merge else target for s in spaces}

    for batch, probs, dataset in stream(members, split, data_config, True, batch_size, spaces):
        if not original_size:
            yield probs, targets(kind.to_device(batch["target"], run.device))
            continue
        for j, index in enumerate(batch["index"].tolist()):
            target = kind.to_device(kind.loaded_batch(dataset.source.load_target(index)), run.device)
            yield {s: at_original_size(run, p[j : j + 1], dataset.source, index) for s, p in probs.items()}, targets(target)


@torch.no_grad()
def evaluate(members: list[Member], split: str = "val", data_config=None, original_size: bool = False,
             batch_size: int | None = None) -> tuple[dict, object]:
    """The dataset-level scores of the (weighted) probabilities on a labelled split, and the
    metric object: at the dataset's resolution (as validation scores), or with
    `original_size` against the original targets, scoring exactly what `predict` writes.
    The decision, tuned thresholds and post-processing apply."""
    scores, metrics = evaluate_in_spaces(members, split, data_config, original_size, batch_size)
    return scores, next(iter(metrics.values()))


@torch.no_grad()
def evaluate_in_spaces(members: list[Member], split: str = "val", data_config=None, original_size: bool = False,
                       batch_size: int | None = None) -> tuple[dict, dict]:
    """`evaluate`, with the metric object of each class space scored ({"train": ...,
    "submission": ...} with submission.classes): what k-fold pools over the folds."""
    from seglab.core.module import submission_scores

    run = members[0].run
    ref = reference(members, data_config)
    # Members trained on different class lists meet only in their shared submission classes.
    same = all(list(m.run.labels.classes) == list(run.labels.classes) for m in members)
    spaces = (("train",) if same else ()) + (("submission",) if run.merge or not same else ())
    metrics = {s: run.task.metric(in_space(run, s)[0], run.device) for s in spaces}
    count = 0
    for probs, target in scored(members, split, ref, original_size, batch_size, spaces):
        count += len(target[spaces[0]])
        for s, metric in metrics.items():
            metric.update(decide(run, probs[s], s), target[s])
    scores = {}
    for s, m in metrics.items():
        computed = m.compute(list(in_space(run, s)[0].classes))
        scores.update(submission_scores(computed) if s == "submission" and "train" in spaces else computed)
    views = [m.tta.model_dump() for m in members]
    scores.update(split=split, images=count, resolution=resolution(ref.cfg, original_size),
                  members=[m.name for m in members], weights=[m.weight for m in members],
                  tta=views[0] if all(v == views[0] for v in views) else views)
    if run.thresholds is not None:
        scores["thresholds"] = dict(zip(ref.labels.classes, run.thresholds.tolist()))
        scores["thresholds_from"] = run.thresholds_source
    if run.postprocess_plan is not None:
        scores["postprocess_from"] = run.postprocess_source
    return scores, metrics


@torch.no_grad()
def predictions(members: list[Member], split: str = "test", data_config=None, batch_size: int | None = None,
                space: str = "submission") -> Iterator[Prediction]:
    """One Prediction per image, in split order, at the image's original size, in the
    submission's classes (what writers write) or, with space="train", the training ones
    (what pseudo-labels train on)."""
    run = members[0].run
    for batch, probs, dataset in stream(members, split, data_config, False, batch_size, (space,)):
        for j, index in enumerate(batch["index"].tolist()):
            p = at_original_size(run, probs[space][j : j + 1], dataset.source, index)
            yield Prediction(batch["id"][j], dataset.source.image_path(index), p[0], final_output(run, p, space))


def at_original_size(run, probs: torch.Tensor, source, index: int) -> torch.Tensor:
    """One image's output [1, ...] at its original size (`kind.output_at`: dense
    probabilities resized, per-image ones as they are)."""
    return run.task.kind.output_at(probs, source.original_size(index))
