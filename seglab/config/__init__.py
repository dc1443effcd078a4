"""The experiment config: one typed schema (`schema.py`), read from YAML with
`key.path=value` overrides (`loading.py`); the README table comes from it (`reference.py`).
Importing it loads no part of the training stack."""

from seglab.config.loading import apply_override, config_from_dict, load_config, parse_override, read_yaml, to_yaml
from seglab.config.schema import (AugmentConfig, AveragingConfig, BatchAugmentSpec, Config, DataConfig, KFoldConfig,
                                  LossSpec, ModelConfig, OptimConfig, PostprocessConfig, ScheduleConfig,
                                  SlidingWindowConfig, TransformSpec, TTAConfig)

__all__ = [
    "Config", "DataConfig", "AugmentConfig", "ModelConfig", "LossSpec", "OptimConfig", "ScheduleConfig", "KFoldConfig",
    "TTAConfig", "PostprocessConfig", "SlidingWindowConfig", "TransformSpec", "BatchAugmentSpec", "AveragingConfig",
    "load_config", "config_from_dict", "read_yaml", "parse_override", "apply_override", "to_yaml",
]
