"""The experiment config: every knob, its default and a one-line description.

Data only: importing this module loads pydantic and nothing of the training stack, so
`seglab --help`, `seglab runs` and the README generator never wait for torch. Checks that
need the stack (loss parameters, albumentations names, model names) run in the
preflight before training (`seglab.core.preflight`). Defaults that depend on the task
(the loss, the monitored metric, the submission format) are declared by the task and
filled in here, so the saved config.yaml holds every value a run used. One file on
purpose: every knob of the engine, with its default and description, is read in one place.

`task` and `data.format` name plug-ins (the TASKS and SOURCES registries, read when a config
is validated, not when this module is imported). A plug-in declares its own options (an
`Options` model, its `options` attribute), mounted under its name: the task's at the top
level (`classification:`), the data format's under `data` (`data.labelmap:`). Only the
configured task's and format's sections are read; a section of another one is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "radam", "adamp")
SCHEDULE_NAMES = ("none", "cosine", "cosine_restarts", "poly", "step", "multistep", "plateau", "onecycle")


def _admits_bool(annotation) -> bool:
    """Whether a field's type has a place for true/false (bool itself, Any, or inside a Union/list/dict)."""
    if annotation is bool or annotation is Any:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True  # a section checks its own fields
    return any(_admits_bool(a) for a in get_args(annotation) if not isinstance(a, (str, int, float)))


def _holds_bool(value) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_bool(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_bool(k) or _holds_bool(v) for k, v in value.items())
    return False


class Checked(BaseModel):
    """Numbers are numbers: inf and nan are refused (`lr: .inf` would train on NaNs), and so
    are true/false where a number or a name is expected (YAML reads `batch_size: true`
    as a bool, which pydantic would quietly take as 1)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value, info):
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is not None and _holds_bool(value) and not _admits_bool(field.annotation):
            raise ValueError("true/false is not a valid value here (expected a number or a name)")
        return value


class Strict(Checked):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Options(Strict):
    """A plug-in's own config section (a task's, a data format's): its `options` attribute."""


