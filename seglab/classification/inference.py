"""Classification inference from run folders: probabilities with TTA, ensembles, evaluate, predict.

Probabilities are softmax outputs averaged over the TTA views (the image and its flips)
and then over the runs of an ensemble (folds, seeds, architectures, input sizes: each
run reads the split with its own config). They are small ([images, classes]), so they
are held in memory and written by a submission writer at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from seglab.classification import maskstatus
from seglab.classification.data import Sample, build_dataset
from seglab.classification.metrics import classification_scores
from seglab.classification.training import ClassificationModule
from seglab.config import Config, load_config
from seglab.data.labels import LabelSpec
from seglab.errors import CheckpointError, SeglabError
from seglab.inference import checkpoint_path, pick_device
from seglab.metrics import ConfusionMatrix
from seglab.training import check_checkpoint_meta, needs_class_frequencies

TTA_VIEWS = {
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
}


@dataclass
class Predictions:
    cfg: Config
    labels: LabelSpec
    samples: list[Sample]
    probs: np.ndarray  # [N, C] float32, split order


def load_run(run_dir: str | Path, checkpoint: str = "best", device: torch.device | None = None) -> tuple[Config, LabelSpec, ClassificationModule]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SeglabError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    if cfg.task != "classification":
        raise SeglabError(f"{run_dir}: a {cfg.task} run, not a classification run")
    labels = LabelSpec.from_json(json.loads((run_dir / "labels.json").read_text()))
    build_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": None, "encoder_weights": None})})
    # The loss is not used for inference; `class_weights: auto` only needs some frequencies to build.
    frequencies = torch.full((labels.num_classes,), 1.0 / labels.num_classes) if needs_class_frequencies(cfg) else None
    module = ClassificationModule(build_cfg, labels, class_frequencies=frequencies)
    path = checkpoint_path(run_dir, checkpoint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    check_checkpoint_meta(state.get("seglab", {}), cfg, labels, str(path))
    result = module.load_state_dict(state.get("state_dict", {}), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: does not fit the model (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    module.to(device or pick_device()).eval()
    return cfg, labels, module


@torch.no_grad()
def predict_probs(module: ClassificationModule, images: torch.Tensor, tta: Sequence[str] = ()) -> torch.Tensor:
    """Softmax [B, C] averaged over the image and its TTA views; uint8 images on the module's device."""
    precision = module.cfg.trainer.precision
    use_amp = images.device.type == "cuda" and precision in ("bf16", "bf16-mixed", "16", "16-mixed")
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16
    views = [images] + [TTA_VIEWS[name](images) for name in tta]
    with torch.autocast(images.device.type, dtype=dtype, enabled=use_amp):
        return torch.stack([module(v).float().softmax(1) for v in views]).mean(0)


def run_predictions(run_dir, split: str = "test", checkpoint: str = "best", device: str | None = None,
                    tta: Sequence[str] | None = None) -> Predictions:
    """One run's probabilities on a split; `tta` None = the run's classification.tta."""
    cfg, labels, module = load_run(run_dir, checkpoint, pick_device(device))
    dataset = build_dataset(cfg, split, labels, train=False, with_labels=False)
    batch = cfg.data.val_batch_size or cfg.data.batch_size
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=cfg.data.workers(), pin_memory=torch.cuda.is_available())
    views = cfg.classification.tta if tta is None else list(tta)
    probs = [predict_probs(module, b["image"].to(module.device), views).cpu() for b in loader]
    return Predictions(cfg, labels, dataset.split.samples, torch.cat(probs).numpy())


def ensemble_predictions(run_dirs: Sequence, split: str = "test", checkpoint: str = "best", device: str | None = None,
                         tta: Sequence[str] | None = None) -> Predictions:
    """Probabilities averaged over runs; every run must have the same classes and the same images in the same order."""
    if not run_dirs:
        raise SeglabError("no run folder given")
    first = run_predictions(run_dirs[0], split, checkpoint, device, tta)
    total = first.probs.astype(np.float64)
    for run in run_dirs[1:]:
        other = run_predictions(run, split, checkpoint, device, tta)
        if other.labels.classes != first.labels.classes:
            raise SeglabError(f"{run}: classes differ from {run_dirs[0]}; runs of an ensemble must share the class list")
        if [s.id for s in other.samples] != [s.id for s in first.samples]:
            raise SeglabError(f"{run}: its {split} split holds other images than {run_dirs[0]}'s (different data or fold); "
                              "an ensemble averages predictions of the same images")
        total += other.probs
    first.probs = (total / len(run_dirs)).astype(np.float32)
    return first


def evaluate(run_dirs, split: str = "val", checkpoint: str = "best", device: str | None = None,
             tta: Sequence[str] | None = None) -> dict:
    """Validation metrics of one run or an ensemble on a labelled split."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    pred = ensemble_predictions(run_dirs, split, checkpoint, device, tta)
    truth = [s.label for s in pred.samples]
    if any(t is None for t in truth):
        raise SeglabError(f"split {split!r} has no labels to evaluate against")
    cm = ConfusionMatrix(pred.labels.num_classes)
    cm.update(torch.as_tensor(pred.probs.argmax(1)), torch.as_tensor(truth))
    scores = classification_scores(cm.mat, list(pred.labels.classes))
    if pred.cfg.data.format == "maskstatus":
        scores.update(maskstatus.task_accuracies(cm.mat))
    scores["confusion_matrix"] = cm.mat.tolist()
    scores.update(split=split, checkpoint=checkpoint, images=len(truth), runs=[str(r) for r in run_dirs],
                  tta=list(pred.cfg.classification.tta if tta is None else tta))
    return scores


def predict(run_dirs, split: str, out: str | Path, fmt: str | None = None, checkpoint: str = "best",
            device: str | None = None, tta: Sequence[str] | None = None) -> int:
    """Write a submission (or pseudo-label / probability file) for one run or an ensemble."""
    from seglab.classification.submission import WRITERS, WriteContext

    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    pred = ensemble_predictions(run_dirs, split, checkpoint, device, tta)
    fmt = fmt or pred.cfg.submission.format
    writer = WRITERS.get(fmt, "--format")
    context = WriteContext(classes=list(pred.labels.classes), data=pred.cfg.data, split=split,
                           pseudo_threshold=pred.cfg.classification.pseudo_threshold)
    return writer(pred.samples, pred.probs, Path(out), context)
