"""The experiment config: one typed schema, loaded from YAML, overridable from the CLI.

The schema is the single source of truth for every knob: each field has a default
and a one-line description, and the README's config reference is generated from it
(`python -m seglab.config --markdown`). Sections owned by a concern (loss, optim,
schedule, averaging) are defined in that concern's module and composed here.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seglab.averaging import AveragingConfig
from seglab.classification.config import ClassificationConfig, ClassificationDataConfig
from seglab.errors import ConfigError
from seglab.losses import LossSpec, validate_loss_specs
from seglab.optim import OptimConfig, ScheduleConfig
from seglab.postprocess import PostprocessConfig
from seglab.sliding import SlidingWindowConfig
from seglab.splits import KFoldConfig
from seglab.tta import TTAConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TransformSpec(BaseModel):
    """One albumentations transform: its class name plus its keyword arguments."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="albumentations class name, e.g. HorizontalFlip")


class BatchAugmentSpec(BaseModel):
    """One batch-level augmentation (seglab.data.batch_augment): its name, probability and parameters."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="batch augmentation: cutmix or copy_paste")
    p: float = Field(0.5, ge=0, le=1, description="probability that an image of the batch is augmented")


class SamplerConfig(Strict):
    name: Literal["shuffle", "class_balanced"] = Field(
        "shuffle", description="training order: shuffle (each image once per epoch) or class_balanced (oversample images holding rare classes)"
    )
    power: float = Field(
        0.5, ge=0, description="class_balanced: image weight = max over its classes of (share of images holding the class)^-power; 0 = uniform"
    )
    num_samples: int | None = Field(None, gt=0, description="class_balanced: images drawn per epoch, all processes together; default = dataset size")


class DataConfig(Strict):
    format: Literal["coco", "labelmap", "polygons", "imagefolder", "csv", "maskstatus"] = Field(
        "coco", description="dataset layout: COCO JSON, image folder + label-map PNG folder, per-image polygon JSON (hand-bone layout); classification: imagefolder, csv or maskstatus"
    )
    root: str = Field(".", description="data root; COCO file_name and the split files are relative to it")
    train: str | None = Field(
        None, description="train split: COCO JSON (coco), list of image stems (labelmap, null = all images), or list of ID folders / images or a folder (polygons)"
    )
    val: str | None = Field(None, description="validation split, same form as train")
    test: str | None = Field(None, description="test split (no labels needed), same form as train")
    extra_train: list[str] = Field(
        default_factory=list, description="extra labelled COCO JSONs added to train (e.g. `seglab pseudo` output); categories matched by class name, 'ignore' = ignore_index"
    )
    classes: list[str] | None = Field(None, description="training class names, index = position; default Background + categories in JSON order")
    category_map: dict[int, Union[int, Literal["ignore"]]] | None = Field(
        None, description="COCO category id -> class index (or 'ignore'); default: by class name, else JSON order from 1"
    )
    remap: dict[str, str] = Field(
        default_factory=dict, description="merge classes after mapping: {UNKNOWN: Background} or {UNKNOWN: ignore}"
    )
    paint_order: Literal["area_desc", "annotation_order", "class_index"] = Field(
        "area_desc", description="overlapping annotations: which one owns a pixel (area_desc = small objects on top)"
    )
    ignore_index: int = Field(255, ge=0, description="label value excluded from loss and metric")
    image_size: tuple[int, int] | None = Field(None, description="resize images and masks to [height, width]; null = keep")
    cache_dir: str | None = Field(None, description="where rasterised masks are cached; default ~/.cache/seglab ($SEGLAB_CACHE)")
    cache_images: bool = Field(
        True, description="with image_size: cache decoded images and masks at that size (raw, H*W*3 bytes each): ~4x faster loading"
    )
    batch_size: int = Field(8, gt=0, description="training batch size per device")
    val_batch_size: int | None = Field(None, gt=0, description="evaluation batch size; default = batch_size")
    num_workers: Union[int, Literal["auto"]] = Field("auto", description="DataLoader workers; auto = min(CPU count, 8)")
    image_dir: str = Field("images", description="labelmap / polygons: folder of images under root (polygons: DCM)")
    json_dir: str = Field("outputs_json", description="polygons: folder of per-image label JSON under root, mirroring image_dir")
    mask_dir: str = Field("masks", description="labelmap: folder of label PNGs under root, matched by file stem")
    mask_ignore_value: int | None = Field(255, description="labelmap: PNG value meaning void/ignore")
    mask_value_map: dict[int, Union[int, Literal["ignore"]]] | None = Field(
        None, description="labelmap: PNG value -> class index (e.g. {0: 1, 255: 0}); default identity"
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="how training images are drawn")
    classification: ClassificationDataConfig = Field(default_factory=ClassificationDataConfig)

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

    def split_path(self, split: str) -> Path | None:
        value = getattr(self, split)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() else Path(self.root) / path

    def workers(self) -> int:
        if self.num_workers == "auto":
            return min(os.cpu_count() or 1, 8)
        return self.num_workers


class AugmentConfig(Strict):
    train: list[TransformSpec] = Field(
        default_factory=lambda: [TransformSpec(name="HorizontalFlip", p=0.5)],
        description="albumentations transforms applied to training images and masks, in order",
    )
    eval: list[TransformSpec] = Field(default_factory=list, description="extra transforms for validation/test (rare)")
    batch: list[BatchAugmentSpec] = Field(
        default_factory=list, description="batch-level augmentations on the device before the forward, in order: [{name: cutmix or copy_paste, p, params...}]"
    )
    mean: tuple[float, float, float] = Field((0.485, 0.456, 0.406), description="normalisation mean (0-1 scale), applied on the device")
    std: tuple[float, float, float] = Field((0.229, 0.224, 0.225), description="normalisation std (0-1 scale)")


class ModelConfig(Strict):
    arch: str = Field("Unet", description="model name from `seglab models` (smp architectures, classic FCN/DeepLab...)")
    encoder: str = Field("resnet34", description="encoder for smp architectures: any smp name or tu-<timm name>")
    in_channels: int = Field(3, gt=0, description="input channels")
    weights: str | None = Field(None, description="local state dict / checkpoint for the whole model")
    encoder_weights: str | None = Field(None, description="local state dict for the encoder only (torchvision/timm keys)")
    params: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the model builder")


class TrainerConfig(Strict):
    max_epochs: int = Field(20, gt=0, description="training epochs")
    precision: str = Field("32", description="32, bf16, 16 (mixed) or any Lightning precision string")
    accumulate_grad_batches: int = Field(1, gt=0, description="gradient accumulation steps")
    accelerator: str = Field("auto", description="cpu, gpu or auto")
    devices: Union[int, str] = Field(1, description="devices per node (int or 'auto')")
    num_nodes: int = Field(1, gt=0, description="nodes for multi-node DDP")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp, ...")
    val_every_n_epochs: int = Field(1, gt=0, description="validate every N epochs")
    log_every_n_steps: int = Field(10, gt=0, description="log training scalars every N steps")
    deterministic: bool = Field(False, description="deterministic algorithms (slower; for exact reproducibility)")
    limit_train_batches: Union[int, float] = Field(1.0, description="fraction or count of training batches per epoch (quick checks)")
    limit_val_batches: Union[int, float] = Field(1.0, description="fraction or count of validation batches")
    channels_last: bool = Field(False, description="channels_last memory format (faster with AMP on GPUs)")
    compile: Union[bool, str] = Field(False, description="torch.compile the model: false, true or a mode name")
    progress_bar: bool = Field(True, description="show a progress bar")
    checkpoint_every_n_steps: int | None = Field(None, gt=0, description="also save last.ckpt every N steps (mid-epoch resume)")


class EvalConfig(Strict):
    monitor: str = Field("mIoU", description="validation metric that picks the best checkpoint (multilabel default: dice)")
    mode: Literal["max", "min"] = Field("max", description="whether the monitored metric should go up or down")


class LoggingConfig(Strict):
    loggers: list[Literal["tensorboard", "csv", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"], description="experiment loggers (none needs network)"
    )
    viz_every_n_epochs: int = Field(1, ge=0, description="validation panels every N validations (0 = off)")
    viz_samples: int = Field(4, ge=0, description="fixed validation images drawn each time")
    viz_worst_k: int = Field(3, ge=0, description="worst images per class drawn each time")


class SubmissionConfig(Strict):
    format: str = Field("coco_csv", description="submission writer: coco_csv or png")
    size: tuple[int, int] = Field((256, 256), description="coco_csv: [height, width] the class map is resized to (nearest)")


class Config(Strict):
    task: Literal["multiclass", "multilabel", "classification"] = Field(
        "multiclass", description="multiclass (softmax, one class per pixel), multilabel (sigmoid, C x H x W masks, classes overlap) or classification (one class per image)"
    )
    name: str | None = Field(None, description="experiment name (free text)")
    seed: int = Field(42, description="random seed for weights, data order and augmentation")
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: list[LossSpec] = Field(
        default_factory=lambda: [LossSpec(name="ce")], description="loss terms [{name, weight, params...}], summed by weight (multilabel default: bce_dice)"
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
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig)

    @model_validator(mode="after")
    def _check_parts(self):
        from seglab.classification.config import check_config

        # Task defaults first: they pick the losses and metric that apply (each is a no-op for the other tasks).
        check_config(self)
        _task_defaults(self)
        validate_loss_specs(self.loss, "multiclass" if self.task == "classification" else self.task)
        from seglab.data.transforms import validate_transform_specs

        validate_transform_specs(self.augment.train, "augment.train")
        validate_transform_specs(self.augment.eval, "augment.eval")
        from seglab.data.batch_augment import validate_batch_specs

        validate_batch_specs(self.augment.batch, "augment.batch")
        return self


def _task_defaults(cfg: Config) -> None:
    """Defaults that depend on the task, where the config left them unset; the monitor must be a metric of the task."""
    from seglab.tasks import TASKS

    if cfg.task not in TASKS:
        return
    task = TASKS.get(cfg.task)
    if cfg.task == "multilabel" and "loss" not in cfg.model_fields_set:
        cfg.loss = [LossSpec(name="bce_dice")]
    if "monitor" not in cfg.eval.model_fields_set and cfg.eval.monitor != task.default_monitor:
        cfg.eval.monitor = task.default_monitor
        cfg.eval.model_fields_set.discard("monitor")
    allowed = (*task.scalar_metrics, "loss")
    if cfg.eval.monitor not in allowed:
        raise ConfigError(f"eval.monitor: {cfg.eval.monitor!r} is not a {cfg.task} metric (use one of {', '.join(allowed)})")


# ---------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e.problem})") from None
    return key.split("."), value


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, path[: i + 1])]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[:-1])} is not a section")


def _list_index(node: list, part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {'.'.join(path)}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the schema section that `loc` (without its last item) points into."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = field.annotation
        if getattr(current, "__origin__", None) is not None or not isinstance(current, type):
            # Optional[Section] and friends: take the BaseModel argument if there is one.
            args = [a for a in getattr(current, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            current = args[0] if args else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(Config, loc), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{source}: {key}: unknown key{hint}")
        else:
            msg = e["msg"]
            if "input" in e and e["type"] not in ("missing",):
                msg += f" (got {e['input']!r})"
            lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def config_from_dict(raw: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key.path=value` overrides, validate."""
    raw = read_yaml(path)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value)
    return config_from_dict(raw, source=str(path))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- reference


def schema_reference(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf field, for the README table."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not LossSpec:
            rows.extend(schema_reference(ann, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        elif isinstance(default, list) and default and isinstance(default[0], BaseModel):
            default = [d.model_dump(mode="json") for d in default]
        rows.append((key, yaml.safe_dump(default, default_flow_style=True, width=10**6).strip().removesuffix("..."), field.description or ""))
    return rows


def markdown_reference() -> str:
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, default, desc in schema_reference():
        lines.append(f"| `{key}` | `{default.strip()}` | {desc} |")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def update_readme(path: str | Path) -> None:
    """Replace the README's config table (between the two markers) with the schema's."""
    path = Path(path)
    text = path.read_text()
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n{markdown_reference()}{README_END}{tail}")


if __name__ == "__main__":
    import sys

    if "--update-readme" in sys.argv:
        update_readme(sys.argv[-1])
    else:
        sys.stdout.write(markdown_reference())
