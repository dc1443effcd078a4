"""Batch-level augmentations: mix images of one batch, pixels and labels together.

They run on the device in the segmentation tasks' training step, before the forward, on
uint8 images [B, 3, H, W] and a batch of dense targets: integer class maps [B, H, W]
(multiclass) or boolean / 0-1 maps [B, C, H, W] (multilabel). What the pixels of a target
hold (which are an object's, its classes' regions, its channels) is its kind's answer
(`seglab.kinds.dense`).

Every augmentation here does the same thing with a different region: for each image
it picks a partner image of the batch and a region, and inside the region takes the
partner's pixels AND the partner's labels (all channels of a multilabel mask). The
labels of a pixel therefore always describe the pixel shown, whatever the mask type.

    cutmix      a random box (area share 1 - lambda, lambda ~ Beta(alpha, alpha))
    copy_paste  the pixels of chosen classes (objects) of the partner, optionally
                mirrored, scaled and shifted first (shape matters more than place);
                `unit: instance` pastes single objects (annotations, where the batch
                carries object ids; else connected components of a class) instead of
                every pixel of the classes

Config: `augment.batch: [{name: cutmix, p: 0.5}, {name: copy_paste, p: 0.5, classes: [Battery]}]`,
applied in order. To add one, subclass `BatchAugment`, write `sample`, and register
it with `@BATCH_AUGMENTS.register("name")`.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seglab.errors import ConfigError
from seglab.registry import Registry

BATCH_AUGMENTS = Registry("batch augmentation")


def _broadcast(region: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, H, W] region -> a view that broadcasts over [B, H, W] or [B, C, H, W] `target`."""
    return region.view(region.shape[0], *([1] * (target.dim() - 3)), *region.shape[1:])


