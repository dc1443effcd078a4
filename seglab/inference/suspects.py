"""`seglab data corrections-template RUN`: the labels a trained run disagrees with most,
written as a corrections file (data.corrections) whose records are all commented out.

The images of a labelled split (val; for a k-fold folder each fold's held-out images, so
out-of-fold) are ranked by the task's per-image loss. For each of the top ones a record is
proposed: per annotation (COCO, polygons) a relabel to the class the model gives most of
its pixels, or a drop where no class gets half; per image (classification) a relabel to
the predicted class, or the one mask-status field that differs. A person decides: the
file only lists candidates, with a panel of each image to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seglab.config import TTAConfig
from seglab.data import build_dataset
from seglab.data.corrections import format_record
from seglab.data.maskstatus import record_value
from seglab.inference.ensemble import Member
from seglab.inference.predict import at_original_size, member_probs, stream

HALF = 0.5  # mean probability over an annotation above which the model "sees" a class there


@dataclass
class Suspect:
    id: str
    loss: float
    records: list[tuple[str, str]]   # (record, why)
    panel: np.ndarray | None = None


@torch.no_grad()
def find_suspects(run, split: str = "val", top: int = 20, panels: bool = True) -> list[Suspect]:
    """The `top` images of `split` with the highest loss under `run`, each with proposed records."""
    member = Member(run, tta=TTAConfig())  # the plain view: a label is judged by what the model sees
    ranked = []
    for batch, probs, _ in stream([member], split, with_targets=True):
        losses = run.task.per_image_loss(probs["train"], batch["target"].to(run.device)).cpu().tolist()
        ranked += [(loss, index, sid) for loss, index, sid in zip(losses, batch["index"].tolist(), batch["id"])]
    ranked.sort(key=lambda r: -r[0])
    dataset = build_dataset(run.cfg, split, run.labels, train=False, with_targets=True)
    out = []
    for loss, index, sid in ranked[:top]:
        image = dataset[index]["image"][None].to(run.device)
        probs = at_original_size(run, member_probs(member, image), dataset.source, index)[0].cpu()
        target = dataset.source.load_target(index)
        records = propose(run.labels, dataset.source, index, sid, probs, target)
        panel = None
        if panels:
            panel = run.task.suspect_panel(dataset.source.load_image(index), target, probs, run.labels,
                                           f"{sid}  loss {loss:.3f}", run.thresholds)
        out.append(Suspect(sid, loss, records, panel))
    return out


def propose(labels, source, index: int, sid: str, probs: torch.Tensor, target) -> list[tuple[str, str]]:
    """Candidate records for one image: (record, why)."""
    if probs.dim() == 1:  # one class per image
        pred, true = int(probs.argmax()), int(target)
        if pred == true:
            return [(format_record(sid, "drop"), f"its class {labels.classes[true]} is predicted ({float(probs[pred]):.2f}), yet its loss ranks high")]
        why = f"labelled {labels.classes[true]}, predicted {labels.classes[pred]} ({float(probs[pred]):.2f})"
        differ = [f for f, values in labels.facets.items() if values[pred] != values[true]]
        if len(differ) == 1 and record_value(differ[0], labels.facets[differ[0]][pred]) is not None:
            return [(format_record(sid, differ[0], record_value(differ[0], labels.facets[differ[0]][pred])), why)]
        return [(format_record(sid, "relabel", labels.classes[pred]), why)]
    annotations = source.annotation_masks(index)
    if annotations is None:  # label maps: no annotations to name
        return [(format_record(sid, "drop"), "the whole label map disagrees with the model")]
    from seglab.tasks.segmentation import is_background

    out = []
    for key, cls, mask in annotations:
        if cls >= labels.num_classes or not mask.any():
            continue  # ignored or empty: nothing to judge
        share = probs[:, torch.from_numpy(mask)].mean(1)  # each class's mean probability over the annotation
        if share[cls] >= HALF:
            continue
        best = max((c for c in range(labels.num_classes) if c != cls), key=lambda c: float(share[c]))
        if share[best] >= HALF and not is_background(labels.classes[best]):
            out.append((format_record(sid, "relabel", labels.classes[best], key),
                        f"labelled {labels.classes[cls]} ({float(share[cls]):.2f}), the model sees {labels.classes[best]} ({float(share[best]):.2f})"))
        else:
            out.append((format_record(sid, "drop", annotation=key),
                        f"labelled {labels.classes[cls]} ({float(share[cls]):.2f}), the model sees no class there"))
    return out


def write_template(suspects: list[Suspect], out: Path, what: str, panel_dir: Path | None) -> Path:
    """The corrections template (every record commented out) and, when asked, one panel per image."""
    from seglab.io import write_text
    from seglab.visualization.figures import safe_filename, save_png

    lines = [f"# Suspected label mistakes: {what}, highest loss first.",
             "# Every record is commented out. Look at the image (and its panel), uncomment the records you",
             "# agree with, and point data.corrections at this file (see README, 'Label corrections').", ""]
    for rank, s in enumerate(suspects, start=1):
        panel = ""
        if panel_dir is not None and s.panel is not None:
            path = save_png(s.panel, Path(panel_dir) / f"{rank:03d}_{safe_filename(s.id)}.png")
            panel = f"  (panel {path.name})"
        lines.append(f"# {rank}. loss {s.loss:.4f}  {s.id}{panel}")
        lines += [f"# {record}  # {why}" for record, why in s.records] or ["#   (no record to propose: its annotations agree with the model)"]
    write_text(out, "\n".join(lines) + "\n")
    return out
