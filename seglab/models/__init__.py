"""Models: one registry (`MODELS`) for smp architectures and the classic course models."""

from __future__ import annotations

import inspect

from torch import nn

from seglab.errors import ConfigError
from seglab.models import smp_models  # noqa: F401  (registers the smp architectures)
from seglab.models.registry import MODELS
from seglab.models.weights import load_encoder_weights, load_model_weights

from seglab.models import classic  # noqa: F401  (registers FCN, DeconvNet, SegNet, DeepLab v1-v3)


def build_model(model_cfg, num_classes: int) -> nn.Module:
    builder = MODELS.get(model_cfg.arch, "model.arch")
    kwargs = dict(model_cfg.params)
    accepted = inspect.signature(builder).parameters
    if "encoder" in accepted:
        kwargs.setdefault("encoder", model_cfg.encoder)
    try:
        model = builder(num_classes=num_classes, in_channels=model_cfg.in_channels, **kwargs)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model: cannot build {model_cfg.arch!r} with encoder {model_cfg.encoder!r}: {first}") from None
    if model_cfg.encoder_weights:
        load_encoder_weights(model, model_cfg.encoder_weights)
    if model_cfg.weights:
        load_model_weights(model, model_cfg.weights)
    return model


def describe_models(num_classes: int = 12, encoder: str = "resnet34", width: float = 1.0) -> list[dict]:
    """Name, description, parts and parameter counts of every registered model.

    Each model is built (random weights) with `num_classes` outputs; smp
    architectures use `encoder`, classic ones `width`.
    """
    from seglab.config import ModelConfig

    rows = []
    for name in MODELS.names():
        doc = (inspect.getdoc(MODELS.get(name)) or "").splitlines()
        params = {} if "encoder" in inspect.signature(MODELS.get(name)).parameters else {"width": width}
        try:
            model = build_model(ModelConfig(arch=name, encoder=encoder, params=params), num_classes)
        except ConfigError as e:
            rows.append({"name": name, "doc": doc[0] if doc else "", "error": str(e)})
            continue
        parts = {part: sum(p.numel() for p in module.parameters()) for part, module in model.parts().items()}
        rows.append({"name": name, "doc": doc[0] if doc else "", "parts": parts,
                     "params": sum(p.numel() for p in model.parameters())})
        del model
    return rows


__all__ = ["MODELS", "build_model", "describe_models", "load_model_weights", "load_encoder_weights"]
