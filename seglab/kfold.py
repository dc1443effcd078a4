"""k-fold cross-validation: split the training set, train one ordinary run per fold,
score the out-of-fold (OOF) predictions.

    OUT/config.yaml            the resolved base config (with kfold.*)
    OUT/folds/folds.json       sample id -> fold, strategy, seed
    OUT/folds/fold_K/{train,val}.json   (COCO) or .txt (labelmap) split files
    OUT/fold_K/                an ordinary run folder (train(), data.train/val overridden)
    OUT/fold_K/kfold_state.json  trained? and, once evaluated, its validation confusion matrix
    OUT/kfold.json             per-fold table, OOF scores and the OOF confusion matrix
    OUT/metrics.json           the OOF scores (so `seglab runs` lists the k-fold with them)

OOF is the dataset-level metric over all folds' validation sets together: every
training image is predicted once, by the model that did not train on it, and the
fold confusion matrices are summed before any score is computed (not an average of
fold scores). A killed k-fold resumes (`--resume OUT`) at the fold it stopped in:
finished folds are skipped, the interrupted one continues from its last.ckpt.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from seglab.config import Config, load_config, to_yaml
from seglab.data import check_data, resolve_labels
from seglab.data.sources import SOURCES
from seglab.errors import SeglabError
from seglab.io import check_writable, write_json, write_text
from seglab.metrics import segmentation_scores
from seglab.splits import class_presence, group_keys, make_folds

log = logging.getLogger("seglab")

SCALARS = ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU")


def _finite(obj):
    from seglab.training import _finite as finite

    return finite(obj)


# ------------------------------------------------------------------ splits


def make_split_files(cfg: Config, labels, out: Path) -> dict:
    """Split data.train into cfg.kfold.folds folds and write the per-fold split files."""
    source = SOURCES.get(cfg.data.format, "data.format")(cfg.data, "train", labels)
    ids = [source.sample_id(i) for i in range(len(source))]
    if len(set(ids)) != len(ids):
        raise SeglabError(f"{source.name}: duplicate sample ids; cannot assign images to folds")
    strategy = cfg.kfold.resolved_strategy()
    groups = group_keys(ids, cfg.kfold, cfg.data.root)
    presence = class_presence(source, labels) if strategy in ("stratified", "stratified_group") else np.zeros((len(ids), 1))
    fold = make_folds(presence, cfg.kfold.folds, strategy, cfg.seed, groups)
    folder = out / "folds"
    for k in range(cfg.kfold.folds):
        val = [i for i in range(len(ids)) if fold[i] == k]
        train = [i for i in range(len(ids)) if fold[i] != k]
        _write_split(source, cfg, folder / f"fold_{k}", "train", train)
        _write_split(source, cfg, folder / f"fold_{k}", "val", val)
    doc = {
        "folds": cfg.kfold.folds, "strategy": strategy, "seed": cfg.seed, "source": source.name,
        "assignment": {sid: int(f) for sid, f in zip(ids, fold)},
        "groups": None if groups is None else {sid: g for sid, g in zip(ids, groups)},
    }
    write_json(folder / "folds.json", doc)
    return doc


def _write_split(source, cfg: Config, folder: Path, name: str, indices: list[int]) -> None:
    coco = getattr(source, "coco", None)
    if coco is not None:
        images = [coco.images[i] for i in indices]
        anns = [a for img in images for a in coco.annotations.get(img["id"], [])]
        raw = json.loads(coco.path.read_text())
        doc = {k: v for k, v in raw.items() if k not in ("images", "annotations")}
        doc.update(images=images, annotations=anns)
        write_json(folder / f"{name}.json", doc)
    else:  # labelmap: a list of image stems
        write_text(folder / f"{name}.txt", "".join(Path(source.sample_id(i)).stem + "\n" for i in indices))


def split_path(out: Path, cfg: Config, k: int, name: str) -> Path:
    ext = "json" if cfg.data.format == "coco" else "txt"
    return (out / "folds" / f"fold_{k}" / f"{name}.{ext}").resolve()


def fold_config(cfg: Config, out: Path, k: int) -> Config:
    data = cfg.data.model_copy(update={"train": str(split_path(out, cfg, k, "train")), "val": str(split_path(out, cfg, k, "val"))})
    name = f"{cfg.name or 'kfold'}-fold{k}"
    return cfg.model_copy(update={"data": data, "name": name})


# ------------------------------------------------------------------ driver


def run_kfold(cfg: Config | None, out: str | Path, resume: bool = False, device: str | None = None) -> dict:
    """Train every fold (skipping finished ones), then write and return the k-fold summary."""
    from seglab.training import train

    out = Path(out)
    if resume:
        if not (out / "config.yaml").is_file() or not (out / "folds" / "folds.json").is_file():
            raise SeglabError(f"{out}: nothing to resume (no k-fold config.yaml and folds/folds.json)")
        cfg = load_config(out / "config.yaml")
    else:
        if cfg is None:
            raise SeglabError("kfold: give a CONFIG (or --resume OUT)")
        if (out / "config.yaml").exists() or (out / "folds").exists():
            raise SeglabError(f"{out}: already holds a k-fold; use `seglab kfold --resume {out}` to continue it or choose another --out")
    check_writable(out)
    labels = resolve_labels(cfg)
    if not resume:
        check_data(cfg, labels, ("train",))
        write_text(out / "config.yaml", to_yaml(cfg))
        split = make_split_files(cfg, labels, out)
    else:
        split = json.loads((out / "folds" / "folds.json").read_text())
    k_total = int(split["folds"])
    log.info("k-fold: %d folds (%s) of %d images -> %s", k_total, split["strategy"], len(split["assignment"]), out)

    rows, mats = [], []
    for k in range(k_total):
        run_dir = out / f"fold_{k}"
        state_path = run_dir / "kfold_state.json"
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        if not state.get("trained"):
            resume_fold = (run_dir / "checkpoints" / "last.ckpt").is_file()
            log.info("k-fold: %s fold %d/%d", "resuming" if resume_fold else "training", k, k_total)
            train(fold_config(cfg, out, k), run_dir, resume=resume_fold)
            state = {"fold": k, "trained": True}
            write_json(state_path, state)
        else:
            log.info("k-fold: fold %d already trained, skipped", k)
        if "confusion_matrix" not in state:
            state.update(evaluate_fold(run_dir, k, split, device))
            write_json(state_path, _finite(state))
        rows.append(state)
        mats.append(torch.tensor(state["confusion_matrix"], dtype=torch.int64))

    summary = summarise(rows, mats, list(labels.classes), split)
    write_json(out / "kfold.json", _finite(summary))
    write_json(out / "metrics.json", _finite({"monitor": "OOF", **{k: summary["oof"][k] for k in SCALARS},
                                               "per_class_iou": summary["oof"]["per_class_iou"],
                                               "per_class_accuracy": summary["oof"]["per_class_accuracy"]}))
    return summary


def evaluate_fold(run_dir: Path, k: int, split: dict, device: str | None = None) -> dict:
    """The fold model's (best checkpoint, with the run's TTA) scores and confusion matrix on its validation fold."""
    from seglab.ensemble import Member, evaluate_members

    scores, cm = evaluate_members([Member(run_dir, "best")], "val", device=device)
    best = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    n_val = sum(1 for f in split["assignment"].values() if f == k)
    return {
        "n_train": len(split["assignment"]) - n_val, "n_val": n_val, "best_epoch": best.get("epoch"),
        **{key: scores[key] for key in SCALARS}, "per_class_iou": scores["per_class_iou"],
        "confusion_matrix": cm.mat.cpu().tolist(),
    }


def summarise(rows: list[dict], mats: list[torch.Tensor], classes: list[str], split: dict) -> dict:
    oof_cm = torch.stack(mats).sum(0)
    oof = segmentation_scores(oof_cm, classes)
    fold_miou = [r["mIoU"] for r in rows if r.get("mIoU") is not None and not math.isnan(r["mIoU"])]
    return {
        "folds": len(rows), "strategy": split["strategy"], "seed": split.get("seed"),
        "per_fold": [{k: v for k, v in r.items() if k != "confusion_matrix"} for r in rows],
        "fold_mIoU_mean": float(np.mean(fold_miou)) if fold_miou else None,
        "fold_mIoU_std": float(np.std(fold_miou)) if fold_miou else None,
        "oof": {**oof, "confusion_matrix": oof_cm.tolist()},
    }


def format_kfold(summary: dict) -> str:
    """The per-fold table and the OOF line, for the console."""
    fmt = lambda v: "     -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
    lines = [f"k-fold: {summary['folds']} folds, {summary['strategy']}",
             f"{'fold':>4}  {'train':>5}  {'val':>4}  {'epoch':>5}  {'mIoU':>6}  {'pixacc':>6}  {'fwIoU':>6}"]
    for r in summary["per_fold"]:
        epoch = "-" if r.get("best_epoch") is None else str(r["best_epoch"])
        lines.append(f"{r['fold']:>4}  {r['n_train']:>5}  {r['n_val']:>4}  {epoch:>5}  {fmt(r['mIoU'])}  "
                     f"{fmt(r['pixel_accuracy'])}  {fmt(r['fwIoU'])}")
    oof = summary["oof"]
    lines.append(f"fold mIoU mean {fmt(summary['fold_mIoU_mean'])} +- {fmt(summary['fold_mIoU_std'])}")
    lines.append(f"OOF  mIoU {fmt(oof['mIoU'])} | pixel acc {fmt(oof['pixel_accuracy'])} | "
                 f"mean class acc {fmt(oof['mean_class_accuracy'])} | fwIoU {fmt(oof['fwIoU'])}")
    lines.append("OOF per-class IoU: " + ", ".join(f"{n} {fmt(v).strip()}" for n, v in oof["per_class_iou"].items()))
    return "\n".join(lines)
