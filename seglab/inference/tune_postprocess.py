"""`seglab tune-postprocess RUN_DIR`: per class, the post-processing steps that raise that
class's validation score, chosen from data as nnU-Net chooses "keep the largest component".

The run decides once on the split (its TTA, sliding window and thresholds: what `evaluate`
decides on, at the same resolution); the decisions are kept, bit-packed, and every
candidate plan is scored on them with the task's own metric. The search is greedy and per
class, starting from no post-processing: each round tries adding one more step (opening or
closing with each kernel, fill holes, largest component) to the classes' steps and keeps
the ones that help (see `search_plan`); a class stops when no step helps. Steps run in a
fixed order (opening, closing, fill holes, largest component), so a class gets each at
most once. The final plan is scored as a whole: that score is the one printed and saved. The plan is
saved as RUN/postprocess.json, which evaluate and predict (and tune-thresholds) then use
instead of the config's `postprocess` morphology.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from seglab.config import PostprocessConfig
from seglab.errors import SeglabError
from seglab.inference.postprocess import PLAN_FILE, STEP_KEYS, steps_text

DEFAULT_KERNELS = (3, 5)


def candidate_steps(kernels) -> list[dict]:
    """Single steps to try adding: opening/closing with each kernel, fill holes, largest component."""
    return ([{"opening": k} for k in kernels] + [{"closing": k} for k in kernels]
            + [{"fill_holes": True}, {"largest_component": True}])


def _with(steps: PostprocessConfig, step: dict) -> PostprocessConfig | None:
    """`steps` plus `step`, or None when that kind of step is already in them."""
    key = next(iter(step))
    if getattr(steps, key):
        return None
    return steps.model_copy(update=step)


class Decisions:
    """A split's decided predictions and targets, kept compactly on the CPU (bool masks
    bit-packed): what every candidate plan is scored on."""

    def __init__(self):
        self.items: list[tuple] = []

    @staticmethod
    def _pack(array: np.ndarray):
        if array.dtype.kind in "iu" and array.size and 0 <= array.min() and array.max() < 256:
            array = array.astype(np.uint8)  # class maps: 8x less than int64
        return (np.packbits(array), array.shape, True) if array.dtype == bool else (array, array.shape, False)

    @staticmethod
    def _unpack(packed) -> np.ndarray:
        data, shape, bits = packed
        return np.unpackbits(data)[: int(np.prod(shape))].reshape(shape).astype(bool) if bits else data

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        for p, t in zip(pred.cpu().numpy(), target.cpu().numpy()):
            self.items.append((self._pack(p), self._pack(t)))

    def score(self, task, labels, plan: dict) -> dict:
        """The task metric's scores of every decision after `plan`."""
        metric = task.metric(labels)
        for pred, target in self.items:
            out = task.kind.clean(self._unpack(pred), plan)
            metric.update(torch.as_tensor(out)[None], torch.as_tensor(self._unpack(target))[None])
        return metric.compute(list(labels.classes))


def _per_class(task, scores: dict, names) -> list[float]:
    values = scores[task.per_class_key]
    return [math.nan if values.get(n) is None else float(values[n]) for n in names]


def search_plan(decisions: Decisions, task, labels, kernels=DEFAULT_KERNELS, min_gain: float = 0.0,
                monitor: str | None = None) -> tuple[dict, list[float]]:
    """The greedy per-class search: ({class index: steps kept}, per-class scores without any).

    Multi-label masks: every open class tries a step at once (classes are scored apart) and
    keeps it when its own score rises by more than `min_gain`. Class maps: a class's steps
    move pixels between it and Background, which is scored too, so each class tries its
    steps alone and keeps one when the overall `monitor` rises by more than `min_gain`
    and the class's own score does not fall; Background gets no steps."""
    names = list(labels.classes)
    class_maps = task.kind.exclusive
    monitor = monitor or task.scalar_metrics[0]
    none = PostprocessConfig()
    chosen = {c: none for c in range(len(names)) if not (class_maps and c == 0)}
    scores0 = decisions.score(task, labels, {})
    best, overall = _per_class(task, scores0, names), float(scores0[monitor])
    start = list(best)
    open_classes = set(chosen)
    while open_classes:
        gains: dict[int, tuple[float, PostprocessConfig]] = {}
        for step in candidate_steps(kernels):
            trial = {c: _with(chosen[c], step) for c in open_classes}
            trial = {c: s for c, s in trial.items() if s is not None}
            groups = [[c] for c in trial] if class_maps else ([list(trial)] if trial else [])
            for group in groups:
                scores = decisions.score(task, labels, {**chosen, **{c: trial[c] for c in group}})
                per_class = _per_class(task, scores, names)
                for c in group:
                    own = per_class[c] - best[c]
                    gain = float(scores[monitor]) - overall if class_maps else own
                    if class_maps and own < 0:
                        continue
                    if not math.isnan(gain) and gain > min_gain and gain > gains.get(c, (0.0, None))[0]:
                        gains[c] = (gain, trial[c])
        if class_maps and gains:
            # Steps of different classes interact through Background: keep the best one per round.
            c = max(gains, key=lambda k: gains[k][0])
            gains = {c: gains[c]}
        open_classes = set(gains) if not class_maps else (open_classes if gains else set())
        for c, (_, steps) in gains.items():
            chosen[c] = steps
        scores = decisions.score(task, labels, {k: v for k, v in chosen.items() if v.morphology})
        best, overall = _per_class(task, scores, names), float(scores[monitor])
    return {c: s for c, s in chosen.items() if s.morphology}, start


