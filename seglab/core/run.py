"""A trained run, loaded once: its config, class list, task, checkpoint weights and
decision thresholds, passed to every command that evaluates or predicts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from seglab.config import Config, load_config
from seglab.core.checkpoints import check_checkpoint_meta, check_state_dict_fits, load_checkpoint_file
from seglab.core.module import LabModule
from seglab.task import Task, get_task
from seglab.data.labels import LabelSpec
from seglab.errors import CheckpointError, SeglabError
from seglab.paths import require_run_folder

THRESHOLDS_FILE = "thresholds.json"
PLAN_FILE = "postprocess.json"  # written by tune-postprocess (seglab.inference.postprocess.PLAN_FILE)


@dataclass
class Run:
    path: Path
    checkpoint: str
    cfg: Config
    labels: LabelSpec
    task: Task
    module: LabModule  # eval mode, on its device
    thresholds_source: str = "config"  # where module.thresholds came from
    postprocess_plan: dict | None = None  # {class index: steps} from RUN/postprocess.json; None = the config's
    postprocess_source: str = "config"

    @property
    def plan(self) -> dict:
        """The post-processing each class gets: the tuned plan, else the config's."""
        if self.postprocess_plan is not None:
            return self.postprocess_plan
        from seglab.inference.postprocess import plan_from_config

        return plan_from_config(self.cfg.postprocess, self.labels.classes) if self.task.morphology else {}

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def thresholds(self) -> torch.Tensor | None:
        return self.module.thresholds

    @property
    def name(self) -> str:
        return f"{self.path}:{self.checkpoint}"

    @property
    def merge(self):
        """Training classes -> submission classes (`submission.classes`), or None."""
        return self.module.merge

    @property
    def submission_labels(self) -> LabelSpec:
        """The classes a submission names: the merged ones, or the training ones."""
        return self.merge.submission if self.merge else self.labels

    def to_submission(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities of this run's training classes in its submission classes."""
        return self.task.merge_probabilities(probs, self.merge) if self.merge else probs

    @property
    def submission_thresholds(self) -> torch.Tensor | None:
        return self.task.merge_thresholds(self.thresholds, self.merge) if self.merge else self.thresholds


def pick_device(name: str | None = None) -> torch.device:
    if name:
        try:
            device = torch.device(name)
        except RuntimeError as e:
            raise SeglabError(f"--device {name!r}: {str(e).splitlines()[0]}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SeglabError(f"--device {name}: no CUDA device is available on this machine (use --device cpu)")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise SeglabError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1} (use --device cuda:0)")
        if device.type not in ("cpu", "cuda"):
            from seglab.core.combinations import device_problems

            problem = device_problems(device.type, 1)
            if problem:
                raise SeglabError(f"--device {name}: no {device.type} device on this machine (use --device cpu)")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    path = Path(checkpoint) if checkpoint.endswith(".ckpt") else run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train the run first, or pick --checkpoint last)")
    return path


def read_run_files(run_dir: str | Path) -> tuple[Config, LabelSpec]:
    """A run folder's resolved config and class list."""
    run_dir = require_run_folder(run_dir)
    cfg = load_config(run_dir / "config.yaml", saved=True)
    return cfg, read_labels_file(run_dir / "labels.json")


def read_labels_file(path: Path) -> LabelSpec:
    """RUN/labels.json; missing, cut or hand-edited files are one line naming it."""
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list) or not all(isinstance(c, str) for c in doc["classes"]):
            raise TypeError("no 'classes' list of names")
        labels = LabelSpec.from_json(doc)
    except FileNotFoundError:
        raise SeglabError(f"{path}: not found; the run folder is incomplete (was training started?)") from None
    except OSError as e:
        raise SeglabError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SeglabError(f"{path}: not a class list written by seglab ({type(e).__name__}: {str(e)[:80]}); "
                          "restore it from a copy or train the run again") from None
    return labels


def load_run(run_dir: str | Path, checkpoint: str = "best", device: torch.device | str | None = None,
             tuned_thresholds: bool = True, tuned_postprocess: bool = True) -> Run:
    """The run's trained module (eval mode) with everything needed to decide; its thresholds
    are the tuned ones from RUN/thresholds.json when present (and `tuned_thresholds`), its
    post-processing the per-class plan of RUN/postprocess.json (and `tuned_postprocess`)."""
    run_dir = Path(run_dir)
    cfg, labels = read_run_files(run_dir)
    # The trained weights replace any pretrained file the config named; do not read it again.
    build_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": None, "encoder_weights": None})})
    # The loss is never used here; uniform frequencies let `class_weights: auto` build
    # without a pass over the training targets.
    uniform = torch.full((labels.num_classes,), 1.0 / labels.num_classes)
    module = LabModule(build_cfg, labels, class_frequencies=uniform)
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint_file(path)  # weights_only=True: a checkpoint cannot run code
    check_checkpoint_meta(state.get("seglab", {}), cfg, labels, str(path))
    check_state_dict_fits(module, state.get("state_dict", {}), str(path))
    module.load_state_dict(state["state_dict"])
    run = Run(run_dir, checkpoint, cfg, labels, get_task(cfg.task), module)
    if module.thresholds is not None and tuned_thresholds:
        tuned = load_thresholds(run_dir, labels.classes)
        if tuned is not None:
            module.thresholds.copy_(tuned)
            run.thresholds_source = str(run_dir / THRESHOLDS_FILE)
    if tuned_postprocess and (run_dir / PLAN_FILE).is_file():
        from seglab.inference.postprocess import read_plan

        run.postprocess_plan = read_plan(run_dir / PLAN_FILE, list(labels.classes))
        run.postprocess_source = str(run_dir / PLAN_FILE)
    module.to(device if isinstance(device, torch.device) else pick_device(device)).eval()
    return run


def load_thresholds(run_dir: Path, classes) -> torch.Tensor | None:
    """Tuned thresholds saved in the run folder, or None when there are none."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())["thresholds"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SeglabError(f"{path}: not a thresholds file ({type(e).__name__}); delete it or run tune-thresholds again") from None
    missing = [c for c in classes if c not in values]
    if missing:
        raise SeglabError(f"{path}: no threshold for classes {missing}; run tune-thresholds again")
    return torch.tensor([float(values[c]) for c in classes])
