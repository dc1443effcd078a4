"""Config combinations that cannot work, found before Lightning starts and before anything
is written in the run folder: each key may be valid alone, only together do they fail.
One line per problem, naming the keys and the fix.

- a crop whose size differs from `data.image_size` where a batch must stack;
- a warmup that covers the whole run;
- `--device` naming hardware this machine does not have (`device_problems`; the trainer's
  accelerator and devices are checked by `training.trainer_problems`).
"""

from __future__ import annotations

# albumentations transforms whose output size is fixed by their parameters (`size` or
# `height` + `width`).
SIZED_TRANSFORMS = ("RandomResizedCrop", "RandomSizedCrop", "RandomCrop", "CenterCrop", "CropNonEmptyMaskIfExists",
                    "RandomSizedBBoxSafeCrop", "Resize", "AtLeastOneBBoxRandomCrop", "BBoxSafeRandomCrop")


def output_size(spec) -> tuple[int, int] | None:
    """The fixed (height, width) a transform spec outputs, or None when it keeps the size."""
    if spec.name not in SIZED_TRANSFORMS:
        return None
    params = spec.model_extra or {}
    if "size" in params and isinstance(params["size"], (list, tuple)) and len(params["size"]) == 2:
        return int(params["size"][0]), int(params["size"][1])
    if "height" in params and "width" in params:
        return int(params["height"]), int(params["width"])
    return None


def crop_problems(cfg) -> list[str]:
    """With `data.image_size` every image enters the pipeline at that size; a sized transform
    that runs only sometimes (p < 1) then yields two sizes in one batch, which cannot stack;
    a plain crop larger than the image cannot be cut at all."""
    size = cfg.data.image_size
    if size is None:
        return []
    size = tuple(size)
    problems = []
    for section in ("train", "eval"):
        for i, spec in enumerate(getattr(cfg.augment, section)):
            out = output_size(spec)
            if out is None or out == size:
                continue
            where = f"augment.{section}[{i}] ({spec.name})"
            p = float((spec.model_extra or {}).get("p", 1.0))
            larger = out[0] > size[0] or out[1] > size[1]
            if spec.name in ("RandomCrop", "CenterCrop") and larger and not (spec.model_extra or {}).get("pad_if_needed"):
                problems.append(f"{where}: crop {list(out)} is larger than data.image_size {list(size)}; "
                                f"make it at most {list(size)} (or set data.image_size to at least {list(out)})")
            elif p < 1:
                key = "size" if "size" in (spec.model_extra or {}) else "height/width"
                problems.append(f"{where}: output {list(out)} differs from data.image_size {list(size)} and runs with p={p:g}, "
                                f"so one batch mixes two sizes; set its {key} to {list(size)} (or p: 1)")
    return problems


def warmup_problems(cfg) -> list[str]:
    warmup, epochs = cfg.schedule.warmup_epochs, cfg.trainer.max_epochs
    if warmup <= 0 or epochs is None or epochs < 0 or warmup < epochs:
        return []
    suggested = round(epochs * 0.1, 2) if epochs > 1 else 0
    return [f"schedule.warmup_epochs={warmup:g} covers the whole run (trainer.max_epochs={epochs}); "
            f"use schedule.warmup_epochs={suggested:g} or raise trainer.max_epochs above {warmup:g}"]


def device_problems(accelerator: str, devices) -> list[str]:
    """`trainer.accelerator` / `trainer.devices` against this machine's hardware."""
    import torch

    name = str(accelerator).lower()
    if name in ("auto", "cpu"):
        return []
    if name in ("gpu", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            if name == "gpu" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return []
            return [f"trainer.accelerator={accelerator}: no CUDA GPU on this machine; use trainer.accelerator=cpu (or auto)"]
        wanted = devices if isinstance(devices, int) else None
        if isinstance(devices, str) and devices.isdigit():
            wanted = int(devices)
        if wanted is not None and wanted > count:
            return [f"trainer.devices={devices}: this machine has {count} GPU(s); use trainer.devices={count} (or auto)"]
        return []
    from lightning.pytorch.accelerators import AcceleratorRegistry

    known = AcceleratorRegistry.available_accelerators()
    if name not in known:
        return [f"trainer.accelerator={accelerator}: not an accelerator (use cpu, gpu or auto)"]
    try:  # the class's own check: building an instance fails when its library is missing
        available = AcceleratorRegistry[name]["accelerator"].is_available()
    except Exception:  # a missing optional library (torch_xla ...) means no such device here
        available = False
    if not available:
        return [f"trainer.accelerator={accelerator}: no {name} device on this machine; use trainer.accelerator=cpu (or auto)"]
    return []


def combination_problems(cfg) -> list[str]:
    """What `data validate`, `config check` and training check alike (the hardware is
    checked by training only: a config may be validated on another machine)."""
    return crop_problems(cfg) + warmup_problems(cfg)
