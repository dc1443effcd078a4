"""The task protocol: the questions the engine (`seglab/core/`) asks and never answers itself.

Training, resume, evaluation, prediction, TTA, ensembles, k-fold, pseudo-labels, the
report and the run list are written once, against this class. A task (multiclass,
multilabel, classification) is a subclass in `seglab/tasks/`, registered in `TASKS`, that
answers what targets *mean*; what a target *is* (a class map, binary masks, an image class)
is its kind (`seglab.kinds`), named by `target`, which answers everything that depends on
the form alone (augmenting, resizing, collating, combining TTA views and ensemble members,
undoing a view, drawing).

| question | method or attribute |
|---|---|
| what a target is | `target` (a kind name), `kind` (its object): collate, resize, combine, undo a TTA view, draw |
| its own config section | `options` (a pydantic model read from the config key named after the task, or None) |
| its class list, from the data's | `adapt_labels` |
| its defaults and config checks | `defaults`, `config_problems` (torch-free: at config load), `preflight_problems` |
| its model and loss | `build_model`, `pretrained_encoder`, `loss_targets`, `allowed_losses`, `build_loss` |
| one training step, one validation loss | `batch_augment`, `training_loss`, `unlabelled_dataset`, `validation_loss` |
| logits -> probabilities -> decision | `probabilities` (and back: `logits`), `thresholds`, `decide`, `postprocess` |
| training classes -> submission classes | `merge_probabilities`, `merge_targets`, `merge_thresholds` (`submission.classes`) |
| its metric | `metric` (the contract below), `scalar_metrics`, `metric_names`, `per_class_key`, `format_table`, `history_extra` |
| what it can write | `writers` (the first is the default), TTA views (`tta_flips`) |
| its validation pictures | `visualizer`, `suspect_panel` |
| which labels look wrong | `per_image_loss`, `propose_corrections` (`seglab data corrections-template`) |
| what k-fold stratifies on | `stratification_key` |
| pseudo-labels | `write_pseudo_labels` |

The metric contract: `update(decisions, targets)` per batch; `reduce()` combines the
processes' states under DDP, by summing them (a confusion matrix, Dice sums) or by
gathering them (per-image predictions, as COCO mAP needs); `state()` is JSON and
`add_state(state)` pools another shard's or a held-out fold's state (added, or appended),
so k-fold's out-of-fold score is the metric over every fold's images at once; `compute
(class_names)` gives the scores; `reset()`, `to(device)`.

Task modules import no torch at module level (the config asks them for defaults);
heavy imports live inside the methods that need them.
"""

from __future__ import annotations

from typing import Any

from seglab.registry import Registry

TASKS = Registry("task")


