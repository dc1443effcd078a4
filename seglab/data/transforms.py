"""Augmentation pipelines from the config, through albumentations.

Normalisation is not here: images stay uint8 until they are on the device, where
the model wrapper normalises them (4x less to copy than float32).
"""

from __future__ import annotations

import inspect

import albumentations as A

from seglab.errors import ConfigError


def _transform_class(name: str, where: str):
    cls = getattr(A, name, None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        import difflib

        known = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: unknown albumentations transform {name!r}{hint}")
    return cls


def make_transform(spec, where: str):
    params = {k: v for k, v in (spec.model_extra or {}).items()}
    cls = _transform_class(spec.name, where)
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        for key in params:
            if key not in accepted:
                raise ConfigError(f"{where}.{key}: unknown parameter for {spec.name}")
    try:
        return cls(**params)
    except Exception as e:  # albumentations validates with pydantic and raises its own errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where} ({spec.name}): {first}") from None


def validate_transform_specs(specs, where: str) -> None:
    for i, spec in enumerate(specs):
        make_transform(spec, f"{where}[{i}]")


def build_transform(augment_cfg, image_size: tuple[int, int] | None, train: bool) -> A.Compose:
    ops = []
    if image_size is not None:
        # Masks resize with nearest neighbour (albumentations' default for masks).
        ops.append(A.Resize(height=image_size[0], width=image_size[1]))
    specs = augment_cfg.train if train else augment_cfg.eval
    section = "augment.train" if train else "augment.eval"
    ops.extend(make_transform(s, f"{section}[{i}]") for i, s in enumerate(specs))
    return A.Compose(ops)
