"""k-fold cross-validation for every task: split the training set, train one ordinary run
per fold, score the out-of-fold (OOF) predictions.

    OUT/config.yaml              the resolved base config
    OUT/folds.csv                sample_id, group, fold, stratum (the one splitter's file)
    OUT/fold_K/                  an ordinary run folder (data.folds=OUT/folds.csv, data.fold=K)
    OUT/fold_K/kfold_state.json  trained? and, once evaluated, its validation scores and metric state
    OUT/kfold.json               per-fold table, OOF scores and OOF metric state
    OUT/metrics.json             the OOF scores (so `seglab runs` lists the k-fold with them)

OOF is the task's metric over all folds' held-out sets at once: every training image is
predicted once, by the model that did not train on it, and the fold metric states
(confusion matrices, or Dice sums) are summed before any score is computed (not an
average of fold scores); with `submission.classes` the same is done in submission classes
(submission_* scores). Each fold is scored by its best checkpoint with the run's TTA,
as `seglab evaluate` scores it. A killed k-fold resumes (`--resume OUT`) at the fold it
stopped in: finished folds are skipped, the interrupted one continues from its last.ckpt.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from seglab.config import Config, load_config, to_yaml
from seglab.core.module import SUBMISSION, finite
from seglab.data.labels import class_merge
from seglab.task import get_task
from seglab.errors import SeglabError
from seglab.progress import progress_line
from seglab.io import check_writable, write_json, write_text

log = logging.getLogger("seglab")


def fold_config(cfg: Config, out: Path, k: int) -> Config:
    data = cfg.data.model_copy(update={"val": None, "fold": k, "folds": str((out / "folds.csv").resolve())})
    return cfg.model_copy(update={"data": data, "name": f"{cfg.name or 'kfold'}-fold{k}"})


def make_folds_file(cfg: Config, labels, out: Path) -> dict:
    """Split data.train into kfold.folds folds and write OUT/folds.csv."""
    from seglab.data.sources import SOURCES
    from seglab.data.splits import assign_folds

    pool = SOURCES.get(cfg.data.format, "data.format")(cfg.data, "train", labels)
    folds = assign_folds(pool, labels, get_task(cfg.task), cfg)
    folds.write(out / "folds.csv")
    return {"folds": cfg.kfold.folds, "strategy": folds.strategy, "seed": cfg.seed, "samples": len(folds.ids),
            "per_fold": folds.summary()}


def run_kfold(cfg: Config | None, out: str | Path, resume: bool = False, device: str | None = None) -> dict:
    """Train every fold (skipping finished ones), then write and return the k-fold summary.
    The k-fold folder is held by this process throughout (like a run folder)."""
    from seglab.core.runlock import RunLock

    with RunLock(out, "kfold --resume" if resume else "kfold"):
        return _run_kfold(cfg, Path(out), resume, device)


def _run_kfold(cfg: Config | None, out: Path, resume: bool, device: str | None) -> dict:
    from seglab.core.training import preflight, train

    if resume:
        if not (out / "config.yaml").is_file() or not (out / "kfold_split.json").is_file():
            raise SeglabError(f"{out}: nothing to resume (no k-fold config.yaml and kfold_split.json)")
        cfg = load_config(out / "config.yaml", saved=True)
    else:
        if cfg is None:
            raise SeglabError("kfold: give a CONFIG (or --resume OUT)")
        if (out / "config.yaml").exists() or (out / "folds.csv").exists():
            raise SeglabError(f"{out}: already holds a k-fold; use `seglab kfold --resume {out}` to continue it or choose another --out")
    check_writable(out)
    base = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": None, "folds": None})})
    labels = preflight(base, None, ("train",))
    task = get_task(cfg.task)
    merge = class_merge(labels, cfg.submission.classes)
    if not resume:
        write_text(out / "config.yaml", to_yaml(cfg))
        split = make_folds_file(base, labels, out)
        write_json(out / "kfold_split.json", split)
    else:
        split = json.loads((out / "kfold_split.json").read_text())
    k_total = int(split["folds"])
    log.info("k-fold: %d folds (%s) of %d samples -> %s", k_total, split["strategy"], split["samples"], out)

    rows = []
    started, trained_here = time.monotonic(), 0
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
            trained_here += 1  # the ETA counts the folds this process trained, not the skipped ones
            log.info(progress_line("k-fold", trained_here, trained_here + (k_total - 1 - k), time.monotonic() - started, "folds"))
        else:
            log.info("k-fold: fold %d already trained, skipped", k)
        if "metric_state" not in state or (merge and "submission_metric_state" not in state):
            state.update(evaluate_fold(run_dir, k, split, task, labels, device))
            write_json(state_path, finite(state))
        rows.append(state)

    summary = summarise(rows, task, labels, split, cfg.eval.monitor, merge)
    write_json(out / "kfold.json", finite(summary))
    oof = summary["oof"]
    write_json(out / "metrics.json", finite({"monitor": cfg.eval.monitor, "source": "out-of-fold",
                                             **{k: v for k, v in oof.items() if k not in STATES}}))
    return summary


def evaluate_fold(run_dir: Path, k: int, split: dict, task, labels, device: str | None = None) -> dict:
    """The fold model's (best checkpoint, with the run's TTA) scores and metric state on its held-out fold."""
    from seglab.core.module import monitorable
    from seglab.core.run import load_run
    from seglab.inference.ensemble import Member
    from seglab.inference.predict import evaluate_in_spaces

    run = load_run(run_dir, "best", device)
    scores, metrics = evaluate_in_spaces([Member(run)], "val")
    best = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    n_val = split["per_fold"][k]["images"]
    return {
        "n_train": split["samples"] - n_val, "n_val": n_val, "best_epoch": best.get("epoch"),
        # with submission.classes also the submission_* scores: eval.monitor may name one
        **{key: scores[key] for key in monitorable(task, labels, run.merge)}, task.per_class_key: scores[task.per_class_key],
        "metric_state": metrics["train"].state(),
        **({"submission_metric_state": metrics["submission"].state()} if "submission" in metrics else {}),
    }


STATES = ("metric_state", "submission_metric_state")  # kept in kfold.json, not in metrics.json


def summarise(rows: list[dict], task, labels, split: dict, monitor: str, merge=None) -> dict:
    """Per-fold table and OOF scores; with a class merge (submission.classes) the OOF scores
    in submission classes too, pooled the same way from the folds' submission metric states."""
    from seglab.core.module import submission_scores

    metric = task.metric(labels)
    for r in rows:
        metric.add_state(r["metric_state"])
    oof = {**metric.compute(list(labels.classes)), "metric_state": metric.state()}
    if merge is not None:
        pooled = task.metric(merge.submission)
        for r in rows:
            pooled.add_state(r["submission_metric_state"])
        oof.update(submission_scores(pooled.compute(list(merge.submission.classes))),
                   submission_metric_state=pooled.state())
    per_fold = [r.get(monitor) for r in rows]
    per_fold = [v for v in per_fold if v is not None and not math.isnan(v)]
    return {
        "task": task.name, "folds": len(rows), "strategy": split["strategy"], "seed": split.get("seed"), "monitor": monitor,
        "metrics": list(task.metric_names(labels)), "per_class_key": task.per_class_key,
        "per_fold": [{k: v for k, v in r.items() if k not in STATES} for r in rows],
        "fold_mean": float(np.mean(per_fold)) if per_fold else None,
        "fold_std": float(np.std(per_fold)) if per_fold else None,
        "oof": oof,
    }


