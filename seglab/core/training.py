"""Training one run, for every task: preflight, trainer, callbacks, loggers, `train`.

The recipe, in order: list every problem that can be found before training (and stop
if there is one), write the resolved config and the class list, build the datasets and
the one LabModule, fit with Lightning, and turn an out-of-memory error into advice.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from seglab.config import to_yaml
from seglab.console import quiet_lightning, run_log
from seglab.core.checkpoints import AtomicCheckpointIO, ExactResume, check_checkpoint_meta, load_checkpoint_file
from seglab.core.loaders import LabData
from seglab.core.module import LabModule
from seglab.progress import LossBar
from seglab.task import get_task
from seglab.data import build_dataset, collect_problems
from seglab.errors import DataValidationError, SeglabError
from seglab.io import atomic_open, check_writable, write_json, write_text
from seglab.models.pretrained import describe_origin

log = logging.getLogger("seglab")

PRECISIONS = {"32": "32-true", "fp32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "fp16": "16-mixed"}


def train(cfg, run_dir: str | Path, resume: bool = False, resumed: dict | None = None) -> dict:
    """Train one run into `run_dir`; returns the best validation metrics. The run folder is
    held by this process until training ends (`seglab.core.runlock`): a second `train` or
    `--resume` into it stops at once. `resumed` (the overrides and the epoch of a `--resume`)
    is recorded in RUN/resumes.jsonl, and the overridden config replaces RUN/config.yaml."""
    from seglab.core.runlock import RunLock

    created = _missing_folders(Path(run_dir))
    try:
        with RunLock(run_dir, "train --resume" if resume else "train"):
            return _train(cfg, Path(run_dir), resume, resumed)
    except SeglabError:
        for folder in created:  # a failed preflight leaves no empty run folder for a retry to trip over
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _train(cfg, run_dir: Path, resume: bool, resumed: dict | None) -> dict:
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise SeglabError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    if not resume and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise SeglabError(f"{run_dir}: already holds a trained run; use --resume to continue it or choose another --out")
    task = get_task(cfg.task)
    labels = preflight(cfg, run_dir, ("train", "val"))
    if resume:  # before anything in the run folder is rewritten
        check_checkpoint_meta(load_checkpoint_file(last).get("seglab", {}), cfg, labels, str(last))
        check_same_label_meaning(run_dir, labels)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if resume:  # the checkpoint holds the trained weights: no pretrained file is read again
        build_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"encoder_weights": None, "weights": None})})
    else:
        # Pretrained weights resolved (cache, else download) and recorded with their sha256,
        # and the normalisation set to theirs, before the config is written.
        cfg = build_cfg = resolve_weights(cfg, task)
    if not resume or (resumed and resumed["overrides"]):  # a resume's overrides are part of the run now
        write_text(run_dir / "config.yaml", to_yaml(cfg))
    if not resume:
        write_json(run_dir / "labels.json", labels.to_json())  # --resume keeps the run's own (checked above)
    if resumed:
        from seglab.core.resuming import record_resume

        record_resume(run_dir, resumed["overrides"], resumed["from_epoch"])
    keep_corrections(cfg, run_dir)

    with run_log(run_dir):
        quiet_lightning()
        log.info(f"{'resuming' if resume else 'training'} {run_dir} ({task.name}, {cfg.model.arch}/{cfg.model.encoder}, "
                 f"{labels.num_classes} classes)" + (f" from epoch {resumed['from_epoch']} with {' '.join(resumed['overrides'])}"
                                                     if resumed and resumed["overrides"] else ""))
        return _fit(cfg, build_cfg, run_dir, labels, task, resume, last)


def _fit(cfg, build_cfg, run_dir: Path, labels, task, resume: bool, last: Path) -> dict:
    train_set = build_dataset(cfg, "train", labels, train=True, with_targets=True)
    val_set = build_dataset(cfg, "val", labels, train=False, with_targets=True)
    frequencies = class_frequencies(train_set.source, labels) if needs_class_frequencies(cfg) else None
    module = LabModule(build_cfg, labels, run_dir, frequencies)
    if not resume:
        log.info("model %s/%s: %s", cfg.model.arch, cfg.model.encoder, describe_origin(module.model, cfg.model.encoder_weights_resolved))
    module.checkpoint_source = str(last)
    try:
        trainer = make_trainer(cfg, run_dir, labels, task)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as e:  # Lightning's own checks, unforeseen
        if not isinstance(e, MisconfigurationException) and not _from_lightning(e):
            raise
        raise SeglabError(f"trainer settings: {str(e).strip().splitlines()[0]} (see trainer.* in the config)") from None
    data = LabData(cfg, train_set, val_set, task.unlabelled_dataset(cfg, labels))
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None, weights_only=True)
    except torch.OutOfMemoryError as e:
        raise out_of_memory_error(e, cfg, trainer, module.stage_now) from None
    metrics_path = run_dir / "metrics.json"
    return json.loads(metrics_path.read_text()) if metrics_path.exists() else {}


def check_same_label_meaning(run_dir: Path, labels) -> None:
    """`--resume` trains on with the labels the run started with: the class list, the mapping
    from the data's values/categories to classes (data.coco.category_map, remap, data.labelmap.mask_value_map),
    the ignore index. RUN/labels.json records them and is never rewritten."""
    from seglab.core.run import read_labels_file

    recorded = read_labels_file(run_dir / "labels.json")
    now = labels.to_json()
    if recorded.to_json() != now:
        changed = [k for k in now if recorded.to_json().get(k) != now[k]]
        raise SeglabError(f"{run_dir / 'labels.json'}: the config now gives other labels ({', '.join(changed)} changed, "
                          "e.g. data.coco.category_map, data.classes, data.remap); --resume continues with the labels the run "
                          "started with: undo the change, or train a new run")


def keep_corrections(cfg, run_dir: Path) -> None:
    """A copy of data.corrections in the run folder: which labels a run saw stays known
    after the file is edited (its content is also in the mask-cache key)."""
    if cfg.data.corrections:
        source = cfg.data.resolve(cfg.data.corrections)
        with atomic_open(run_dir / f"corrections{source.suffix.lower() or '.yaml'}", "wb") as f:
            f.write(source.read_bytes())


def resolve_weights(cfg, task):
    """`model.encoder_weights` resolved to a file and recorded (see seglab/models/pretrained.py)."""
    from seglab.models.pretrained import is_weights_path, resolve_config

    value = cfg.model.encoder_weights
    return resolve_config(cfg, task.pretrained_encoder(cfg) if value and not is_weights_path(value) else None)


# ------------------------------------------------------------------ preflight


def preflight(cfg, run_dir: Path | None, splits):
    """Every problem that can be found before training, listed at once: the output folder,
    the config's parts (loss, transforms, model), the class list and the data. Returns the
    resolved class list."""
    problems = []
    if run_dir is not None:
        try:
            check_writable(run_dir)
        except SeglabError as e:
            problems.append(str(e))
    problems += config_problems(cfg)
    problems += weights_problems(cfg, get_task(cfg.task))
    labels, data_problems = collect_problems(cfg, splits)
    problems += data_problems
    if labels is not None:
        from seglab.core.module import monitorable
        from seglab.data.labels import class_merge

        task = get_task(cfg.task)
        try:
            merge = class_merge(labels, cfg.submission.classes)
        except SeglabError as e:
            problems.append(str(e))
            merge = None
        allowed = monitorable(task, labels, merge) + ("loss",)
        if cfg.eval.monitor not in allowed:
            problems.append(f"eval.monitor: {cfg.eval.monitor!r} is not a {task.name} metric (use one of {', '.join(allowed)})")
    if problems:
        raise DataValidationError(list(dict.fromkeys(problems)))
    return labels


def _missing_folders(run_dir: Path) -> list[Path]:
    """The folders training would create (the run lock, `check_writable`), deepest first."""
    return [p for p in [Path(run_dir), *Path(run_dir).parents] if not p.exists()]


def config_problems(cfg) -> list[str]:
    """The config checks that need the training stack, every bad entry on its own line: loss
    names and parameters, albumentations transforms, batch augmentations, the task's own
    (model name, ...), and keys that cannot work together (crop vs image size, warmup vs
    epochs)."""
    from seglab.core.combinations import combination_problems
    from seglab.data.batch_augment import batch_problems
    from seglab.data.transforms import transform_problems
    from seglab.losses import loss_problems

    task = get_task(cfg.task)
    return (loss_problems(cfg.loss, task.loss_targets) + transform_problems(cfg.augment.train, "augment.train")
            + transform_problems(cfg.augment.eval, "augment.eval") + batch_problems(cfg.augment.batch, "augment.batch")
            + task.preflight_problems(cfg) + weights_problems(cfg, task, cache=False) + trainer_problems(cfg)
            + combination_problems(cfg))


def weights_problems(cfg, task, cache: bool = True) -> list[str]:
    """`model.encoder_weights` that cannot be had: an unknown tag, a missing local file, and
    with `cache` (the preflight; `seglab config` prints configs on any machine) a file that is
    not in the cache while offline. Online, a missing file is downloaded when training starts."""
    from seglab.models.pretrained import cached_file, is_weights_path, missing_message, offline, pretrained_spec

    value = cfg.model.encoder_weights
    if not value:
        return []
    if is_weights_path(value):
        return [] if Path(value).is_file() else [f"model.encoder_weights: {value}: weights file not found"]
    try:
        spec = pretrained_spec(task.pretrained_encoder(cfg), value)
    except SeglabError as e:
        return [str(e)]
    if cache and offline() and not any(cached_file(f) for f in spec.files):
        return [missing_message(spec, "HF_HUB_OFFLINE is set")]
    return []


def trainer_problems(cfg) -> list[str]:
    """Trainer settings Lightning would refuse only once it is built (with its own exception
    types), and input channels the images cannot have: found here, with the others."""
    import typing

    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    t, problems = cfg.trainer, []
    accelerators = {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    if t.accelerator not in accelerators:
        problems.append(f"trainer.accelerator: unknown accelerator {t.accelerator!r} (use {', '.join(sorted(accelerators))})")
    elif t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        problems.append(f"trainer.accelerator: {t.accelerator!r} but no CUDA GPU is available on this machine (use cpu or auto)")
    elif t.accelerator in ("gpu", "cuda") and isinstance(t.devices, int) and t.devices > torch.cuda.device_count():
        problems.append(f"trainer.devices: {t.devices} GPUs asked, this machine has {torch.cuda.device_count()}")
    elif t.accelerator == "mps" and not torch.backends.mps.is_available():
        problems.append("trainer.accelerator: 'mps' but Apple's MPS is not available on this machine (use cpu or auto)")
    elif t.accelerator == "tpu":
        problems.append("trainer.accelerator: 'tpu' is not supported by seglab (use cpu, gpu or auto)")
    strategies = {"auto", *StrategyRegistry.available_strategies()}
    if t.strategy not in strategies:
        close = difflib.get_close_matches(t.strategy, strategies, n=1)
        problems.append(f"trainer.strategy: unknown strategy {t.strategy!r}" + (f"; did you mean {close[0]!r}?" if close else " (auto, ddp, ...)"))
    try:  # Lightning's list of precision strings (a private name: if it moves, Lightning's own check remains)
        from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

        allowed = {str(v) for group in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(group)} | set(PRECISIONS)
        if t.precision not in allowed:
            problems.append(f"trainer.precision: {t.precision!r} is not a precision (use 32, bf16, 16 or a Lightning string "
                            "such as bf16-mixed, 16-mixed, 32-true)")
    except ImportError:
        pass
    if cfg.model.in_channels != 3:
        problems.append(f"model.in_channels: {cfg.model.in_channels}, but seglab reads every image as 3-channel RGB "
                        "(greyscale images are replicated to three channels): use 3")
    return problems


def _from_lightning(error: Exception) -> bool:
    """Whether an exception was raised inside Lightning (its configuration checks)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "lightning" in tb.tb_frame.f_code.co_filename


