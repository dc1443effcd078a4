"""A run's results as one static HTML page: RUN_DIR/report/index.html, for every task
(the metrics are those the run wrote: IoU, Dice or F1 per class).

The page must open from disk on a machine with no network, years later: inline CSS,
no JavaScript, and every image inside report/ (the validation pictures are copied into
report/figures/), so the report folder can be zipped, mailed or moved alone. A contents
list comes first; each figure is shown once; the worst images come worst class first,
each panel with that class's TP/FP/FN map. Every piece that is missing is shown as "not
available" so a report can be written while a run is still going.

The validation pictures are grouped by file-name prefix (PICTURE_SECTIONS) and by the
sections a visualizer lists in its folder's sections.json; the rest land in "Other pictures".
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np

from seglab.runs import per_class_scores, scalar_scores
from seglab.visualization.figures import (confusion_matrix_figure, learning_curves, per_class_bars, safe_filename,
                                          save_png)

# Validation pictures by file-name prefix: (prefix, section title). "worst_" panels are
# ordered by their class's score (worst first); the others by name.
PICTURE_SECTIONS = [
    ("sample_", "Fixed samples"),
    ("worst_", "Worst images per class (worst classes first)"),
    ("misclassified", "Most confident mistakes"),
]
# Run-level figures the report draws itself from metrics.json / history.jsonl: the
# validation folder's copies of them are not shown again.
OVERVIEW_PREFIXES = ("confusion_matrix", "per_class_iou", "per_class_dice", "per_class_f1")

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: .25em .7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.absent { color: #888; font-style: italic; }
.na { color: #a33; font-style: italic; }
figure { display: inline-block; margin: .4em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; }
.gallery img { max-width: 1200px; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: .85em; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _read_json(path: Path):
    """(data, None) or (None, why it is not available)."""
    if not path.is_file():
        return None, f"{path.name} not found"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as err:
        return None, f"{path.name} could not be read: {err}"


def read_history(path: Path) -> list[dict]:
    """Validation records; a torn last line (the trainer may be writing) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _not_available(what: str, why: str | None = None) -> str:
    return f'<p class="na">{_esc(what)}: not available{_esc(f" ({why})") if why else ""}</p>'


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="absent">absent</span>'
    if isinstance(value, float):
        return f"{value:.4f}"
    return _esc(value)


def _inside(path: Path, report_dir: Path) -> Path:
    """The figure's copy inside report/figures/ (a file already in report/ is used as is)."""
    try:
        path.resolve().relative_to(report_dir.resolve())
        return path
    except ValueError:
        copy = report_dir / "figures" / f"{path.parent.name}_{path.name}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        return copy


def _img(path: Path, report_dir: Path, caption: str = "") -> str:
    path = _inside(path, report_dir)
    src = quote(Path(os.path.relpath(path, report_dir)).as_posix())
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return (f'<figure><a href="{src}"><img src="{src}" alt="{_esc(caption or path.name)}"></a>'
            f"{cap}</figure>")


def _metrics_section(metrics, why) -> str:
    if not isinstance(metrics, dict):
        return _not_available("best validation metrics", why or "metrics.json is not a mapping")
    rows = [("monitored metric", metrics.get("monitor")), ("epoch", metrics.get("epoch")), ("step", metrics.get("step"))]
    rows += [(k, metrics[k]) for k in scalar_scores(metrics)]
    parts = ["<table>"] + [f'<tr><th>{_esc(k)}</th><td class="num">{_fmt(v)}</td></tr>'
                           for k, v in rows] + ["</table>"]
    tables = per_class_scores(metrics)
    if tables:
        names = list(next(iter(tables.values())))
        head = "".join(f"<th>{_esc(what)}</th>" for what in tables)
        parts.append(f"<h3>Per class</h3><table><tr><th>class</th>{head}</tr>")
        for name in names:
            cells = "".join(f'<td class="num">{_fmt(t.get(name))}</td>' for t in tables.values())
            parts.append(f"<tr><td>{_esc(name)}</td>{cells}</tr>")
        parts.append("</table>")
    return "\n".join(parts)