def paste(images: torch.Tensor, masks: torch.Tensor, src_images: torch.Tensor, src_masks: torch.Tensor,
          region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inside `region` [B, H, W] (bool), image pixels and labels come from the source batch."""
    return (torch.where(_broadcast(region, images), src_images, images),
            torch.where(_broadcast(region, masks), src_masks, masks))


class BatchAugment:
    """Applied to each image of the batch with probability `p`; the partner is another image of the batch."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def sample(self, images: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator,
               instances: torch.Tensor | None = None) -> dict:
        """Draw this batch's parameters: at least `region` [B, H, W] bool, `src_images`,
        `src_masks` and `partner`; `src_instances` too when the source's object ids moved.
        `instances`: object ids [B, H, W] beside class maps (0 = none), or None."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(images, masks, generator)[:2]

    def apply(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None,
              instances: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images, masks and object ids after the paste (ids follow the pixels, so a later
        augmentation of the batch still sees which object each pixel belongs to)."""
        params = self.sample(images, masks, _numpy_rng(generator), instances)
        images, masks = paste(images, masks, params["src_images"], params["src_masks"], params["region"])
        if instances is not None:
            src = params.get("src_instances")
            if src is None:
                src = instances[torch.as_tensor(params["partner"], device=instances.device)]
            instances = torch.where(params["region"], src, instances)
        return images, masks, instances

    def _choose(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Which images are augmented, and each image's partner (never itself when B > 1)."""
        applied = rng.random(batch_size) < self.p
        shift = rng.integers(1, batch_size, batch_size) if batch_size > 1 else np.zeros(1, np.int64)
        partner = (np.arange(batch_size) + shift) % batch_size
        return applied & (partner != np.arange(batch_size)), partner


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """Parameters are drawn on the CPU with numpy, seeded from torch's RNG (seeded by the run's seed)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


@BATCH_AUGMENTS.register("cutmix")
class CutMix(BatchAugment):
    """CutMix for segmentation (Yun et al. 2019): paste a box of the partner into image and mask.

    lambda ~ Beta(alpha, alpha); the box has sides H*sqrt(1-lambda) and W*sqrt(1-lambda)
    (rounded) and lies wholly inside the image, so its area share is 1 - lambda.
    """

    def __init__(self, p: float = 0.5, alpha: float = 1.0):
        super().__init__(p)
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def sample(self, images, masks, rng, instances=None):
        b, _, h, w = images.shape
        applied, partner = self._choose(b, rng)
        lam = rng.beta(self.alpha, self.alpha, b)
        cut_h = np.round(h * np.sqrt(1 - lam)).astype(np.int64)
        cut_w = np.round(w * np.sqrt(1 - lam)).astype(np.int64)
        top = (rng.random(b) * (h - cut_h + 1)).astype(np.int64)
        left = (rng.random(b) * (w - cut_w + 1)).astype(np.int64)
        boxes = np.stack([top, left, top + cut_h, left + cut_w], 1) * applied[:, None]
        box = torch.as_tensor(boxes, device=images.device)
        ys = torch.arange(h, device=images.device).view(1, h, 1)
        xs = torch.arange(w, device=images.device).view(1, 1, w)
        region = ((ys >= box[:, 0, None, None]) & (ys < box[:, 2, None, None])
                  & (xs >= box[:, 1, None, None]) & (xs < box[:, 3, None, None]))
        index = torch.as_tensor(partner, device=images.device)
        return {"region": region, "src_images": images[index], "src_masks": masks[index],
                "partner": partner, "applied": applied, "lam": lam, "boxes": boxes}


@BATCH_AUGMENTS.register("copy_paste")
class CopyPaste(BatchAugment):
    """Copy-paste of objects (Ghiasi et al. 2021, at class level): the partner's pixels of
    `classes` are pasted onto this image with their labels.

    `classes`: class names or indices to paste (default: every class but 0, Background,
    for multiclass; every channel for multilabel). Before pasting, the partner's image
    and mask are mirrored left-right with probability `hflip_p`, scaled by a factor from
    `scale_range` and shifted by up to `translate` of the image size (nearest-neighbour
    resampling: every pasted pixel is a source pixel with its own label).

    `unit: instance` pastes `objects` single objects instead (Ghiasi et al.'s unit), drawn
    uniformly among the partner's objects of `classes`. An object is one annotation where
    the batch carries object ids (class maps from COCO annotations or polygons: its visible
    pixels, so touching objects of one class stay apart), else one 8-connected component
    of one class's mask (label-map PNGs; multilabel: of one channel, where each polygon of
    a class is usually its own component). Inside the object's footprint the partner's
    pixels and ALL its labels replace this image's: a multilabel object keeps the other
    classes it overlaps (its full C-channel mask).
    """

    def __init__(self, p: float = 0.5, classes: Sequence[int | str] | None = None, hflip_p: float = 0.0,
                 scale_range: Sequence[float] = (1.0, 1.0), translate: float = 0.0, unit: str = "class",
                 objects: int = 1, *, class_names: Sequence[str] | None = None, ignore_index: int = 255, kind=None):
        super().__init__(p)
        if unit not in ("class", "instance"):
            raise ValueError(f"unit must be 'class' or 'instance', got {unit!r}")
        if isinstance(objects, bool) or not isinstance(objects, int) or objects < 1:
            raise ValueError(f"objects must be a whole number >= 1 (objects pasted per image, unit: instance), got {objects!r}")
        self.unit, self.objects = unit, objects
        if not 0 <= hflip_p <= 1:
            raise ValueError(f"hflip_p must be in [0, 1], got {hflip_p}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be [low, high] with 0 < low <= high, got {list(scale_range)}")
        if not 0 <= translate <= 1:
            raise ValueError(f"translate must be in [0, 1] (share of the image size), got {translate}")
        self.hflip_p, self.scale_range, self.translate = hflip_p, tuple(scale_range), translate
        self.ignore_index = ignore_index
        self.kind = kind  # the targets' kind (build_batch_augment gives it; None only to check parameters)
        self.classes = None if classes is None else _class_indices(classes, class_names)

    def objects_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """[B, H, W] bool: pixels of the pasted classes."""
        return self.kind.object_pixels(masks, self.classes, self.ignore_index)

    def instances(self, masks: torch.Tensor, applied: np.ndarray, rng: np.random.Generator,
                  ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, H, W] bool: for each applied image, the footprint of `self.objects` objects
        drawn from its mask (annotations by their ids where `ids` has any, else connected
        components of one class each); empty elsewhere."""
        import cv2

        out = np.zeros((masks.shape[0], *masks.shape[-2:]), bool)
        chosen = self.objects_mask(masks)
        for i in np.flatnonzero(applied):
            m = masks[i].cpu().numpy()
            found = []  # (component labels, component id)
            named = ids[i][chosen[i]].unique().cpu().numpy() if ids is not None else np.zeros(0)
            named = named[named != 0]
            binaries = []  # masks to split into connected components when there are no ids
            if named.size:  # annotations: each id's visible pixels
                labelled = ids[i].cpu().numpy()
                found = [(labelled, int(k)) for k in named]
            else:
                binaries = self.kind.class_regions(m, self.classes, self.ignore_index)
            for binary in binaries:
                if binary.any():
                    n, comp = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
                    found += [(comp, k) for k in range(1, n)]
            if found:
                for j in rng.choice(len(found), min(self.objects, len(found)), replace=False):
                    comp, k = found[j]
                    out[i] |= comp == k
        return torch.as_tensor(out, device=masks.device)

    def sample(self, images, masks, rng, instances=None):
        b, _, h, w = images.shape
        applied, partner = self._choose(b, rng)
        index = torch.as_tensor(partner, device=images.device)
        src_images, src_masks = images[index], masks[index]
        src_ids = None if instances is None else instances[index]
        # Drawn before the warp: an object is picked whole, then moves with the image.
        footprint = self.instances(src_masks, applied, rng, src_ids) if self.unit == "instance" else None
        flip = rng.random(b) < self.hflip_p
        scale = rng.uniform(*self.scale_range, b)
        shift = rng.uniform(-1, 1, (b, 2)) * 2 * self.translate  # normalised coordinates span 2
        inside = torch.ones(b, h, w, dtype=torch.bool, device=images.device)
        if flip.any() or self.scale_range != (1.0, 1.0) or self.translate > 0:
            src_images, src_masks, inside, footprint, src_ids = _warp(src_images, src_masks, self.kind, flip, scale, shift,
                                                                      footprint, src_ids)
        chosen = self.objects_mask(src_masks) if footprint is None else footprint
        region = chosen & inside & torch.as_tensor(applied, device=images.device).view(b, 1, 1)
        return {"region": region, "src_images": src_images, "src_masks": src_masks, "partner": partner,
                "applied": applied, "flip": flip, "scale": scale, "shift": shift, "src_instances": src_ids}


def _warp(images: torch.Tensor, masks: torch.Tensor, kind, flip: np.ndarray, scale: np.ndarray, shift: np.ndarray,
          footprint: torch.Tensor | None = None, ids: torch.Tensor | None = None):
    """Mirror / scale about the centre / shift each image and mask (and object footprint
    and object ids [B, H, W], when given) alike (nearest neighbour); `kind` says how a
    mask is channels.

    Returns the warped images and masks (same dtypes), where the result lies inside the
    source, and the warped footprint and ids (None when not given).
    """
    b, _, h, w = images.shape
    device = images.device
    # affine_grid maps output to input coordinates: in = M (out - shift), M = diag(+-1/s, 1/s).
    m = np.zeros((b, 2, 3))
    m[:, 0, 0] = np.where(flip, -1.0, 1.0) / scale
    m[:, 1, 1] = 1.0 / scale
    m[:, 0, 2] = -m[:, 0, 0] * shift[:, 0]
    m[:, 1, 2] = -m[:, 1, 1] * shift[:, 1]
    theta = torch.as_tensor(m, dtype=torch.float32, device=device)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    mask_channels = kind.as_channels(masks)
    extra = [m.float().unsqueeze(1) for m in (footprint, ids) if m is not None]  # ids < 2**24: exact in float32
    stack = torch.cat([images.float(), mask_channels, *extra, torch.ones(b, 1, h, w, device=device)], 1)
    with torch.autocast(device.type, enabled=False):
        out = F.grid_sample(stack, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out_images = out[:, :3].round().to(images.dtype)
    end = 3 + mask_channels.shape[1]
    out_masks = kind.from_channels(out[:, 3:end])
    out_masks = (out_masks > 0.5) if masks.dtype == torch.bool else out_masks.round().to(masks.dtype)
    out_footprint = None if footprint is None else out[:, end] > 0.5
    out_ids = None if ids is None else out[:, end + (footprint is not None)].round().to(ids.dtype)
    return out_images, out_masks, out[:, -1] > 0.5, out_footprint, out_ids


def _class_indices(classes: Sequence[int | str], class_names: Sequence[str] | None) -> tuple[int, ...] | None:
    """Class names or indices -> indices; names stay unresolved (None) until the class list is known."""
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise ValueError(f"classes: {c!r} is neither a class name nor an index")
        if isinstance(c, int):
            if c < 0 or (class_names is not None and c >= len(class_names)):
                raise ValueError(f"classes: index {c} is not a class")
            out.append(c)
        elif class_names is None:
            return None
        elif c in class_names:
            out.append(list(class_names).index(c))
        else:
            close = difflib.get_close_matches(c, list(class_names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"classes: unknown class {c!r}{hint} (classes: {', '.join(class_names)})")
    if not out:
        raise ValueError("classes: empty list (leave it out to paste every object class)")
    return tuple(out)


class BatchAugmentations:
    """The configured augmentations, applied in order."""

    def __init__(self, augments: Sequence[BatchAugment]):
        self.augments = list(augments)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None,
                 instances: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for augment in self.augments:
            images, masks, instances = augment.apply(images, masks, generator, instances)
        return images, masks


def pastes_objects(specs) -> bool:
    """Whether `augment.batch` pastes single objects (copy_paste with unit: instance): the
    training dataset then hands out object ids beside its class maps."""
    return any(s.name == "copy_paste" and (s.model_extra or {}).get("unit") == "instance" for s in specs or ())


def _make(spec, where: str, labels) -> BatchAugment:
    """One augmentation; `labels` (None: only its parameters are checked) gives the class
    names, ignore index and target kind of the augmentations that take them."""
    cls = BATCH_AUGMENTS.get(spec.name, where)
    params = dict(spec.model_extra or {})
    accepted = inspect.signature(cls.__init__).parameters
    context = ({"class_names": None, "ignore_index": 255, "kind": None} if labels is None else
               {"class_names": labels.classes, "ignore_index": labels.ignore_index, "kind": labels.kind})
    for key in params:
        if key not in accepted or key in context:
            raise ConfigError(f"{where}.{key}: unknown parameter for {spec.name}")
    context = {k: v for k, v in context.items() if k in accepted}
    try:
        return cls(p=spec.p, **params, **context)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where} ({spec.name}): {e}") from None


def batch_problems(specs, where: str = "augment.batch") -> list[str]:
    """Names and parameters, one line per bad entry (class names are checked when the classes are known)."""
    problems = []
    for i, spec in enumerate(specs):
        try:
            _make(spec, f"{where}[{i}]", None)
        except ConfigError as e:
            problems.append(str(e))
    return problems


def validate_batch_specs(specs, where: str = "augment.batch") -> None:
    problems = batch_problems(specs, where)
    if problems:
        raise ConfigError(problems[0])


def build_batch_augment(specs, labels, where: str = "augment.batch") -> BatchAugmentations | None:
    """The pipeline for `augment.batch` on targets of `labels`, or None when it is empty."""
    if not specs:
        return None
    return BatchAugmentations([_make(s, f"{where}[{i}]", labels) for i, s in enumerate(specs)])
