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
from seglab.metrics import ConfusionMatrix
from seglab.training import SegmentationModule, check_checkpoint_meta, check_state_dict_fits, load_checkpoint_file


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    path = Path(checkpoint) if checkpoint.endswith(".ckpt") else run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train the run first, or pick --checkpoint last)")
    return path


def load_run(run_dir: str | Path, checkpoint: str = "best", device: torch.device | None = None) -> tuple[Config, LabelSpec, SegmentationModule]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SeglabError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    labels = LabelSpec.from_json(json.loads((run_dir / "labels.json").read_text()))
    # The trained weights replace any pretrained file the config named; do not read it again.
    build_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": None, "encoder_weights": None})})
    module = SegmentationModule(build_cfg, labels)
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint_file(path)  # weights_only=True: a checkpoint cannot run code
    check_checkpoint_meta(state.get("seglab", {}), cfg, labels, str(path))
    check_state_dict_fits(module, state.get("state_dict", {}), str(path))
    module.load_state_dict(state["state_dict"])
    module.to(device or pick_device()).eval()
    return cfg, labels, module


def predict_probs(module: SegmentationModule, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities [B, C, H, W] for uint8 images already on the module's device."""
    use_amp = images.device.type == "cuda" and module.cfg.trainer.precision in ("bf16", "bf16-mixed", "16", "16-mixed")
    dtype = torch.bfloat16 if "bf16" in module.cfg.trainer.precision else torch.float16
    with torch.autocast(images.device.type, dtype=dtype, enabled=use_amp):
        logits = module(images)
    return logits.float().softmax(1)


def _loader(dataset, cfg: Config) -> DataLoader:
    batch = cfg.data.val_batch_size or cfg.data.batch_size
    return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=cfg.data.workers(), pin_memory=torch.cuda.is_available())


@torch.no_grad()
def evaluate(run_dir: str | Path, split: str = "val", checkpoint: str = "best", device: str | None = None) -> dict:
    """The dataset-level metrics of a trained run on a labelled split (same as validation)."""
    cfg, labels, module = load_run(run_dir, checkpoint, pick_device(device))
    dataset = build_dataset(cfg, split, labels, train=False, with_masks=True)
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index, module.device)
    for batch in _loader(dataset, cfg):
        probs = predict_probs(module, batch["image"].to(module.device))
        cm.update(probs.argmax(1), batch["mask"].to(module.device))
    scores = cm.compute(list(labels.classes))
    scores["split"], scores["checkpoint"], scores["images"] = split, checkpoint, len(dataset)
    return scores


@torch.no_grad()
def iter_predictions(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(sample id, class map at the image's original size) for each image, in split order."""
    cfg, labels, module = load_run(run_dir, checkpoint, pick_device(device))
    dataset = build_dataset(cfg, split, labels, train=False, with_masks=False)
    for batch in _loader(dataset, cfg):
        probs = predict_probs(module, batch["image"].to(module.device))
        for j, index in enumerate(batch["index"].tolist()):
            size = dataset.source.original_size(index)
            p = probs[j : j + 1]
            if tuple(p.shape[-2:]) != tuple(size):
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            pred = p.argmax(1)[0].to(torch.uint8 if labels.num_classes <= 256 else torch.int32)
            yield batch["id"][j], pred.cpu().numpy()