@torch.no_grad()
def tune_postprocess(run_dir: str | Path, split: str = "val", checkpoint: str = "best", device: str | None = None,
                     kernels=DEFAULT_KERNELS, min_gain: float = 0.0, original_size: bool = False, save: bool = True,
                     tta=None) -> dict:
    """Choose each class's steps on a labelled split and save RUN/postprocess.json."""
    from seglab.core.run import load_run
    from seglab.inference.ensemble import Member
    from seglab.inference.predict import resolution, scored
    from seglab.io import write_json

    run = load_run(run_dir, checkpoint, device, tuned_postprocess=False)
    if not run.task.morphology:
        raise SeglabError(f"{run_dir}: tune-postprocess is for segmentation runs; a {run.task.name} decision has no masks to clean")
    kernels = sorted({int(k) for k in kernels})
    if not kernels or kernels[0] < 1:
        raise SeglabError(f"--kernels: positive kernel sizes in pixels, got {list(kernels)}")
    member = Member(run, tta=tta)
    names = list(run.labels.classes)
    decisions = Decisions()
    for probs, target in scored([member], split, original_size=original_size):
        # Tuned per training class; a merged submission class keeps the steps of its namesake.
        decisions.add(run.task.decide(probs["train"], run.thresholds), target["train"])
    if not decisions.items:
        raise SeglabError(f"{run_dir}: the {split!r} split has no images to tune on")
    task, labels = run.task, run.labels
    configured = decisions.score(task, labels, run.plan)   # what evaluate reported before
    monitor = run.cfg.eval.monitor if run.cfg.eval.monitor in configured else task.scalar_metrics[0]
    plan, start = search_plan(decisions, task, labels, kernels, min_gain, monitor)
    final = decisions.score(task, labels, plan)
    after = _per_class(task, final, names)
    record = {
        "classes": {names[c]: {k: getattr(s, k) for k in STEP_KEYS} for c, s in sorted(plan.items())},
        "steps": {n: steps_text(plan.get(c)) for c, n in enumerate(names)},
        "split": split, "checkpoint": checkpoint, "images": len(decisions.items), "original_size": original_size,
        "resolution": resolution(run.cfg, original_size), "tta": member.tta.model_dump(), "kernels": kernels,
        "min_gain": min_gain, "metric": monitor,
        "score_configured": configured[monitor], "score_none": decisions.score(task, labels, {})[monitor],
        "score_after": final[monitor],
        "per_class_configured": dict(zip(names, _per_class(task, configured, names))),
        "per_class_none": dict(zip(names, start)),
        "per_class_after": dict(zip(names, after)),
    }
    record = {k: _nan_to_none(v) for k, v in record.items()}
    if save:
        path = Path(run_dir) / PLAN_FILE
        write_json(path, record)
        record["path"] = str(path)
    return record


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return value


def format_record(record: dict) -> str:
    """Per class: the score before (the configured post-processing), without any, after, the steps kept."""
    names = list(record["steps"])
    width = max(12, *(len(n) for n in names))
    metric = record["metric"]
    fmt = lambda v: "   -  " if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"tune-postprocess on {record['split']!r} ({record['images']} images, {record['resolution']}); "
             f"per-class scores of {metric}",
             f"{'class':<{width}}  configured    none   after  steps kept"]
    for n in names:
        lines.append(f"{n:<{width}}  {fmt(record['per_class_configured'][n]):>10}  {fmt(record['per_class_none'][n]):>6}  "
                     f"{fmt(record['per_class_after'][n]):>6}  {record['steps'][n]}")
    lines.append(f"{metric}: {fmt(record['score_configured'])} (configured) -> {fmt(record['score_after'])} (tuned)")
    return "\n".join(lines)