def _relocated(errors: list[dict], prefix: tuple) -> list[dict]:
    """A section's validation errors, located under `prefix`, as pydantic takes them back."""
    return [{"type": e["type"], "loc": (*prefix, *e["loc"]), "input": e.get("input"),
             **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in errors]


class WithPluginOptions(Checked):
    """A section (the config, its data section) whose `PLUGIN` field names a registered
    plug-in, and which holds that plug-in's options under the plug-in's name (an extra key,
    validated by the plug-in's `options` model). Any other key is refused, a section of
    another plug-in of the same registry included: it would be read by nobody."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    PLUGIN: ClassVar[str]
    WHERE: ClassVar[str]  # the plug-in field's dotted key, for messages

    @classmethod
    def plugins(cls):
        """The registry `PLUGIN` names an entry of."""
        raise NotImplementedError

    @classmethod
    def options_of(cls, name: str):
        """The options model of the plug-in `name`, or None when it declares none."""
        return cls.plugins().get(name).options

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_options(cls, raw, handler):
        if not isinstance(raw, dict):
            return handler(raw)
        raw = dict(raw)
        name = raw.get(cls.PLUGIN, cls.model_fields[cls.PLUGIN].default)
        if not isinstance(name, str):
            return handler(raw)  # the field's own type error
        raw[cls.PLUGIN] = name = cls.plugins().key(name, cls.WHERE)  # unknown: a ConfigError with the closest name
        options, errors = cls.options_of(name), []
        if options is not None:
            try:
                raw[name] = options.model_validate(raw.get(name) or {})
            except ValidationError as e:
                errors += _relocated(e.errors(include_url=False), (name,))
                raw[name] = options()  # the checks that read the options still run (their problems are listed too)
        for key in [k for k in raw if k not in cls.model_fields and not (options is not None and k == name)]:
            value = raw.pop(key)
            if value is None and key in cls.plugins():
                continue  # `data.coco: null`: no section (an override switching the format removes the old one so)
            errors.append({"type": "extra_forbidden", "loc": (key,), "input": value})
        try:
            out = handler(raw)
        except ValidationError as e:
            errors = _relocated(e.errors(include_url=False), ()) + errors
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return out

    def _options(self):
        return (self.__pydantic_extra__ or {}).get(getattr(self, self.PLUGIN))


def _known(value: str, names: tuple[str, ...], what: str) -> str:
    if value.lower() not in names:
        raise ValueError(f"unknown {what} {value!r} (known: {', '.join(names)})")
    return value.lower()


# ---------------------------------------------------------------- data


class SamplerConfig(Strict):
    name: Literal["shuffle", "class_balanced"] = Field(
        "shuffle", description="training order: shuffle (each image once per epoch) or class_balanced (oversample images holding rare classes)"
    )
    power: float = Field(
        0.5, ge=0, description="class_balanced: image weight = max over its classes of (share of images holding the class)^-power; 1 = inverse class frequency, 0 = uniform"
    )
    num_samples: int | None = Field(None, gt=0, description="class_balanced: images drawn per epoch, all processes together; default = dataset size")


class DataConfig(WithPluginOptions):
    PLUGIN: ClassVar[str] = "format"
    WHERE: ClassVar[str] = "data.format"

    format: str = Field(
        "coco", description="dataset layout: coco, labelmap (image + label PNG folders), polygons (per-image polygon JSON, hand-bone layout); classification: imagefolder, csv or maskstatus; its own options are `data.<format>.*` (another format's section is refused)"
    )
    root: str = Field(".", description="data root; file names and split files are relative to it")
    train: str | None = Field(
        None, description="train split: COCO JSON (coco), list of image stems (labelmap, null = all images), list of ID folders / images or a folder (polygons), a folder (imagefolder, maskstatus) or a CSV (csv)"
    )
    val: str | None = Field(None, description="validation split, same form as train (leave null and set data.fold to validate on a fold of train)")
    test: str | None = Field(None, description="test split (no labels needed), same form as train")
    fold: int | None = Field(
        None, ge=0, description="validate on this fold of data.train and train on the others (folds from data.folds, else made by the k-fold splitter, kfold.*)"
    )
    folds: str | None = Field(None, description="folds.csv written by `seglab data split` or `seglab kfold` (sample_id, group, fold); used with data.fold")
    extra_train: list[str] = Field(
        default_factory=list, description="extra labelled sets added to train, e.g. `seglab pseudo` output: COCO JSON (segmentation) or CSV path,label (classification)"
    )
    classes: list[str] | None = Field(None, description="training class names, index = position; default Background + categories in JSON order (coco), class folders (imagefolder)")
    remap: dict[str, str] = Field(
        default_factory=dict, description="merge classes after mapping: {UNKNOWN: Background} or {UNKNOWN: ignore}"
    )
    corrections: str | None = Field(
        None, description="label corrections (YAML or CSV, relative to root): relabel/drop annotations, drop images, set classification labels or mask-status fields, applied at load time to train and val"
    )
    paint_order: Literal["area_desc", "annotation_order", "class_index"] = Field(
        "area_desc", description="overlapping annotations: which one owns a pixel (area_desc = small objects on top)"
    )
    ignore_index: int = Field(255, ge=0, description="label value excluded from loss and metric")
    image_size: tuple[int, int] | None = Field(None, description="resize images and masks to [height, width]; null = keep (classification needs one size)")
    allow_outside_root: bool = Field(
        False, description="read data-file names that are absolute or climb out with `..` (refused by default); outputs always stay under --out"
    )
    cache_dir: str | None = Field(None, description="where rasterised masks are cached; default ~/.cache/seglab ($SEGLAB_CACHE)")
    cache_images: bool = Field(
        True, description="with image_size: cache decoded images and masks at that size (raw, H*W*3 bytes each): ~4x faster loading"
    )
    batch_size: int = Field(8, gt=0, description="training batch size per device")
    val_batch_size: int | None = Field(None, gt=0, description="evaluation batch size; default = batch_size")
    num_workers: Union[int, Literal["auto"]] = Field("auto", description="DataLoader workers; auto = min(CPU count, 8)")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="how training images are drawn")

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and min(v) <= 0:
            raise ValueError("image_size must be two positive integers [height, width]")
        return v

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v):
        if isinstance(v, int) and v < 0:
            raise ValueError("num_workers must be >= 0 or 'auto'")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.fold is not None and self.val is not None:
            raise ValueError("give data.val or data.fold (a fold of data.train as validation), not both")
        if self.folds is not None and self.fold is None:
            raise ValueError("data.folds needs data.fold (which fold is the validation split)")
        return self

    @classmethod
    def plugins(cls):
        from seglab.data.sources.registry import SOURCES

        return SOURCES

    @property
    def format_options(self):
        """The configured format's own section (`data.<format>`), or None when it declares none."""
        return self._options()

    def split_path(self, split: str) -> Path | None:
        value = getattr(self, split)
        if value is None:
            return None
        return self.resolve(value)

    def resolve(self, value: str) -> Path:
        """A path from the config: absolute, or relative to data.root."""
        path = Path(value)
        return path if path.is_absolute() else Path(self.root) / path

    def workers(self) -> int:
        if self.num_workers == "auto":
            return min(os.cpu_count() or 1, 8)
        return self.num_workers


class TransformSpec(Checked):
    """One albumentations transform: its class name plus its keyword arguments."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="albumentations class name, e.g. HorizontalFlip")


class BatchAugmentSpec(Checked):
    """One batch-level augmentation (seglab.data.batch_augment): its name, probability and parameters."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="batch augmentation: cutmix or copy_paste")
    p: float = Field(0.5, ge=0, le=1, description="probability that an image of the batch is augmented")


class AugmentConfig(Strict):
    train: list[TransformSpec] = Field(
        default_factory=lambda: [TransformSpec(name="HorizontalFlip", p=0.5)],
        description="albumentations transforms applied to training images (and masks), in order",
    )
    eval: list[TransformSpec] = Field(default_factory=list, description="extra transforms for validation/test (rare)")
    batch: list[BatchAugmentSpec] = Field(
        default_factory=list, description="segmentation: batch-level augmentations on the device before the forward, in order: [{name: cutmix or copy_paste, p, params...}]"
    )
    mean: tuple[float, float, float] = Field((0.485, 0.456, 0.406), description="normalisation mean (0-1 scale), applied on the device; left out of the config: the pretrained encoder's own (timm/smp/torchvision), ImageNet's for a random or local-file encoder")
    std: tuple[float, float, float] = Field((0.229, 0.224, 0.225), description="normalisation std (0-1 scale); left out: the pretrained encoder's own, like mean")


# ---------------------------------------------------------------- model, loss, optimiser


class WeightsRecord(Strict):
    """Where the encoder weights of a run came from, written by seglab when training starts."""

    value: str = Field(description="model.encoder_weights as the config gave it")
    tag: str | None = Field(None, description="the library's pretrained tag (null for a local file)")
    source: str = Field("", description="the hub file or local path the weights came from")
    file: str = Field("", description="the local file that was read")
    sha256: str = Field("", description="checksum of that file")


class ModelConfig(Strict):
    arch: str = Field("Unet", description="model name from `seglab models` (smp architectures, classic FCN/DeepLab...); classification: classifier")
    encoder: str = Field("resnet34", description="encoder: any smp name or tu-<timm name>; classification: any timm model")
    in_channels: int = Field(3, gt=0, description="input channels")
    weights: str | None = Field(None, description="local state dict / checkpoint for the whole model")
    encoder_weights: str | None = Field(None, description="encoder start: imagenet (or another tag of the encoder's library, e.g. a timm tag), read from the HF/torch hub cache and downloaded when online; or a local state-dict file (torchvision/timm keys); null = random")
    encoder_weights_resolved: WeightsRecord | None = Field(None, description="written by seglab when training starts: the encoder weights' tag, source, file and sha256; a repeated run refuses a different file")
    params: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the model builder")


class LossSpec(Checked):
    """One term of the loss: `{name: focal, weight: 0.5, gamma: 2}`; extra keys are the loss's params."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="loss name: ce, focal, dice, jaccard, lovasz, bce, bce_dice, boundary_ce, ohem_ce")
    weight: float = Field(1.0, description="multiplier of this term in the summed loss; must be > 0")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ParamGroupSpec(Strict):
    parts: list[str] = Field(["rest"], min_length=1, description="model parts in this group (encoder, neck, decoder, head), or `rest` = every trainable parameter no other group names")
    lr: float | None = Field(None, gt=0, description="learning rate of this group; null = optim.lr")
    weight_decay: float | None = Field(None, ge=0, description="weight decay of this group; null = optim.weight_decay")


class LookaheadConfig(Strict):
    k: int = Field(6, ge=1, description="Lookahead: fast steps between two slow-weight updates")
    alpha: float = Field(0.5, gt=0, le=1, description="Lookahead: fraction of the way the slow weights move towards the fast ones")


class OptimConfig(Strict):
    name: str = Field("adamw", description="optimiser: sgd, adam, adamw, radam or adamp")
    lr: float = Field(1e-3, gt=0, description="base learning rate (the peak, after warmup)")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (decoupled for adamw/adamp, L2 for the others)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd, adamp)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam-family betas")
    eps: float = Field(1e-8, gt=0, description="Adam-family epsilon")
    encoder_lr: float | None = Field(None, gt=0, description="shortcut for param_groups [{parts: [encoder], lr: encoder_lr}, {parts: [rest]}]")
    param_groups: list[ParamGroupSpec] = Field([], description="per-part groups; every trainable parameter must be in exactly one; empty = one group")
    no_weight_decay_on_norm_and_bias: bool = Field(False, description="no weight decay on biases and normalisation weights (every 1-D parameter)")
    freeze: list[str] = Field([], description="model parts to freeze: no gradients, their norm layers kept in eval mode")
    lookahead: LookaheadConfig | None = Field(None, description="wrap the optimiser in Lookahead (timm); null = off")
    fused: Literal["auto"] | bool = Field("auto", description="fused optimiser kernels; auto = when every parameter is on CUDA and the optimiser has one")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value before each step; null = off")

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        return _known(value, OPTIMIZER_NAMES, "optimizer")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"betas must lie in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "OptimConfig":
        if self.encoder_lr is not None and self.param_groups:
            raise ValueError("give optim.encoder_lr or optim.param_groups, not both")
        if self.nesterov and self.name == "sgd" and self.momentum == 0:
            raise ValueError("optim.nesterov needs optim.momentum > 0")
        return self


class ScheduleConfig(Strict):
    name: str = Field("cosine", description="LR schedule: none, cosine, cosine_restarts, poly, step, multistep, plateau or onecycle")
    warmup_epochs: float = Field(0, ge=0, description="linear warmup length in epochs, applied per optimiser step; 0 = none")
    warmup_start_factor: float = Field(0.01, gt=0, le=1, description="warmup starts at this fraction of each group's lr (onecycle: of its peak)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="floor of cosine, cosine_restarts, poly and plateau as a fraction of each group's lr")
    power: float = Field(0.9, gt=0, description="poly: exponent")
    step_size_epochs: float = Field(10, gt=0, description="step: multiply the lr by gamma every this many epochs")
    milestones_epochs: list[float] = Field([], description="multistep: epochs (from the start, warmup included) at which the lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0, le=1, description="step, multistep: lr multiplier at each drop")
    restart_epochs: float = Field(10, gt=0, description="cosine_restarts: length of the first cycle in epochs")
    restart_mult: int = Field(1, ge=1, description="cosine_restarts: each cycle is this many times longer than the previous")
    plateau_patience: int = Field(5, ge=0, description="plateau: validations without improvement before the lr drops")
    plateau_factor: float = Field(0.1, gt=0, lt=1, description="plateau: lr multiplier at each drop")
    plateau_mode: Literal["max", "min"] = Field("max", description="plateau: whether the monitored metric should rise (max) or fall (min)")
    max_lr_factor: float = Field(1.0, gt=0, description="onecycle: peak lr = each group's lr x this")

    @field_validator("name")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        return _known(value, SCHEDULE_NAMES, "schedule")

    @field_validator("milestones_epochs")
    @classmethod
    def _sorted(cls, value: list[float]) -> list[float]:
        return sorted(value)

    @model_validator(mode="after")
    def _consistent(self) -> "ScheduleConfig":
        if self.name == "multistep" and not self.milestones_epochs:
            raise ValueError("schedule.name=multistep needs schedule.milestones_epochs")
        if self.name == "plateau" and self.warmup_epochs:
            raise ValueError("schedule.warmup_epochs is not supported with plateau (it steps once per validation); use cosine or poly")
        return self


class AveragingConfig(Strict):
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of the weights with this decay per optimiser step (e.g. 0.999); null = off")
    swa: bool = Field(False, description="stochastic weight averaging over the last epochs (BatchNorm statistics recomputed at the end)")
    swa_start_epoch: float = Field(0.75, ge=0, description="SWA starts at this 0-based epoch; a value below 1 is a fraction of max_epochs")
    swa_lr: float | None = Field(None, gt=0, description="constant learning rate during SWA (required when swa is on)")
    swa_anneal_epochs: int = Field(2, ge=0, description="epochs over which the lr is annealed to swa_lr when SWA starts")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop after this many validations without improvement; null = off")
    early_stopping_min_delta: float = Field(0.0, ge=0, description="smallest change of the monitored metric that counts as an improvement")

    @model_validator(mode="after")
    def _consistent(self) -> "AveragingConfig":
        if self.swa and self.swa_lr is None:
            raise ValueError("averaging.swa needs averaging.swa_lr")
        if self.swa and self.ema_decay is not None:
            raise ValueError("choose averaging.ema_decay or averaging.swa, not both: each replaces the final weights")
        if self.swa and self.early_stopping_patience is not None:
            # Lightning moves the SWA average into the model only at the planned last epoch.
            raise ValueError("averaging.swa cannot be combined with early stopping: a stopped run would keep no SWA weights")
        return self


# ---------------------------------------------------------------- running, evaluating, predicting


class TrainerConfig(Strict):
    max_epochs: int = Field(20, gt=0, description="training epochs")
    precision: str = Field("32", description="32, bf16, 16 (mixed) or any Lightning precision string")
    accumulate_grad_batches: int = Field(1, gt=0, description="gradient accumulation steps")
    accelerator: str = Field("auto", description="cpu, gpu or auto")
    devices: Union[int, str] = Field(1, description="devices per node (int or 'auto')")
    num_nodes: int = Field(1, gt=0, description="nodes for multi-node DDP")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp, ...")
    val_every_n_epochs: int = Field(1, gt=0, description="validate every N epochs")
    log_every_n_steps: int = Field(10, gt=0, description="log training scalars, and check the losses are finite (one read-back from the GPU), every N steps")
    deterministic: bool = Field(False, description="deterministic algorithms (slower; for exact reproducibility)")
    limit_train_batches: Union[int, float] = Field(1.0, description="fraction or count of training batches per epoch (quick checks)")
    limit_val_batches: Union[int, float] = Field(1.0, description="fraction or count of validation batches")
    channels_last: bool = Field(False, description="channels_last memory format (faster with AMP on GPUs)")
    compile: Union[bool, str] = Field(False, description="torch.compile the model: false, true or a mode name")
    progress_bar: bool = Field(True, description="show a progress bar")
    checkpoint_every_n_steps: int | None = Field(None, gt=0, description="also save last.ckpt every N steps (mid-epoch resume)")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, v):
        # YAML reads `precision: 16` as a number; Lightning's names are strings.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("limit_train_batches", "limit_val_batches")
    @classmethod
    def _limit(cls, v, info):
        # Lightning reads an int as a count and a float as a fraction; 0 training batches trains nothing.
        low = 1 if info.field_name == "limit_train_batches" else 0
        if isinstance(v, int) and v < low:
            raise ValueError(f"a batch count must be >= {low}")
        if isinstance(v, float) and not (0 < v <= 1 if low else 0 <= v <= 1):
            raise ValueError("a fraction must be in " + ("(0, 1]" if low else "[0, 1]") + " (give an int for a batch count)")
        return v


class EvalConfig(Strict):
    monitor: str = Field("mIoU", description="validation metric that picks the best checkpoint; default by task: mIoU, dice or macro_f1")
    mode: Literal["max", "min"] = Field("max", description="whether the monitored metric should go up or down")


class TTAConfig(Strict):
    flips: list[Literal["h", "v", "hv"]] = Field(
        default_factory=list, description="test-time augmentation in evaluate/predict/ensemble/pseudo: flipped views added to the plain one (h, v, hv); [] = none"
    )
    scales: list[float] = Field(
        default_factory=lambda: [1.0], description="TTA: input scales, each with every flip (e.g. [0.75, 1.0, 1.25]); segmentation outputs are resized back"
    )

    @field_validator("scales")
    @classmethod
    def _scales(cls, v):
        if not v or any(s <= 0 for s in v):
            raise ValueError("tta.scales must be a non-empty list of positive numbers")
        return v

    @field_validator("flips")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"tta.flips has a repeated flip: {v}")
        return v

    def views(self) -> list[tuple[float, str | None]]:
        """(scale, flip or None) for every view, the plain view of each scale first."""
        return [(s, f) for s in self.scales for f in [None, *self.flips]]

    @property
    def enabled(self) -> bool:
        return len(self.views()) > 1 or self.scales[0] != 1.0


class KFoldConfig(Strict):
    folds: int = Field(5, ge=2, description="number of folds (`seglab kfold --folds` and `seglab data split --folds` override)")
    strategy: Literal["auto", "random", "stratified", "group", "stratified_group"] = Field(
        "auto", description="split: auto = stratified_group when samples have groups, else stratified (on the task's classes, or on kfold.stratify columns)"
    )
    group_regex: str | None = Field(
        None, description="group key: regex on the sample id; group = first capture group, e.g. '^(ID\\d+)/'; default: the data's own groups (ID folder, person, CSV group column)"
    )
    group_csv: str | None = Field(None, description="group key from a CSV (relative to data.root) with an id and a group column")
    group_csv_id: str = Field("file_name", description="group_csv: column holding the sample id (file_name, or its stem)")
    group_column: str | None = Field(None, description="group_csv: column holding the group")
    metadata: str | None = Field(None, description="CSV or XLSX table with one row per group (e.g. hand-bone meta_data.xlsx), relative to data.root; for kfold.stratify")
    metadata_id_column: str = Field("ID", description="metadata: column holding the group id (ID001 also matches 1)")
    stratify: list[str] = Field(default_factory=list, description="metadata columns to stratify on (numeric ones binned), e.g. [sex, age]; [] = the task's classes")
    bins: int = Field(3, ge=2, description="quantile bins for numeric stratification columns")

    @field_validator("group_regex")
    @classmethod
    def _regex(cls, v):
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.group_csv and not self.group_column:
            raise ValueError("kfold.group_csv needs kfold.group_column")
        if self.group_csv and self.group_regex:
            raise ValueError("give kfold.group_regex or kfold.group_csv, not both")
        if self.stratify and not self.metadata:
            raise ValueError("kfold.stratify needs kfold.metadata (a table with one row per group)")
        return self


class LoggingConfig(Strict):
    loggers: list[Literal["tensorboard", "csv", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"], description="experiment loggers (none needs network)"
    )
    viz_every_n_epochs: int = Field(1, ge=0, description="validation panels every N validations (0 = off)")
    viz_samples: int = Field(4, ge=0, description="fixed validation images drawn each time")
    viz_worst_k: int = Field(3, ge=0, description="worst images per class drawn each time")
    tags: dict[str, str] = Field(
        default_factory=dict, description="tags the tracking loggers (MLflow, W&B) attach to the run, e.g. {member: jane}; k-fold and tune add their own"
    )


class SubmissionConfig(Strict):
    format: str = Field("coco_csv", description="submission writer (`seglab predict --format`); default by task: coco_csv, rle or the data's own (maskstatus info.csv, id_label)")
    size: tuple[int, int] = Field((256, 256), description="coco_csv: [height, width] the class map is resized to (nearest)")
    classes: dict[str, list[str]] | None = Field(
        None, description="merge map from training classes to submission classes, e.g. {UNKNOWN: [UNKNOWN_a, UNKNOWN_b]}; unnamed classes map to themselves; probabilities are merged before the decision, validation also reports submission_* metrics"
    )


class PostprocessConfig(Strict):
    threshold: Union[float, dict[str, float]] = Field(
        0.5, description="multilabel: probability above which a pixel is in a class; one value or {class: value} (others 0.5); RUN/thresholds.json from tune-thresholds takes precedence"
    )
    opening: int = Field(0, ge=0, description="morphological opening per class with a KxK ellipse (pixels; 0 = off)")
    closing: int = Field(0, ge=0, description="morphological closing per class with a KxK ellipse (pixels; 0 = off)")
    fill_holes: bool = Field(False, description="fill holes inside each class's mask")
    largest_component: bool = Field(False, description="keep only the largest connected component of each class")
    classes: list[str] | None = Field(None, description="classes the morphology applies to; null = all (never Background)")

    @field_validator("threshold")
    @classmethod
    def _probabilities(cls, v):
        values = v.values() if isinstance(v, dict) else [v]
        if any(not 0 <= t < 1 for t in values):
            raise ValueError("thresholds are probabilities in [0, 1)")
        return v

    @property
    def morphology(self) -> bool:
        return bool(self.opening or self.closing or self.fill_holes or self.largest_component)


class SlidingWindowConfig(Strict):
    enabled: bool = Field(False, description="segmentation: predict/evaluate tile by tile at the dataset's resolution (for images too large to run whole)")
    tile: tuple[int, int] = Field((1024, 1024), description="tile [height, width] in pixels")
    overlap: float = Field(0.25, ge=0, lt=1, description="fraction of a tile shared with its neighbour")
    blend: Literal["gaussian", "mean"] = Field("gaussian", description="how overlapping tiles are averaged: Gaussian weights (centre counts most) or plain mean")
    sigma: float = Field(0.125, gt=0, description="gaussian blend: standard deviation as a fraction of the tile size")
    tiles_per_batch: int = Field(4, gt=0, description="tiles run through the model together")
    in_validation: bool = Field(False, description="also use it for validation during training")

    @field_validator("tile")
    @classmethod
    def _positive(cls, v):
        if min(v) <= 0:
            raise ValueError("tile must be two positive integers [height, width]")
        return v


# ---------------------------------------------------------------- the whole config


class Config(WithPluginOptions):
    PLUGIN: ClassVar[str] = "task"
    WHERE: ClassVar[str] = "task"

    task: str = Field(
        "multiclass", description="multiclass (softmax, one class per pixel), multilabel (sigmoid, C x H x W masks, classes overlap) or classification (one class per image); its own options are `<task>.*` (another task's section is refused)"
    )
    name: str | None = Field(None, description="experiment name (free text)")
    seed: int = Field(42, description="random seed for weights, data order and augmentation")
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: list[LossSpec] = Field(
        default_factory=lambda: [LossSpec(name="ce")], description="loss terms [{name, weight, params...}], summed by weight; default by task: ce, bce_dice"
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    averaging: AveragingConfig = Field(default_factory=AveragingConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tta: TTAConfig = Field(default_factory=TTAConfig)
    kfold: KFoldConfig = Field(default_factory=KFoldConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    submission: SubmissionConfig = Field(default_factory=SubmissionConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    sliding_window: SlidingWindowConfig = Field(default_factory=SlidingWindowConfig)

    @classmethod
    def plugins(cls):
        from seglab.task import TASKS

        return TASKS

    @property
    def task_options(self):
        """The configured task's own section (`<task>:`), or None when it declares none."""
        return self._options()

    @model_validator(mode="after")
    def _task_defaults_and_checks(self):
        # Tasks are torch-free at import: each declares its defaults and the checks that need
        # no data; everything else is the preflight's.
        from seglab.task import get_task

        task = get_task(self.task)
        for dotted, value in task.defaults(self).items():
            set_default(self, dotted, value)
        problems = task.config_problems(self)
        if self.data.fold is not None and self.data.folds is None and self.data.fold >= self.kfold.folds:
            problems.append(f"data.fold: {self.data.fold} is out of range for kfold.folds {self.kfold.folds}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def set_default(cfg: BaseModel, dotted: str, value: Any) -> None:
    """Set `a.b.c` to `value` unless the config gave it; the field stays 'not set by the user'."""
    *path, last = dotted.split(".")
    section = cfg
    for part in path:
        section = getattr(section, part)
    if last in section.model_fields_set:
        return
    value = TypeAdapter(type(section).model_fields[last].annotation).validate_python(value)
    # Not setattr: with validate_assignment it would run this validator again.
    object.__setattr__(section, last, value)


SECTION_TYPES = (LossSpec, TransformSpec, BatchAugmentSpec)  # lists of these are values, not sections, in the reference


def plugin_sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """{plug-in name: its options model} of a section with plug-ins (every registered one
    that declares options), {} for any other section."""
    if not (isinstance(model, type) and issubclass(model, WithPluginOptions)):
        return {}
    return {name: model.options_of(name) for name in model.plugins() if model.options_of(name) is not None}
