"""Config sections of the classification task (`task: classification`).

Two sections, composed into the shared schema by seglab/config.py:
`data.classification` (how labels and splits are read from the data) and the
top-level `classification` (head, sampler, mixup, consistency training, TTA,
pseudo-labels). `check_config` applies the task's defaults and rejects settings
that only make sense for segmentation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seglab.errors import ConfigError

FORMATS = ("imagefolder", "csv", "maskstatus")
LOSSES = ("ce", "focal")
HEADS = ("linear", "arcface")
TTA = ("hflip", "vflip")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClassificationDataConfig(_Strict):
    age_bounds: tuple[int, int] = Field(
        (30, 60), description="maskstatus: age band edges [a, b]: age < a is band 0, a <= age < b band 1, age >= b band 2 (teams used 59 or 58 for b)"
    )
    n_splits: int = Field(5, ge=2, description="when data.val is null: folds of a StratifiedGroupKFold over the train split (groups = person / group column)")
    fold: int = Field(0, ge=0, description="when data.val is null: which fold is the validation split")
    path_column: str = Field("path", description="csv: column with the image path, relative to data.root")
    label_column: str = Field("label", description="csv: column with the class (a name from data.classes, or an index)")
    group_column: str | None = Field(None, description="csv: column naming each row's group (e.g. person id) for splits; null = every row its own group")
    sampler: Literal["none", "weighted"] = Field("none", description="training sampler: none (shuffle) or weighted (WeightedRandomSampler, 1/class count)")
    pseudo_labels: str | None = Field(None, description="CSV of path,label (from `seglab predict --format pseudo`) added to the training split; relative to data.root")

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.fold >= self.n_splits:
            raise ValueError(f"fold {self.fold} is out of range for n_splits {self.n_splits}")
        if not 0 < self.age_bounds[0] < self.age_bounds[1]:
            raise ValueError(f"age_bounds must be two increasing positive ages, got {list(self.age_bounds)}")
        return self


class UdaConfig(_Strict):
    weight: float = Field(0.0, ge=0, description="weight of the consistency loss on unlabelled images; 0 = off")
    unlabelled: str | None = Field(None, description="folder of unlabelled images (relative to data.root, searched recursively); null = the test split's images")
    batch_size: int | None = Field(None, gt=0, description="unlabelled images per step; null = data.batch_size")
    temperature: float = Field(0.4, gt=0, description="sharpening temperature of the weak view's prediction (the target)")
    threshold: float = Field(0.8, ge=0, lt=1, description="confidence mask: unlabelled images whose weak-view max probability is below this are left out")
    weak: list[dict] = Field(default_factory=list, description="albumentations transforms of the weak view ({name, params...}); [] = the clean image")
    strong: list[dict] = Field(
        default_factory=lambda: [
            {"name": "HorizontalFlip", "p": 0.5},
            {"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.05, "p": 0.8},
            {"name": "Affine", "scale": [0.85, 1.15], "translate_percent": [-0.1, 0.1], "rotate": [-15, 15], "p": 0.7},
            {"name": "CoarseDropout", "num_holes_range": [1, 3], "hole_height_range": [0.1, 0.25], "hole_width_range": [0.1, 0.25], "p": 0.5},
        ],
        description="albumentations transforms of the strong view",
    )


class ClassificationConfig(_Strict):
    head: Literal["linear", "arcface"] = Field("linear", description="classifier head: linear, or arcface (cosine logits with an additive angular margin while training)")
    arcface_scale: float = Field(30.0, gt=0, description="arcface: logit scale s (logits = s * cos)")
    arcface_margin: float = Field(0.5, ge=0, lt=1.5708, description="arcface: additive angular margin m in radians, added to the true class's angle while training")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="dropout on the pooled features before the head")
    mixup_alpha: float = Field(0.0, ge=0, description="mixup Beta(alpha, alpha) (timm Mixup); 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0, description="cutmix Beta(alpha, alpha) (timm Mixup); 0 = off")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed when mixup or cutmix is on")
    mix_switch_prob: float = Field(0.5, ge=0, le=1, description="probability of cutmix instead of mixup when both are on")
    uda: UdaConfig = Field(default_factory=UdaConfig)
    tta: list[Literal["hflip", "vflip"]] = Field(default_factory=list, description="test-time augmentation for evaluate/predict: probabilities averaged over the image and these flips")
    pseudo_threshold: float = Field(0.9, ge=0, le=1, description="predict --format pseudo: keep images whose top probability is at least this")

    @field_validator("tta")
    @classmethod
    def _unique(cls, v):
        return list(dict.fromkeys(v))


def check_config(cfg) -> None:
    """Task defaults and cross-section checks for `task: classification` (mutates cfg)."""
    if cfg.task != "classification":
        if cfg.data.format in FORMATS:
            raise ConfigError(f"data.format {cfg.data.format!r} is a classification layout; set task: classification")
        return
    if cfg.data.format not in FORMATS:
        raise ConfigError(f"data.format: task classification reads {', '.join(FORMATS)}, not {cfg.data.format!r}")
    if "arch" not in cfg.model.model_fields_set:
        cfg.model.arch = "classifier"
    from seglab.classification.models import CLASSIFIERS

    CLASSIFIERS.get(cfg.model.arch, "model.arch")
    for i, spec in enumerate(cfg.loss):
        if spec.name.lower() not in LOSSES:
            raise ConfigError(f"loss[{i}].name: {spec.name!r} is a segmentation loss; classification uses {', '.join(LOSSES)} "
                              "(ArcFace is a head: classification.head: arcface)")
    if "monitor" not in cfg.eval.model_fields_set:
        cfg.eval.monitor = "macro_f1"
    monitors = ("macro_f1", "accuracy", "mean_class_accuracy", "loss") + (
        ("mask_accuracy", "gender_accuracy", "age_accuracy") if cfg.data.format == "maskstatus" else ())
    if cfg.eval.monitor not in monitors:
        raise ConfigError(f"eval.monitor: {cfg.eval.monitor!r} is not a classification metric (use one of {', '.join(monitors)})")
    if "format" not in cfg.submission.model_fields_set:
        cfg.submission.format = "maskstatus" if cfg.data.format == "maskstatus" else "id_label"
    from seglab.classification.submission import WRITERS

    WRITERS.get(cfg.submission.format, "submission.format")
    if cfg.data.image_size is None:
        raise ConfigError("data.image_size: classification batches need one input size, e.g. [224, 224]")
    from seglab.config import TransformSpec
    from seglab.data.transforms import make_transform

    for where, specs in (("classification.uda.weak", cfg.classification.uda.weak), ("classification.uda.strong", cfg.classification.uda.strong)):
        for i, spec in enumerate(specs):
            if not isinstance(spec.get("name"), str):
                raise ConfigError(f"{where}[{i}]: each transform needs a name (an albumentations class)")
            make_transform(TransformSpec(**spec), f"{where}[{i}]")