def out_of_memory_error(error: Exception, cfg, trainer: L.Trainer, stage: str) -> SeglabError:
    batch_key = "data.val_batch_size" if stage == "validation" else "data.batch_size"
    batch = (cfg.data.val_batch_size or cfg.data.batch_size) if stage == "validation" else cfg.data.batch_size
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else "out of memory"
    return SeglabError(
        f"out of GPU memory during {stage} at step {trainer.global_step}, epoch {trainer.current_epoch} ({first}). "
        f"Lower {batch_key} (now {batch}) and raise trainer.accumulate_grad_batches "
        f"(now {cfg.trainer.accumulate_grad_batches}) to keep the effective batch, or use trainer.precision=bf16 "
        f"(now {cfg.trainer.precision}); a smaller data.image_size or model also helps"
    )


def needs_class_frequencies(cfg) -> bool:
    return any((spec.model_extra or {}).get("class_weights") == "auto" for spec in cfg.loss)


def class_frequencies(source, labels) -> torch.Tensor:
    """Share of each class over the training targets (pixels of masks, or images)."""
    counts = torch.zeros(labels.num_classes, dtype=torch.float64)
    for i in range(len(source)):
        counts += labels.kind.class_counts(source.load_target(i), labels)
    return counts / counts.sum().clamp(min=1)


