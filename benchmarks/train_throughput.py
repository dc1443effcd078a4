"""Training throughput: seglab's trainer end to end vs plain PyTorch loops, one run.

Rows, for each model (UNet-ResNet34 and FCN-8s by default):
  plain loop (ceiling)   random tensors already on the device, AdamW; on a GPU bf16 +
                         channels_last + torch.compile (the best hand-written loop)
  plain loop fp32        the same loop in fp32 without channels_last
  naive course-style     fp32 loop fed by a course-style Dataset: float32 images and
                         pycocotools annToMask for every annotation, every epoch
  seglab train           `seglab.core.training.train` end to end: real JPEGs and COCO masks
                         from disk, augmentation, optimiser step, logging; on a GPU with
                         trainer.precision=bf16, channels_last and compile
`ratio` is img/s over the ceiling row of the same model. Peak GPU memory per row.

    python benchmarks/train_throughput.py --size 512 --batch 16 --steps 60 --json out.json   # GPU
    python benchmarks/train_throughput.py --size 128 --batch 4 --steps 8                     # CPU here
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from data_throughput import DEFAULT_DATA, NaiveCourseDataset  # noqa: E402

MODELS = {"unet_r34": ("Unet", "resnet34", {}), "fcn8s": ("fcn8s", "resnet34", {})}
# The same architectures, tiny: the GPU check's CPU smoke run (benchmarks/gpu_check.py --smoke).
SMALL = {"unet_r34": ("Unet", "tu-test_resnet", {"decoder_channels": [32, 16, 16, 16, 16]}), "fcn8s": ("fcn8s", "resnet34", {"width": 0.125})}


def build(model_key: str, classes: int, small: bool = False):
    from seglab.config import ModelConfig
    from seglab.models import build_model

    arch, encoder, params = (SMALL if small else MODELS)[model_key]
    return build_model(ModelConfig(arch=arch, encoder=encoder, params=params), classes)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model_key, batches, device, classes, steps, warmup, fast: bool, small: bool = False) -> dict:
    """A hand-written loop; `batches` yields (images, masks) already prepared."""
    model = build(model_key, classes, small).to(device).train()
    if fast and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    step_fn = model
    if fast and device.type == "cuda":
        step_fn = torch.compile(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Wall time over the steps after the warm-up, fetching the batches included: the naive
    # loop's data loading is part of its cost (the random batches cost nothing to fetch).
    images, t0 = 0, None
    it = iter(batches)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if fast and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast and device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(step_fn(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            images += x.shape[0]
    _sync(device)
    return {"img_per_s": images / (time.perf_counter() - t0), "peak_gb": _peak(device)}


def random_batches(batch, size, classes, device):
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch, size, size), device=device)
    while True:
        yield x, y


def naive_batches(batch, size, workers, data: Path = DEFAULT_DATA):
    """Batches of the course-style Dataset over `data` (a folder with annotations.json and images/)."""
    ds = NaiveCourseDataset(data, data / "annotations.json", size)
    while True:
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
        for x, y in loader:
            yield x, y.long()


class StepTimer:
    """Wall time from the first training batch after warm-up to the last one."""

    def __init__(self, warmup: int):
        import lightning as L

        outer = self

        class _CB(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == warmup:
                    _sync(pl_module.device)
                    outer.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if batch_idx >= warmup:
                    outer.images += batch["image"].shape[0]

            def on_train_epoch_end(self, trainer, pl_module):
                _sync(pl_module.device)
                outer.t1 = time.perf_counter()

        self.callback, self.t0, self.t1, self.images = _CB(), None, None, 0


def coco_classes(data: Path = DEFAULT_DATA) -> int:
    """Classes of the COCO file in `data`: its categories plus Background."""
    return len(json.loads((data / "annotations.json").read_text())["categories"]) + 1


def seglab_train(model_key, device, size, batch, steps, warmup, workers, data: Path = DEFAULT_DATA, small: bool = False,
                 callbacks: tuple = ()) -> dict:
    """`seglab.core.training.train` for warmup + steps batches of one epoch (no validation);
    img/s over the batches after the warm-up, from the first one's start to the epoch's end."""
    import seglab.core.training as training
    from seglab.config import load_config

    arch, encoder, params = (SMALL if small else MODELS)[model_key]
    gpu = device.type == "cuda"
    run = Path(tempfile.mkdtemp()) / "run"
    cfg_file = run.parent / "bench.yaml"
    cfg_file.write_text(f"""
data: {{format: coco, root: '{data}', train: annotations.json, val: annotations.json, image_size: [{size}, {size}],
        batch_size: {batch}, num_workers: {workers}, cache_dir: '{run.parent / "cache"}'}}
augment: {{train: [{{name: HorizontalFlip, p: 0.5}}]}}
model: {{arch: {arch}, encoder: {encoder}, params: {json.dumps(params)}}}
loss: [{{name: ce}}]
schedule: {{name: none}}
trainer: {{max_epochs: 1, precision: '{'bf16' if gpu else '32'}', channels_last: {str(gpu).lower()}, compile: {str(gpu).lower()},
          limit_train_batches: {warmup + steps}, limit_val_batches: 0, progress_bar: false, accelerator: '{device.type}'}}
logging: {{viz_every_n_epochs: 0}}
""")
    cfg = load_config(cfg_file)
    timer = StepTimer(warmup)
    make_callbacks = training.make_callbacks
    training.make_callbacks = lambda *a, **k: make_callbacks(*a, **k) + [timer.callback, *callbacks]
    try:
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        training.train(cfg, run)
    finally:
        training.make_callbacks = make_callbacks
        shutil.rmtree(run.parent, ignore_errors=True)
    if timer.t0 is None:
        raise ValueError(f"the epoch had no batch after the {warmup} warm-up batches: use more images or fewer steps")
    return {"img_per_s": timer.images / (timer.t1 - timer.t0), "peak_gb": _peak(device)}


def _peak(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    rows = []
    for key in args.models:
        runs = [
            ("plain loop (ceiling)" + (": bf16+channels_last+compile" if gpu else ": fp32"),
             lambda: plain_loop(key, random_batches(args.batch, args.size, args.classes, device), device, args.classes, args.steps, args.warmup, fast=True)),
            ("plain loop fp32", lambda: plain_loop(key, random_batches(args.batch, args.size, args.classes, device), device, args.classes, args.steps, args.warmup, fast=False)),
            ("naive course-style fp32 (real data)", lambda: plain_loop(key, naive_batches(args.batch, args.size, args.workers), device, coco_classes(), args.steps, args.warmup, fast=False)),
            ("seglab train" + (" bf16+channels_last+compile" if gpu else " fp32") + " (real data)",
             lambda: seglab_train(key, device, args.size, args.batch, args.steps, args.warmup, args.workers)),
        ]
        if not gpu:
            runs.pop(1)  # on a CPU the ceiling already is the fp32 loop
        ceiling = None
        for name, fn in runs:
            r = fn()
            ceiling = ceiling or r["img_per_s"]
            rows.append({"model": key, "row": name, **r, "ratio": r["img_per_s"] / ceiling})
            print(f"{key:<9} {name:<52} {r['img_per_s']:8.2f} img/s  {r['img_per_s'] / ceiling:5.2f}x"
                  + (f"  peak {r['peak_gb']:.1f} GB" if r["peak_gb"] is not None else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name() if gpu else "cpu", "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