class Task:
    name: str = ""
    target: str = ""                  # the kind of its targets: "class_map" | "binary_masks" | "class"
    options = None                    # its config section (a pydantic model class), or None
    scalar_metrics: tuple[str, ...] = ()
    per_class_key: str = ""           # the {class: score} entry of the scores shown per class
    per_class_log: str = ""           # logger prefix of the per-class scores
    default_monitor: str = ""
    loss_targets: str = "index"       # "index" (class indices) or "binary" (0/1 channels): which losses apply
    allowed_losses: tuple[str, ...] | None = None  # None = every loss that takes `loss_targets`
    writers: tuple[str, ...] = ()
    tta_flips: tuple[str, ...] = ("h", "v", "hv")

    @property
    def kind(self):
        """The target kind object (`seglab.kinds`)."""
        from seglab.kinds import target_kind

        return target_kind(self.target)

    # ------------------------------------------------------------ config (torch-free)

    def options_in(self, cfg):
        """This task's options in a config: its `<task>:` section (the defaults when the config
        is another task's), or None when the task declares none."""
        if self.options is None:
            return None
        found = cfg.task_options
        return found if isinstance(found, self.options) else self.options()

    def defaults(self, cfg) -> dict[str, Any]:
        """Dotted config keys -> the task's default, applied where the config left them unset."""
        return {"eval.monitor": self.default_monitor, "submission.format": self.writers[0]}

    def config_problems(self, cfg) -> list[str]:
        """Problems a config has for this task that need no data and no torch."""
        problems = []
        if self.allowed_losses is not None:
            problems += [f"loss[{i}].name: {s.name!r} is not a {self.name} loss (use {', '.join(self.allowed_losses)})"
                         for i, s in enumerate(cfg.loss) if s.name.lower() not in self.allowed_losses]
        if cfg.submission.format not in self.writers:
            problems.append(f"submission.format: {cfg.submission.format!r} is not a {self.name} format (use {', '.join(self.writers)})")
        bad = [f for f in cfg.tta.flips if f not in self.tta_flips]
        if bad:
            problems.append(f"tta.flips: {bad} not supported by {self.name} (use {', '.join(self.tta_flips) or 'none'})")
        return problems

    def preflight_problems(self, cfg) -> list[str]:
        """Problems found with the training stack loaded (run before training, beside the
        loss, transform and data checks)."""
        return []

    # ------------------------------------------------------------ labels, model, loss

    def adapt_labels(self, spec):
        """The data's class list (a LabelSpec) as this task trains on it."""
        raise NotImplementedError

    def build_model(self, cfg, labels):
        raise NotImplementedError

    def pretrained_encoder(self, cfg):
        """The encoder (seglab.models.pretrained.EncoderRef) whose weights `model.encoder_weights: TAG` names."""
        raise NotImplementedError

    def build_loss(self, cfg, labels, class_frequencies=None):
        from seglab.losses import build_loss

        return build_loss(cfg.loss, self.loss_targets, labels.num_classes, labels.ignore_index, class_frequencies)

    # ------------------------------------------------------------ training step

    def batch_augment(self, cfg, labels):
        """A callable applied to each training batch on the device, or None."""
        return None

    def training_loss(self, module, batch):
        """The loss of one training batch ({"image", "target", ...}); `module` is the LabModule."""
        raise NotImplementedError

    def unlabelled_dataset(self, cfg, labels):
        """Images without labels drawn alongside each training batch (consistency training), or None."""
        return None

    def validation_loss(self, module, logits, target):
        """The loss of one validation batch (a scalar tensor), or None when the task has none
        (a model that computes its losses only while training)."""
        return module.criterion(logits, target)

    # ------------------------------------------------------------ decisions

    def probabilities(self, logits):
        raise NotImplementedError

    def logits(self, probs):
        """Logits whose probabilities are `probs` (the loss of blended sliding-window tiles)."""
        raise NotImplementedError

    def thresholds(self, cfg, labels):
        """Per-class decision thresholds [C] from the config, or None when the decision takes none."""
        return None

    def decide(self, probs, thresholds=None):
        raise NotImplementedError

    morphology: bool = False          # whether its decisions are masks that post-processing (morphology) can clean

    def postprocess(self, prediction, cfg, labels, plan=None):
        """One decided prediction (numpy) after post-processing: the config's, or `plan`
        ({class index: steps}, a tuned RUN/postprocess.json) when given."""
        return prediction

    # ------------------------------------------------------------ submission classes

    def merge_probabilities(self, probs, merge):
        """Probabilities [B, C_train, ...] in submission space [B, C_sub, ...] (`merge` a
        ClassMerge): a merged class's probability is the sum of its members' (one class per
        pixel or image: the events are disjoint, so the sum is their union's probability)."""
        import torch

        index = torch.as_tensor(merge.index, device=probs.device)
        out = probs.new_zeros((probs.shape[0], merge.submission.num_classes, *probs.shape[2:]))
        return out.index_add_(1, index, probs)

    def merge_targets(self, target, merge):
        """Targets in submission space: class indices through the merge (ignore stays ignore)."""
        import torch

        lut = torch.as_tensor(merge.index, device=target.device, dtype=target.dtype)
        inside = target < len(merge.index)
        return torch.where(inside, lut[target.clamp(0, len(merge.index) - 1).long()], target)

    def merge_thresholds(self, thresholds, merge):
        """Decision thresholds [C_train] in submission space (None when the decision takes none):
        a merged class takes its members' lowest."""
        if thresholds is None:
            return None
        import torch

        return torch.stack([thresholds[group].min() for group in merge.groups()])

    # ------------------------------------------------------------ metric and report

    def metric(self, labels, device=None):
        """A fresh metric object (the contract in the module docstring)."""
        raise NotImplementedError

    def metric_names(self, labels) -> tuple[str, ...]:
        """Every scalar `compute()` returns for these labels (what eval.monitor may name)."""
        return self.scalar_metrics

    def format_table(self, scores: dict, title: str = "") -> str:
        raise NotImplementedError

    def history_extra(self, metric) -> dict:
        """What history.jsonl keeps of a validation's metric besides its scores."""
        return {}

    def visualizer(self, cfg, labels, run_dir):
        """The Lightning callback that draws this task's validation pictures, or None."""
        return None

    def suspect_panel(self, image, target, probs, labels, title: str, thresholds=None):
        """A picture of one suspected label mistake (uint8 H x W x 3), or None when the task draws
        none; `thresholds` are the run's tuned ones (None: the task's default decision)."""
        return None

    # ------------------------------------------------------------ workflows

    def per_image_loss(self, probs, target):
        """[B] each image's mean negative log-likelihood of its target (ignored pixels left
        out): class maps [B, H, W] or class indices [B] against softmax probabilities."""

        classes = probs.shape[1]
        valid = target < classes
        picked = probs.gather(1, target.clamp(0, classes - 1).long().unsqueeze(1)).squeeze(1)
        nll = -picked.clamp_min(1e-7).log() * valid
        dims = tuple(range(1, nll.dim()))
        if not dims:
            return nll
        return nll.sum(dims) / valid.sum(dims).clamp_min(1).to(nll.dtype)

    def propose_corrections(self, labels, source, index: int, sample_id: str, probs, target) -> list[tuple[str, str]]:
        """(corrections record, why) candidates for one image whose loss ranks high; `probs`
        at its original size."""
        raise NotImplementedError

    def stratification_key(self, source, labels):
        """[N, K] 0/1 per sample: what k-fold keeps balanced across folds."""
        raise NotImplementedError

    def write_pseudo_labels(self, predictions, out, ref_cfg, labels, threshold: float, min_confident: float,
                            thresholds=None) -> dict:
        """Write confident predictions as a training set `data.extra_train` reads; `predictions`
        yields (sample id, image path, probabilities at the original size); `thresholds` are the
        run's decision thresholds. Returns a summary."""
        raise NotImplementedError


def get_task(name: str) -> Task:
    """The task object for a config's `task` value (the tasks register when `seglab` is imported)."""
    return TASKS.get(name, "task")()