# ------------------------------------------------------------------ trainer


def make_loggers(cfg, run_dir: Path) -> list:
    loggers = []
    for name in cfg.logging.loggers:
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False))
        elif name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(save_dir=str(run_dir), name=cfg.name or run_dir.name, offline=True,
                                       tags=[f"{k}:{v}" for k, v in cfg.logging.tags.items()] or None))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            loggers.append(MLFlowLogger(experiment_name=cfg.name or "seglab", tracking_uri=f"file:{run_dir / 'mlruns'}",
                                        tags=dict(cfg.logging.tags) or None))
    return loggers


def make_callbacks(cfg, run_dir: Path, labels, task, has_logger: bool) -> list:
    """Best checkpoint, lr monitor, the task's validation pictures, averaging, exact resume, the progress bar."""
    from seglab.averaging import build_averaging_callbacks

    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best", monitor=f"val/{cfg.eval.monitor}", mode=cfg.eval.mode,
            save_top_k=1, save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
        )
    ]
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.logging.viz_every_n_epochs > 0:
        visualizer = task.visualizer(cfg, labels, run_dir)
        if visualizer is not None:
            callbacks.append(visualizer)
        else:
            log.info("logging.viz_every_n_epochs: task %s draws no validation pictures yet", task.name)
    callbacks.extend(build_averaging_callbacks(cfg.averaging, cfg.eval.monitor, cfg.eval.mode, cfg.trainer.max_epochs))
    callbacks.append(ExactResume(run_dir / "checkpoints" / "last.ckpt", cfg.trainer.checkpoint_every_n_steps))
    if cfg.trainer.progress_bar:
        callbacks.append(LossBar())
    else:  # no bar: a progress line with the ETA every few seconds
        from seglab.progress import TrainingProgress

        callbacks.append(TrainingProgress())
    return callbacks


def make_trainer(cfg, run_dir: Path, labels, task=None) -> L.Trainer:
    t = cfg.trainer
    task = task or get_task(cfg.task)
    loggers = make_loggers(cfg, run_dir)
    return L.Trainer(
        default_root_dir=str(run_dir), max_epochs=t.max_epochs, precision=PRECISIONS.get(t.precision, t.precision),
        accumulate_grad_batches=t.accumulate_grad_batches, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy, check_val_every_n_epoch=t.val_every_n_epochs,
        log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        gradient_clip_val=cfg.optim.grad_clip, enable_progress_bar=t.progress_bar,
        logger=loggers or False, callbacks=make_callbacks(cfg, run_dir, labels, task, bool(loggers)),
        plugins=[AtomicCheckpointIO()], enable_model_summary=False, num_sanity_val_steps=1,
        use_distributed_sampler=False,  # LabData shards itself, without padding
    )
