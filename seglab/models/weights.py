"""Loading local weight files: never arbitrary code, always a report of what matched."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from seglab.errors import CheckpointError

log = logging.getLogger("seglab")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a raw state dict, a Lightning checkpoint, or {"model": ...}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: cannot load as a weights-only state dict ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    return obj


def _strip_prefix(state_dict: dict, own_keys: set[str]) -> dict:
    """Drop a wrapper prefix (`model.`, `module.`, ...) when that makes the keys match."""
    if set(state_dict) & own_keys:
        return state_dict
    for prefix in ("model.", "module.", "model.module.", "net."):
        stripped = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if set(stripped) & own_keys:
            return stripped
    return state_dict


def adapt_input_convs(state_dict: dict, own: dict) -> dict:
    """RGB first-conv weights for a model with another number of input channels, as smp and
    timm adapt them when they load pretrained weights (timm's adapt_input_conv)."""
    from timm.models import adapt_input_conv

    adapted = dict(state_dict)
    for key, value in state_dict.items():
        target = own.get(key)
        if (target is not None and value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3 and target.shape[1] != 3
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            adapted[key] = adapt_input_conv(target.shape[1], value)
    return adapted


def changed_parts(model: nn.Module, load) -> list[str]:
    """Run `load()` and return the model parts whose parameters it wrote (every in-place copy
    bumps a tensor's version counter), in `parts()` order."""
    parts = model.parts() if hasattr(model, "parts") else {"model": model}

    def versions():
        return {name: [(id(t), t._version) for t in (*m.parameters(), *m.buffers())] for name, m in parts.items()}

    before = versions()
    load()
    after = versions()
    return [name for name in parts if before[name] != after[name]]


def load_matching(module: nn.Module, state_dict: dict, what: str, source: str = "") -> tuple[list[str], list[str]]:
    """Load every key that exists; a shape mismatch is an error, missing/unexpected keys are reported."""
    own = module.state_dict()
    state_dict = adapt_input_convs(_strip_prefix(state_dict, set(own)), own)
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{source or what}: {key}: shape {tuple(value.shape)} in the file, {tuple(own[key].shape)} in the {what}"
            )
    if not set(state_dict) & set(own):
        raise CheckpointError(f"{source or what}: no key of the file matches the {what} (e.g. file {next(iter(state_dict), '-')!r}, {what} {next(iter(own), '-')!r})")
    # From the key sets, not load_state_dict's return value: some encoders (smp's
    # ResNet) override load_state_dict and return nothing.
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    module.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    log.info(
        "loaded %s weights%s: %d tensors, %d missing, %d unexpected%s",
        what, f" from {source}" if source else "", len(state_dict) - len(unexpected), len(missing), len(unexpected),
        f" (missing e.g. {missing[:3]}, unexpected e.g. {unexpected[:3]})" if missing or unexpected else "",
    )
    return missing, unexpected


def load_model_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    return load_matching(model, read_state_dict(path), "model", str(path))


def load_encoder_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    state_dict = read_state_dict(path)
    if hasattr(model, "load_encoder_state_dict"):
        return model.load_encoder_state_dict(state_dict)
    return load_matching(model.parts()["encoder"], state_dict, "encoder", str(path))
