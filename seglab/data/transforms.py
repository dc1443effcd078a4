"""Augmentation pipelines from the config, through albumentations.

Normalisation is not here: images stay uint8 until they are on the device, where
the model wrapper normalises them (4x less to copy than float32).
"""

from __future__ import annotations

import inspect
import math

import albumentations as A
import cv2
import numpy as np

from seglab.errors import ConfigError


class GridMask(A.DualTransform):
    """GridMask (Chen et al. 2020, arXiv:2001.04086): drop a regular lattice of squares.

    A unit size d is drawn from `unit_size_range` (inclusive); each d x d unit keeps a
    stripe of width ratio*d and drops the (1-ratio)*d square next to it, so a share
    (1-ratio)^2 of the pixels is dropped. One random offset (0..d-1 in x and y) shifts the
    whole lattice, and the lattice is turned by a random angle in [-rotate, rotate]
    degrees. Dropped image pixels get `fill`; the mask keeps its labels (the paper's
    choice: the objects are still there, only hidden) unless `fill_mask` is set, e.g.
    to the ignore index. albumentations' GridDropout is close but moves every hole
    independently (no regular lattice) and cannot rotate, hence this transform.
    """

    def __init__(self, ratio: float = 0.6, unit_size_range: tuple[int, int] = (32, 96), rotate: float = 0.0,
                 fill: float = 0, fill_mask: float | None = None, p: float = 0.5):
        super().__init__(p=p)
        lo, hi = unit_size_range
        if not 0 < ratio < 1:
            raise ValueError(f"ratio must be in (0, 1) (the kept share of each unit's side), got {ratio}")
        if not 2 <= lo <= hi:
            raise ValueError(f"unit_size_range must be [d_min, d_max] with 2 <= d_min <= d_max, got {list(unit_size_range)}")
        if rotate < 0:
            raise ValueError(f"rotate must be >= 0 degrees, got {rotate}")
        self.ratio, self.unit_size_range, self.rotate = ratio, (int(lo), int(hi)), float(rotate)
        self.fill, self.fill_mask = fill, fill_mask

    def get_params_dependent_on_data(self, params, data):
        h, w = params["shape"][:2]
        d = self.py_random.randint(*self.unit_size_range)
        keep = max(1, math.ceil(d * self.ratio))
        # Draw the lattice on a canvas that covers the image under any rotation, then crop its centre.
        side = math.ceil(math.hypot(h, w)) + d
        dx, dy = self.py_random.randrange(d), self.py_random.randrange(d)
        rows = (np.arange(side) + dy) % d >= keep
        cols = (np.arange(side) + dx) % d >= keep
        dropped = (rows[:, None] & cols[None, :]).astype(np.uint8)
        if self.rotate > 0:
            angle = self.py_random.uniform(-self.rotate, self.rotate)
            turn = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
            dropped = cv2.warpAffine(dropped, turn, (side, side), flags=cv2.INTER_NEAREST)
        top, left = (side - h) // 2, (side - w) // 2
        return {"dropped": dropped[top:top + h, left:left + w].astype(bool)}

    def apply(self, img, dropped=None, **params):
        img = img.copy()
        img[dropped] = self.fill
        return img

    def apply_to_mask(self, mask, dropped=None, **params):
        if self.fill_mask is None:
            return mask
        mask = mask.copy()
        mask[dropped] = self.fill_mask
        return mask

    def get_transform_init_args_names(self):
        return ("ratio", "unit_size_range", "rotate", "fill", "fill_mask")


# Transforms written here, found by name before albumentations' own.
SEGLAB_TRANSFORMS = {"GridMask": GridMask}


def _transform_class(name: str, where: str):
    cls = SEGLAB_TRANSFORMS.get(name) or getattr(A, name, None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        import difflib

        known = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
        known += list(SEGLAB_TRANSFORMS)
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


def transform_problems(specs, where: str) -> list[str]:
    """One line per transform that cannot be built (unknown name or parameter)."""
    problems = []
    for i, spec in enumerate(specs):
        try:
            make_transform(spec, f"{where}[{i}]")
        except ConfigError as e:
            problems.append(str(e))
    return problems


def validate_transform_specs(specs, where: str) -> None:
    problems = transform_problems(specs, where)
    if problems:
        raise ConfigError(problems[0])


def build_transform(augment_cfg, image_size: tuple[int, int] | None, train: bool) -> A.Compose:
    ops = []
    if image_size is not None:
        # Masks resize with nearest neighbour (albumentations' default for masks).
        ops.append(A.Resize(height=image_size[0], width=image_size[1]))
    specs = augment_cfg.train if train else augment_cfg.eval
    section = "augment.train" if train else "augment.eval"
    ops.extend(make_transform(s, f"{section}[{i}]") for i, s in enumerate(specs))
    return A.Compose(ops)