def _best_record(history: list[dict], metrics) -> dict | None:
    """History record of the best validation (same epoch and step), else the latest one."""
    with_cm = [h for h in history if h.get("confusion_matrix") is not None]
    if isinstance(metrics, dict):
        for h in with_cm:
            if h.get("epoch") == metrics.get("epoch") and h.get("step") == metrics.get("step"):
                return h
    return with_cm[-1] if with_cm else None


def _figures(run_dir: Path, report_dir: Path, metrics, history, class_names) -> dict[str, str]:
    """Draw the run-level figures into report/; {section: html}."""
    out = {}
    tables = per_class_scores(metrics) if isinstance(metrics, dict) else {}
    if tables:
        what, values = next(iter(tables.items()))
        path = save_png(per_class_bars(values, metric=what), report_dir / f"per_class_{what}.png")
        out["per_class"] = _img(path, report_dir)
    else:
        out["per_class"] = _not_available("per-class scores", "no per_class_* entry in metrics.json")
    if history:
        shown = [k for k in scalar_scores(metrics) if k != "val_loss"] if isinstance(metrics, dict) else []
        path = save_png(learning_curves(history, shown), report_dir / "learning_curves.png")
        out["curves"] = _img(path, report_dir)
    else:
        out["curves"] = _not_available("learning curves", "history.jsonl is missing or empty")
    record = _best_record(history, metrics)
    if record is not None:
        cm = np.asarray(record["confusion_matrix"])
        names = class_names if len(class_names) == len(cm) else [f"class {i}" for i in range(len(cm))]
        path = save_png(confusion_matrix_figure(cm, names), report_dir / "confusion_matrix.png")
        out["cm"] = _img(path, report_dir, f"epoch {record.get('epoch')}, step {record.get('step')}")
    else:
        out["cm"] = _not_available("confusion matrix", "no confusion_matrix in history.jsonl")
    return out


def latest_viz_epoch(run_dir: Path) -> Path | None:
    epochs = [(int(m.group(1)), p) for p in (run_dir / "viz").glob("epoch_*")
              if p.is_dir() and (m := re.fullmatch(r"epoch_(\d+)", p.name))]
    return max(epochs)[1] if epochs else None


def _worst_order(metrics) -> dict[str, float]:
    """File-name form of each class -> its score (the first per-class table: IoU, Dice, F1)."""
    tables = per_class_scores(metrics) if isinstance(metrics, dict) else {}
    if not tables:
        return {}
    values = next(iter(tables.values()))
    return {safe_filename(name): v for name, v in values.items() if isinstance(v, (int, float)) and not math.isnan(v)}


def _gallery_section(run_dir: Path, report_dir: Path, metrics) -> str:
    epoch_dir = latest_viz_epoch(run_dir)
    if epoch_dir is None:
        return _not_available("validation pictures", "no viz/epoch_* folder yet")
    parts = [f"<p>From <code>{_esc(epoch_dir.relative_to(run_dir).as_posix())}</code>, "
             "the latest validation with pictures.</p>"]
    pictures = sorted(p for p in epoch_dir.glob("*.png") if not p.name.startswith(OVERVIEW_PREFIXES))
    shown: set[Path] = set()
    for prefix, title in PICTURE_SECTIONS:
        group = [p for p in pictures if p.name.startswith(prefix)]
        if not group:
            continue
        parts.append(f"<h3>{_esc(title)}</h3>")
        shown.update(group)
        if prefix == "worst_":
            parts.append(_worst_gallery(group, report_dir, metrics))
            continue
        for path in group:
            parts.append(f'<div class="gallery">{_img(path, report_dir)}')
            companion = epoch_dir / f"per_class_{path.name[len(prefix):]}"  # a sample's per-class TP/FP/FN maps
            if companion.is_file():
                parts.append(_img(companion, report_dir))
                shown.add(companion)
            parts.append("</div>")
    # A visualizer may name the sections of the other figures it wrote (sections.json: {"sections": {title: [file names]}}).
    listed, _ = _read_json(epoch_dir / "sections.json")
    for title, names in (listed.get("sections", {}) if isinstance(listed, dict) else {}).items():
        # Plain file names only: a path from a file is never followed out of the folder.
        paths = [epoch_dir / n for n in names if isinstance(n, str) and Path(n).name == n and (epoch_dir / n).is_file()
                 and epoch_dir / n not in shown]
        if paths:
            parts.append(f"<h3>{_esc(title)}</h3>")
            parts += [f'<div class="gallery">{_img(p, report_dir, p.stem)}</div>' for p in paths]
            shown.update(paths)
    others = [p for p in pictures if p not in shown]
    if others:
        parts.append("<h3>Other pictures</h3>")
        parts += [f'<div class="gallery">{_img(p, report_dir, p.stem)}</div>' for p in others]
    if not pictures:
        parts.append(_not_available("pictures", "the folder is empty"))
    return "\n".join(parts)


