"""`seglab data corrections-template RUN`: the labels a trained run disagrees with most,
written as a corrections file (data.corrections) whose records are all commented out.

The images of a labelled split (val; for a k-fold folder each fold's held-out images, so
out-of-fold) are ranked by the task's per-image loss. For each of the top ones the task
proposes records (`Task.propose_corrections`): per annotation (COCO, polygons) a relabel to
the class the model gives most of its pixels, or a drop where no class gets half; per image
(classification) a relabel to the predicted class, or the one mask-status field that
differs. A person decides: the file only lists candidates, with a panel of each image to
look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seglab.config import TTAConfig
from seglab.data import build_dataset
from seglab.inference.ensemble import Member
from seglab.inference.predict import at_original_size, member_probs, stream


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
        losses = run.task.per_image_loss(probs["train"], run.task.kind.to_device(batch["target"], run.device)).cpu().tolist()
        ranked += [(loss, index, sid) for loss, index, sid in zip(losses, batch["index"].tolist(), batch["id"])]
    ranked.sort(key=lambda r: -r[0])
    dataset = build_dataset(run.cfg, split, run.labels, train=False, with_targets=True)
    out = []
    for loss, index, sid in ranked[:top]:
        image = dataset[index]["image"][None].to(run.device)
        probs = run.task.kind.to_device(at_original_size(run, member_probs(member, image), dataset.source, index), "cpu")[0]
        target = dataset.source.load_target(index)
        records = run.task.propose_corrections(run.labels, dataset.source, index, sid, probs, target)
        panel = None
        if panels:
            panel = run.task.suspect_panel(dataset.source.load_image(index), target, probs, run.labels,
                                           f"{sid}  loss {loss:.3f}", run.thresholds)
        out.append(Suspect(sid, loss, records, panel))
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
