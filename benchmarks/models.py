"""Forward+backward throughput and peak memory of every seglab model.

Each model runs in its own subprocess so its peak memory is its own. The baseline
rows are torchvision's reference segmentation models (plain PyTorch, no seglab
code), timed the same way in the same run; `ratio` is img/s relative to the
torchvision FCN-ResNet50 row.

    python benchmarks/models.py --size 256 --batch 2            # CPU here
    python benchmarks/models.py --size 512 --batch 16 --amp     # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

BASELINES = ("tv_fcn_resnet50", "tv_deeplabv3_resnet50")


def build(name: str, classes: int, encoder: str, width: float = 1.0):
    import torch

    if name.startswith("tv_"):
        import torchvision.models.segmentation as tvs

        net = getattr(tvs, name[3:])(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
        return torch.nn.Sequential(), lambda x: net(x)["out"], net
    from seglab.config import ModelConfig
    from seglab.models import MODELS, build_model
    import inspect

    params = {} if "encoder" in inspect.signature(MODELS.get(name)).parameters else {"width": width}
    model = build_model(ModelConfig(arch=name, encoder=encoder, params=params), classes)
    return None, model, model


def measure(name: str, size: int, batch: int, classes: int, encoder: str, steps: int, warmup: int, device: str, amp: bool,
            width: float = 1.0) -> dict:
    import torch

    _, fn, module = build(name, classes, encoder, width)
    dev = torch.device(device)
    module.to(dev).train()
    opt = torch.optim.SGD(module.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, classes, (batch, size, size), device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(fn(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"model": name, "img_per_s": batch / median, "median_step_s": median, "peak_mem_gb": peak / 2**30,
            "params_m": sum(p.numel() for p in module.parameters()) / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--models", nargs="*", help="default: every registered model")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.one:  # child process: one model, one JSON line
        print(json.dumps(measure(args.one, args.size, args.batch, args.classes, args.encoder, args.steps, args.warmup, device, args.amp)))
        return
    from seglab.models import MODELS

    names = list(BASELINES) + (args.models or MODELS.names())
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--size", str(args.size), "--batch", str(args.batch),
               "--classes", str(args.classes), "--encoder", args.encoder, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--device", device] + (["--amp"] if args.amp else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"model": name, "error": out.stderr.strip().splitlines()[-1][:120]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(_line(rows[-1], rows[0]), flush=True) if len(rows) > 1 else print(_header(device, args) + "\n" + _line(rows[0], rows[0]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "args": vars(args), "rows": rows}, f, indent=2)


def _header(device: str, args) -> str:
    return (f"device {device}, {args.size}x{args.size}, batch {args.batch}, {args.classes} classes, "
            f"{'bf16' if args.amp else 'fp32'}, median of {args.steps} steps\n"
            f"{'model':<24} {'params':>8} {'img/s':>8} {'ratio':>6} {'peak GB':>8}")


def _line(row: dict, base: dict) -> str:
    if "error" in row:
        return f"{row['model']:<24} error: {row['error']}"
    ratio = row["img_per_s"] / base["img_per_s"] if "img_per_s" in base else float("nan")
    return f"{row['model']:<24} {row['params_m']:>7.1f}M {row['img_per_s']:>8.2f} {ratio:>6.2f} {row['peak_mem_gb']:>8.2f}"


if __name__ == "__main__":
    main()