def _worst_gallery(paths: list[Path], report_dir: Path, metrics) -> str:
    worst: dict[str, list[tuple[int, Path]]] = {}
    for path in paths:
        m = re.fullmatch(r"worst_(.+)_(\d+)\.png", path.name)
        if m:
            worst.setdefault(m.group(1), []).append((int(m.group(2)), path))
    scores = _worst_order(metrics)
    parts = []
    for cls in sorted(worst, key=lambda c: (c not in scores, scores.get(c, 0.0), c)):
        score = f" (score {scores[cls]:.4f})" if cls in scores else ""
        parts.append(f"<h4>{_esc(cls)}{_esc(score)}</h4><div class=\"gallery\">")
        parts += [_img(p, report_dir, f"#{rank}") for rank, p in sorted(worst[cls])]
        parts.append("</div>")
    return "\n".join(parts)


def _config_section(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    try:
        return f"<pre>{_esc(path.read_text(encoding='utf-8'))}</pre>"
    except OSError as err:
        return _not_available("resolved config", str(err))


def write_report(run_dir) -> Path:
    """Write RUN_DIR/report/index.html (and its figures) and return its path; a folder that
    cannot be written (read-only, disk full) is one line naming the file."""
    from seglab.errors import SeglabError

    try:
        return _write_report(Path(run_dir))
    except OSError as e:
        raise SeglabError(f"{e.filename or Path(run_dir) / 'report'}: cannot write the report ({e.strerror or e})") from None


def _write_report(run_dir: Path) -> Path:
    from seglab.paths import require_run_folder

    require_run_folder(run_dir)
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(report_dir / "figures", ignore_errors=True)  # copies from an earlier report
    labels, _ = _read_json(run_dir / "labels.json")
    labels = labels if isinstance(labels, dict) else {}
    class_names = [str(c) for c in labels.get("classes", [])]
    metrics, why = _read_json(run_dir / "metrics.json")
    history = read_history(run_dir / "history.jsonl")
    figures = _figures(run_dir, report_dir, metrics, history, class_names)
    task = re.search(r"^task: *(\S+)", (run_dir / "config.yaml").read_text(encoding="utf-8"), re.M)
    facts = ", ".join(([f"task: {task.group(1)}"] if task else []) + ([f"ignore_index: {labels['ignore_index']}"] if "ignore_index" in labels else []))
    classes = f"{len(class_names)} classes ({', '.join(class_names)})" if class_names else ""
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = [
        ("best", "Best validation", _metrics_section(metrics, why)),
        ("per-class", "Per-class scores (best validation)", figures["per_class"]),
        ("curves", "Learning curves", figures["curves"]),
        ("confusion", "Confusion matrix (best validation, rows = ground truth)", figures["cm"]),
        ("pictures", "Validation pictures", _gallery_section(run_dir, report_dir, metrics)),
        ("config", "Resolved config", _config_section(run_dir)),
    ]
    contents = "".join(f'<li><a href="#{anchor}">{_esc(title)}</a></li>' for anchor, title, _ in sections)
    body = [
        f"<h1>seglab run: {_esc(run_dir.resolve().name)}</h1>",
        f"<p>{_esc(' | '.join(x for x in (facts, classes) if x))}</p>",
        f"<p>Report written {_esc(now)}; {len(history)} validation(s) in history.</p>",
        f'<nav><h2>Contents</h2><ol>{contents}</ol></nav>',
    ]
    for anchor, title, content in sections:
        body += [f'<h2 id="{anchor}">{_esc(title)}</h2>', content]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>seglab report: {_esc(run_dir.resolve().name)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    index = report_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
