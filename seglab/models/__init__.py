"""Models: one registry (`MODELS`) for smp architectures and the classic course models."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from torch import nn

from seglab.errors import CheckpointError, ConfigError
from seglab.models import smp_models  # noqa: F401  (registers the smp architectures)
from seglab.models.pretrained import EncoderRef, encoder_ref, is_weights_path, load_weight_files, resolve_value
from seglab.models.registry import MODELS
from seglab.models.weights import load_encoder_weights, load_model_weights

from seglab.models import classic  # noqa: F401  (registers FCN, DeconvNet, SegNet, DeepLab v1-v3)


def model_encoder_ref(model_cfg) -> EncoderRef:
    """The encoder whose pretrained weights `model.encoder_weights: TAG` names: the classic
    models' torchvision VGG (`pretrained_encoder`), else the smp/timm `model.encoder`."""
    builder = MODELS.get(model_cfg.arch, "model.arch")
    named = getattr(builder, "pretrained_encoder", None)
    return encoder_ref(named or model_cfg.params.get("encoder", model_cfg.encoder))


def build_model(model_cfg, num_classes: int) -> nn.Module:
    """The model, with its encoder's pretrained weights and `model.weights` loaded; its
    `weights_origin` says which part starts from which file ({} = all random)."""
    builder = MODELS.get(model_cfg.arch, "model.arch")
    kwargs = dict(model_cfg.params)
    accepted = inspect.signature(builder).parameters
    if "encoder" in accepted:
        kwargs.setdefault("encoder", model_cfg.encoder)
    value = model_cfg.encoder_weights
    ref = model_encoder_ref(model_cfg) if value and not is_weights_path(value) else None
    weights = resolve_value(ref, value, model_cfg.encoder_weights_resolved)
    at_build = weights.spec is not None and weights.spec.ref.family == "timm" and "encoder" in accepted
    if at_build:  # a tu- encoder: timm loads its own pretrained file while building
        kwargs["encoder"] = "tu-" + weights.spec.timm_name
        kwargs["timm_pretrained"] = {"file": str(weights.path), "custom_load": weights.spec.timm_custom_load}
    try:
        model = builder(num_classes=num_classes, in_channels=model_cfg.in_channels, **kwargs)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if at_build:
            raise CheckpointError(f"model.encoder_weights: {weights.path}: timm cannot load it into {kwargs['encoder']} ({first}); "
                                  f"check the file with `seglab weights import FILE --encoder {weights.spec.ref.cli_name}`") from None
        raise ConfigError(f"model: cannot build {model_cfg.arch!r} with encoder {model_cfg.encoder!r}: {first}") from None
    return load_weight_files(model, weights, at_build, model_cfg.weights)


def describe_models(num_classes: int = 12, encoder: str = "resnet34", width: float = 1.0) -> Iterator[dict]:
    """Name, description, parts and parameter counts of every registered model, one at a
    time (building all of them takes tens of seconds: the caller can show each as it comes).

    Each model is built (random weights) with `num_classes` outputs; smp
    architectures use `encoder`, classic ones `width`.
    """
    from seglab.config import ModelConfig

    for name in MODELS.names():
        doc = (inspect.getdoc(MODELS.get(name)) or "").splitlines()
        params = {} if "encoder" in inspect.signature(MODELS.get(name)).parameters else {"width": width}
        try:
            model = build_model(ModelConfig(arch=name, encoder=encoder, params=params), num_classes)
        except ConfigError as e:
            yield {"name": name, "doc": doc[0] if doc else "", "error": str(e)}
            continue
        parts = {part: sum(p.numel() for p in module.parameters()) for part, module in model.parts().items()}
        yield {"name": name, "doc": doc[0] if doc else "", "parts": parts,
               "params": sum(p.numel() for p in model.parameters())}
        del model


__all__ = ["MODELS", "build_model", "model_encoder_ref", "describe_models", "load_model_weights", "load_encoder_weights"]
