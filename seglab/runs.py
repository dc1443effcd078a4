"""List runs and compare two of them: what changed in the config, and what it did.

A run is any folder holding a config.yaml (the resolved config the trainer saved), so
k-fold parents and their fold sub-runs are all found. Scores are read as the run wrote
them: metrics.json names its monitored metric (mIoU, dice, macro_f1, ...), so every
task's runs show their own numbers.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from seglab.errors import SeglabError
from seglab.paths import require_run_folder

NOT_SCORES = ("epoch", "step", "images")
# Folders a run writes its outputs into: never runs themselves, and can be large.
_ARTIFACT_DIRS = {"checkpoints", "tb", "viz", "report"}


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


MISSING: Any = _Missing()


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values, an empty mapping stays a value."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def find_runs(root) -> list[Path]:
    """Every folder under root (root included) that holds a config.yaml, sorted."""
    runs = []
    for folder, subdirs, files in os.walk(root):
        if "config.yaml" in files:
            runs.append(Path(folder))
            subdirs[:] = [d for d in subdirs if d not in _ARTIFACT_DIRS]
        subdirs.sort()
    return sorted(runs)


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _load_metrics(run: Path) -> dict:
    try:
        data = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_name(config: Mapping) -> str:
    """'arch+encoder' from config.model, tolerant of the common spellings of both keys."""
    model = config.get("model")
    if not isinstance(model, Mapping):
        return "-"
    arch = next((model[k] for k in ("arch", "name", "architecture") if model.get(k)), "?")
    encoder = next((model[k] for k in ("encoder", "encoder_name", "backbone") if model.get(k)), None)
    if isinstance(encoder, Mapping):
        encoder = encoder.get("name")
    return f"{arch}+{encoder}" if encoder else str(arch)


def _number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def runs_table(root) -> str:
    """One line per run: path, task, arch+encoder, its monitored metric and best value, epoch, date."""
    root = Path(root)
    if not root.is_dir():
        raise SeglabError(f"{root}: no such folder")
    rows = [("run", "task", "model", "metric", "best", "epoch", "date")]
    for run in find_runs(root):
        metrics = _load_metrics(run)
        config = _load_yaml(run / "config.yaml")
        monitor = metrics.get("monitor")
        created = _dt.datetime.fromtimestamp((run / "config.yaml").stat().st_mtime)
        rel = run.relative_to(root).as_posix() if run != root else "."
        what = f"{monitor} (OOF)" if metrics.get("source") == "out-of-fold" else (monitor or "-")
        rows.append((rel, str(config.get("task", "-")), _model_name(config), what,
                     _number(metrics.get(monitored_key(metrics))) if monitor else "-", _number(metrics.get("epoch")),
                     created.strftime("%Y-%m-%d %H:%M")))
    if len(rows) == 1:
        return f"no runs under {root}"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def scalar_scores(metrics: Mapping) -> list[str]:
    """The numeric entries of a metrics.json, monitored one first."""
    keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_SCORES]
    monitor = monitored_key(metrics)
    return sorted(keys, key=lambda k: k != monitor)


def monitored_key(metrics: Mapping) -> str | None:
    """The metrics.json entry holding the monitored score: its "monitor", except that a run
    monitoring the loss (eval.monitor: loss) records it as val_loss."""
    monitor = metrics.get("monitor")
    return "val_loss" if monitor == "loss" and "loss" not in metrics else monitor


def per_class_scores(metrics: Mapping) -> dict[str, Mapping]:
    """{'IoU': {class: value}, ...} from the per_class_* entries of a metrics.json."""
    return {k.removeprefix("per_class_"): v for k, v in metrics.items() if k.startswith("per_class_") and isinstance(v, Mapping)}


def config_diff(a: Mapping, b: Mapping) -> list[tuple[str, Any, Any]]:
    """[(dotted key, value in a, value in b)] for keys whose values differ; MISSING if absent."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(set(fa) | set(fb))
    return [(k, fa.get(k, MISSING), fb.get(k, MISSING)) for k in keys
            if fa.get(k, MISSING) != fb.get(k, MISSING)]


def _as_float(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _delta(a, b) -> str:
    fa, fb = _as_float(a), _as_float(b)
    if fa is None or fb is None:
        return "-"
    return f"{fb - fa:+.4f}"


def diff_runs(a, b) -> str:
    """Config differences and metric deltas (b minus a) between two run folders."""
    a, b = require_run_folder(a), require_run_folder(b)
    lines = [f"a: {a}", f"b: {b}", "", "config (a -> b):"]
    changes = config_diff(_load_yaml(a / "config.yaml"), _load_yaml(b / "config.yaml"))
    lines += [f"  {k}: {va!r} -> {vb!r}" for k, va, vb in changes] or ["  (identical)"]
    ma, mb = _load_metrics(a), _load_metrics(b)
    keys = scalar_scores(ma) + [k for k in scalar_scores(mb) if k not in scalar_scores(ma)]
    rows = [(k, ma.get(k), mb.get(k)) for k in ["epoch"] + keys if k in ma or k in mb]
    pa, pb = per_class_scores(ma), per_class_scores(mb)
    for what in list(pa) + [w for w in pb if w not in pa]:
        ca, cb = pa.get(what, {}), pb.get(what, {})
        rows += [(f"{what} {c}", ca.get(c), cb.get(c)) for c in list(ca) + [c for c in cb if c not in ca]]
    lines += ["", "metrics (best validation):"]
    if not rows:
        lines.append("  no metrics.json in either run")
    else:
        width = max(len(r[0]) for r in rows)
        lines.append(f"  {'':{width}}  {'a':>8}  {'b':>8}  {'b - a':>8}")
        lines += [f"  {k:{width}}  {_number(va):>8}  {_number(vb):>8}  "
                  f"{_delta(va, vb) if k != 'epoch' else '':>8}" for k, va, vb in rows]
    return "\n".join(lines)
