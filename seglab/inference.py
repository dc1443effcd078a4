"""Inference from a run folder: load the trained model, evaluate, stream predictions.

Everything streams batch by batch: memory stays bounded however many images there
are (no list of all logits is ever held).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from seglab.config import Config, load_config
from seglab.data import build_dataset
from seglab.data.labels import LabelSpec
from seglab.errors import CheckpointError, SeglabError
from seglab.postprocess import load_thresholds, postprocess
from seglab.sliding import sliding_window_from_config
from seglab.training import SegmentationModule, check_checkpoint_meta, check_state_dict_fits, load_checkpoint_file
from seglab.tta import TTAConfig, tta_probs


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    path = Path(checkpoint) if checkpoint.endswith(".ckpt") else run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train the run first, or pick --checkpoint last)")
    return path


def load_run(run_dir: str | Path, checkpoint: str = "best", device: torch.device | None = None,
             tuned_thresholds: bool = True) -> tuple[Config, LabelSpec, SegmentationModule]:
    """The run's config, labels and trained module (eval mode); `module.thresholds` are the
    tuned ones from RUN/thresholds.json when present (and `tuned_thresholds`), else the config's."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SeglabError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    labels = LabelSpec.from_json(json.loads((run_dir / "labels.json").read_text()))
    # The trained weights replace any pretrained file the config named; do not read it again.
    build_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": None, "encoder_weights": None})})
    # The loss is never used here; uniform frequencies let `class_weights: auto` build
    # without a pass over the training masks.
    uniform = torch.full((labels.num_classes,), 1.0 / labels.num_classes)
    module = SegmentationModule(build_cfg, labels, class_frequencies=uniform)
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint_file(path)  # weights_only=True: a checkpoint cannot run code
    check_checkpoint_meta(state.get("seglab", {}), cfg, labels, str(path))
    check_state_dict_fits(module, state.get("state_dict", {}), str(path))
    module.load_state_dict(state["state_dict"])
    tuned = load_thresholds(run_dir, labels.classes) if tuned_thresholds and labels.task == "multilabel" else None
    module.thresholds_source = "config"
    if tuned is not None:
        module.thresholds.copy_(tuned)
        module.thresholds_source = str(run_dir / "thresholds.json")
    module.to(device or pick_device()).eval()
    return cfg, labels, module


def predict_probs(module: SegmentationModule, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities [B, C, H, W] (softmax or sigmoid, by the task) for uint8 images
    already on the module's device; tile by tile when `sliding_window.enabled`."""
    use_amp = images.device.type == "cuda" and module.cfg.trainer.precision in ("bf16", "bf16-mixed", "16", "16-mixed")
    dtype = torch.bfloat16 if "bf16" in module.cfg.trainer.precision else torch.float16
    with torch.autocast(images.device.type, dtype=dtype, enabled=use_amp):
        if module.cfg.sliding_window.enabled:
            return sliding_window_from_config(lambda x: module.task.probabilities(module(x)), images, module.cfg.sliding_window).float()
        logits = module(images)
    return module.task.probabilities(logits).float()


def final_prediction(module: SegmentationModule, probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """One image's probabilities [1, C, h, w] -> its prediction at `size`: a class map [H, W]
    (multiclass) or C x H x W booleans (multilabel), thresholded and post-processed."""
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    pred = module.task.predict(probs, module.thresholds)[0]
    if pred.dim() == 2:
        pred = pred.to(torch.uint8 if module.labels.num_classes <= 256 else torch.int32)
    return postprocess(pred.cpu().numpy(), module.cfg.postprocess, module.labels.classes)


def _loader(dataset, cfg: Config) -> DataLoader:
    batch = cfg.data.val_batch_size or cfg.data.batch_size
    return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=cfg.data.workers(), pin_memory=torch.cuda.is_available())


@torch.no_grad()
def evaluate(run_dir: str | Path, split: str = "val", checkpoint: str = "best", device: str | None = None,
             original_size: bool = False, tta: TTAConfig | None = None) -> dict:
    """The dataset-level metrics of a trained run on a labelled split: at the dataset's size
    (as in validation), or with `original_size` against the original masks, scoring exactly
    what `predict` writes. Tuned thresholds and post-processing apply; `tta` replaces the
    run's own `tta` section."""
    cfg, labels, module = load_run(run_dir, checkpoint, pick_device(device))
    dataset = build_dataset(cfg, split, labels, train=False, with_masks=True)
    metric = module.task.metric(labels, module.device)
    for batch in _loader(dataset, cfg):
        probs = tta_probs(lambda x: predict_probs(module, x), batch["image"].to(module.device), cfg.tta if tta is None else tta)
        if original_size:
            for j, index in enumerate(batch["index"].tolist()):
                pred = final_prediction(module, probs[j : j + 1], dataset.source.original_size(index))
                gt = dataset.source.load_mask(index)
                metric.update(torch.from_numpy(pred)[None].to(module.device), torch.from_numpy(gt)[None].to(module.device))
            continue
        pred = module.task.predict(probs, module.thresholds)
        if cfg.postprocess.morphology:
            pred = torch.stack([torch.from_numpy(postprocess(p.cpu().numpy(), cfg.postprocess, labels.classes)) for p in pred]).to(module.device)
        metric.update(pred, batch["mask"].to(module.device))
    scores = metric.compute(list(labels.classes))
    scores["split"], scores["checkpoint"], scores["images"] = split, checkpoint, len(dataset)
    if labels.task == "multilabel":
        scores["thresholds"] = dict(zip(labels.classes, module.thresholds.tolist()))
        scores["thresholds_from"] = module.thresholds_source
    return scores


@torch.no_grad()
def iter_predictions(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str | None = None,
                     tta: TTAConfig | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(sample id, prediction at the image's original size) for each image, in split order:
    a class map [H, W] (multiclass) or C x H x W booleans (multilabel)."""
    cfg, labels, module = load_run(run_dir, checkpoint, pick_device(device))
    dataset = build_dataset(cfg, split, labels, train=False, with_masks=False)
    for batch in _loader(dataset, cfg):
        probs = tta_probs(lambda x: predict_probs(module, x), batch["image"].to(module.device), cfg.tta if tta is None else tta)
        for j, index in enumerate(batch["index"].tolist()):
            yield batch["id"][j], final_prediction(module, probs[j : j + 1], dataset.source.original_size(index))
