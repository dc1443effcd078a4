"""Ensemble members: which runs, checkpoints, weights and TTA take part.

A member is a run folder plus a checkpoint (best, last or a .ckpt path), a weight and
its TTA (the run's `tta` section unless the command line overrides it); a k-fold output
folder stands for all its folds, sharing one weight. A single run is an ensemble of one:
`evaluate`, `predict`, `ensemble`, `pseudo`, `tune-thresholds` and k-fold's OOF scores
all go through the same stream (`seglab.inference.predict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seglab.config import TTAConfig
from seglab.core.run import Run
from seglab.errors import ConfigError, SeglabError

CHECKPOINT_NAMES = ("best", "last")


@dataclass
class Member:
    run: Run
    weight: float = 1.0
    tta: TTAConfig | None = None  # None = the run's own config.tta

    def __post_init__(self):
        if self.tta is None:
            self.tta = self.run.cfg.tta

    @property
    def name(self) -> str:
        return self.run.name


def is_kfold_dir(path: Path) -> bool:
    return (Path(path) / "kfold.json").is_file() or (Path(path) / "folds.csv").is_file()


def kfold_runs(path: Path) -> list[Path]:
    runs = sorted((p for p in Path(path).glob("fold_*") if (p / "config.yaml").is_file()), key=lambda p: int(p.name.split("_")[1]))
    if not runs:
        raise SeglabError(f"{path}: a k-fold folder without trained folds (no fold_*/config.yaml)")
    return runs


def parse_member(text: str) -> tuple[Path, str]:
    """`RUN_DIR`, `RUN_DIR:last`, `RUN_DIR:best` or `RUN_DIR:path/to/file.ckpt`."""
    if ":" in text:
        head, tail = text.rsplit(":", 1)
        if tail in CHECKPOINT_NAMES or tail.endswith(".ckpt"):
            return Path(head), tail
    return Path(text), "best"


def resolve_members(specs: list, weights: list[float] | None = None, tta: TTAConfig | None = None,
                    device=None) -> tuple[list[Member], Path | None]:
    """Loaded members for the CLI's RUN... list (k-fold folders expanded, one weight per
    given spec shared by its folds) and the k-fold base config to read images from, if any.
    A spec is text (`RUN:last`) or a (run folder, checkpoint) pair."""
    from seglab.core.run import load_run, pick_device

    if not specs:
        raise ConfigError("give at least one RUN_DIR")
    if weights is not None and len(weights) != len(specs):
        raise ConfigError(f"--weights: {len(weights)} weights for {len(specs)} members")
    device = pick_device(device)
    members, base = [], None
    for i, spec in enumerate(specs):
        path, ckpt = (Path(spec[0]), spec[1]) if isinstance(spec, tuple) else parse_member(spec)
        weight = 1.0 if weights is None else float(weights[i])
        if weight < 0:
            raise ConfigError(f"--weights: negative weight {weight} for {spec}")
        if is_kfold_dir(path):
            folds = kfold_runs(path)
            if base is None and i == 0 and (path / "config.yaml").is_file():
                base = path / "config.yaml"
            members.extend(Member(load_run(run, ckpt, device), weight / len(folds), tta) for run in folds)
        else:
            if not (path / "config.yaml").is_file():
                raise SeglabError(f"{path}: not a run folder or k-fold folder (no config.yaml)")
            members.append(Member(load_run(path, ckpt, device), weight, tta))
    if sum(m.weight for m in members) <= 0:
        raise ConfigError("--weights: the weights sum to zero")
    check_compatible(members, ("submission",))
    return members, base


def check_compatible(members: list[Member], spaces: tuple[str, ...] = ("train",)) -> None:
    """Members average probabilities of one task over one class list: their submission
    classes always, their training classes too where the "train" space is asked for."""
    first = members[0].run
    for m in members[1:]:
        if m.run.cfg.task != first.cfg.task:
            raise SeglabError(f"{m.run.path}: a {m.run.cfg.task} run; the ensemble's first member is a {first.cfg.task} run")
        if list(m.run.submission_labels.classes) != list(first.submission_labels.classes):
            raise SeglabError(
                f"{m.run.path}: submits classes {list(m.run.submission_labels.classes)}, but the ensemble's first member "
                f"submits {list(first.submission_labels.classes)}; members must share one class list (after submission.classes merges)"
            )
        if "train" in spaces and list(m.run.labels.classes) != list(first.labels.classes):
            raise SeglabError(
                f"{m.run.path}: trained for classes {list(m.run.labels.classes)}, but the ensemble's are {list(first.labels.classes)}; "
                "members must share one class list"
            )


def describe(members: list[Member]) -> str:
    return "\n".join(f"  {m.weight:.4g} x {m.name}" for m in members)