def format_kfold(summary: dict) -> str:
    """The per-fold table and the OOF line, for the console."""
    fmt = lambda v: "     -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    names, monitor = summary["metrics"], summary["monitor"]
    columns = names + ([monitor] if monitor not in names else [])  # e.g. submission_mIoU
    lines = [f"k-fold: {summary['folds']} folds, {summary['strategy']}",
             f"{'fold':>4}  {'train':>5}  {'val':>4}  {'epoch':>5}  " + "  ".join(f"{n[:15]:>15}" for n in columns)]
    for r in summary["per_fold"]:
        epoch = "-" if r.get("best_epoch") is None else str(r["best_epoch"])
        lines.append(f"{r['fold']:>4}  {r['n_train']:>5}  {r['n_val']:>4}  {epoch:>5}  "
                     + "  ".join(f"{fmt(r.get(n)):>15}" for n in columns))
    oof, per_class_key = summary["oof"], summary["per_class_key"]

    def scores(title: str, prefix: str = "") -> str:
        return title + " | ".join(f"{n} {fmt(oof.get(prefix + n))}" for n in names)

    def per_class(title: str, prefix: str = "") -> str:
        return title + ", ".join(f"{n} {fmt(v).strip()}" for n, v in (oof.get(prefix + per_class_key) or {}).items())

    lines.append(f"fold {monitor} mean {fmt(summary['fold_mean'])} +- {fmt(summary['fold_std'])}")
    lines.append(scores("OOF  "))
    lines.append(per_class(f"OOF {per_class_key.removeprefix('per_class_')} per class: "))
    if SUBMISSION + names[0] in oof:
        lines.append(scores("OOF in submission classes  ", SUBMISSION))
        lines.append(per_class("OOF in submission classes, per class: ", SUBMISSION))
    return "\n".join(lines)
