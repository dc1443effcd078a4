"""Full-resolution multi-label data path (competition B at its real scale), on generated data.

Writes 2048x2048 polygon images in the hand-bone layout at the competition's density
(29 classes, a few hundred vertices per polygon; seglab.data.synth.polygons), then, each
measurement in a fresh process (so each peak RSS is its own):

1. cache build: `seglab data cache` (seglab.data.cache_build) of images and masks resized
   to 1024 px, with 1 worker vs every core;
2. data path at random crops of 512, 1024 and 2048 (`data.image_size: null` + RandomCrop):
   seglab's training dataset (masks rasterised at load; first epoch, then steady state) against
   a plain Dataset that decodes the PNG, parses the JSON and rasterises every polygon
   every time, with the same crop; img/s, peak RSS, and the projection to 800 images;
3. training (`seglab train`, Unet-ResNet18) on random crops of the full-resolution images
   with sliding-window validation on the whole 2048x2048 images: time to the first
   training step, first-epoch and steady img/s, peak RSS.

    .venv/bin/python benchmarks/fullres.py                 # the default: small, for a shared CPU
    .venv/bin/python benchmarks/fullres.py --images 30 --train-crops 512,2048 --json fullres.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
T0 = time.perf_counter()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def config(data: Path, cache: Path, crop: int | None, extra=()):
    from seglab.config import load_config
    from seglab.data.synth.polygons import class_names

    meta = json.loads((data / "bench.json").read_text())
    crop_aug = [f"augment.train=[{{name: RandomCrop, height: {crop}, width: {crop}}}]"] if crop else []
    return load_config(ROOT / "configs" / "demo_multilabel.yaml", [
        f"data.root={data / 'train'}", f"data.classes={json.dumps(list(class_names(meta['classes'])))}",
        "data.test=null", "data.image_size=null", f"data.cache_dir={cache}", "data.num_workers=0", *crop_aug, *extra])


# ---------------------------------------------------------------- children (one measurement each)


def child_cache(data: Path, cache: Path, workers: int) -> dict:
    from seglab.data.cache_build import build_caches

    # Full-size polygon masks are rasterised at load, not cached: what a team prepares up
    # front is a resized copy (images and masks) to train at 1024 px.
    summary = build_caches(config(data, cache, None, ["data.image_size=[1024, 1024]"]), workers, progress=None)
    return {"seconds": summary["seconds"], "workers": summary["workers"], "samples": sum(summary["samples"].values()),
            "files": summary["new_files"]}


class PlainDataset:
    """Decode the PNG, parse the JSON, rasterise every polygon into C x H x W, crop: every time."""

    def __init__(self, data: Path, classes: list[str], crop: int, seed: int = 0):
        import numpy as np

        root = data / "train"
        ids = [line.strip() for line in (root / "train.txt").read_text().split()]
        self.images = sorted(p for i in ids for p in (root / "DCM" / i).glob("*.png"))
        self.root, self.index = root, {c: k for k, c in enumerate(classes)}
        self.crop, self.rng = crop, np.random.default_rng(seed)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        import cv2
        import numpy as np
        import torch

        path = self.images[i]
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2RGB)
        label = (self.root / "outputs_json" / path.relative_to(self.root / "DCM")).with_suffix(".json")
        masks = np.zeros((len(self.index), *image.shape[:2]), np.uint8)
        for ann in json.loads(label.read_text())["annotations"]:
            cv2.fillPoly(masks[self.index[ann["label"]]], [np.asarray(ann["points"], np.int32)], 1)
        h, w = image.shape[:2]
        y, x = self.rng.integers(0, h - self.crop + 1), self.rng.integers(0, w - self.crop + 1)
        image, masks = image[y : y + self.crop, x : x + self.crop], masks[:, y : y + self.crop, x : x + self.crop]
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "target": torch.from_numpy(np.ascontiguousarray(masks)).bool()}


def child_data(data: Path, cache: Path, pipeline: str, crop: int, epochs: int) -> dict:
    from torch.utils.data import DataLoader

    from seglab.data import build_dataset, resolve_labels

    cfg = config(data, cache, crop)
    labels = resolve_labels(cfg)
    dataset = (build_dataset(cfg, "train", labels, train=True) if pipeline == "seglab"
               else PlainDataset(data, list(labels.classes), crop))
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=0)
    first_item, times = None, []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            assert batch["image"].shape[-1] == crop
            if first_item is None:
                first_item = time.perf_counter() - T0
        times.append(time.perf_counter() - start)
    n = len(dataset)
    return {"images": n, "first_batch_s": first_item, "first_epoch_img_s": n / times[0],
            "steady_img_s": n * (len(times) - 1) / sum(times[1:]) if len(times) > 1 else None, "peak_rss_mb": peak_rss_mb()}


def child_train(data: Path, cache: Path, crop: int, batches: int, tile: int, run: Path, batch_size: int) -> dict:
    from seglab.cli import main
    from seglab.core.module import LabModule

    stamps: list[float] = []
    epochs: list[float] = []
    validation: list[float] = []
    LabModule.on_train_batch_end = lambda self, *a: stamps.append(time.perf_counter())
    for hook, where in (("on_train_epoch_start", epochs), ("on_validation_epoch_start", validation),
                        ("on_validation_epoch_end", validation)):
        def timed(self, _orig=getattr(LabModule, hook), _where=where):
            _where.append(time.perf_counter())
            return _orig(self)
        setattr(LabModule, hook, timed)
    meta = json.loads((data / "bench.json").read_text())
    from seglab.data.synth.polygons import class_names

    code = main(["train", str(ROOT / "configs" / "demo_multilabel.yaml"), f"data.root={data / 'train'}",
                 f"data.classes={json.dumps(list(class_names(meta['classes'])))}", "data.test=null", "data.image_size=null",
                 f"data.cache_dir={cache}", "data.num_workers=0", f"data.batch_size={batch_size}", "model.encoder=resnet18",
                 f"augment.train=[{{name: RandomCrop, height: {crop}, width: {crop}}}]",
                 "trainer.max_epochs=2", f"trainer.limit_train_batches={batches}", "trainer.progress_bar=false",
                 "logging.loggers=[]", "logging.viz_every_n_epochs=0", "schedule.warmup_epochs=0",
                 "sliding_window.enabled=true", "sliding_window.in_validation=true", f"sliding_window.tile=[{tile}, {tile}]",
                 "--out", str(run)])
    per_epoch = len(stamps) // 2
    first_epoch = stamps[per_epoch - 1] - epochs[0]
    second_epoch = stamps[-1] - epochs[1]
    # validation: pairs of (start, end); the first pair is Lightning's one-batch sanity check
    spans = [b - a for a, b in zip(validation[::2], validation[1::2])]
    return {"exit": code, "first_step_s": stamps[0] - T0, "batches_per_epoch": per_epoch,
            "batch_size": batch_size, "first_epoch_img_s": batch_size * per_epoch / first_epoch,
            "steady_img_s": batch_size * per_epoch / second_epoch,
            "validation_s": spans[-1], "peak_rss_mb": peak_rss_mb()}


CHILDREN = {"cache": child_cache, "data": child_data, "train": child_train}


def in_child(kind: str, *args) -> dict:
    """One measurement in a fresh process, with its cache folder (args[1]) emptied first; its JSON result."""
    shutil.rmtree(args[1], ignore_errors=True)  # a kept --workdir must not measure a warm cache
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(argv) -> None:
    kind, *args = argv
    types = {"cache": (Path, Path, int), "data": (Path, Path, str, int, int), "train": (Path, Path, int, int, int, Path, int)}[kind]
    result = CHILDREN[kind](*(t(a) for t, a in zip(types, args)))
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- the table


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return run_child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=12, help="generated images (two per person; one person's two held out for validation)")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=29)
    ap.add_argument("--points", type=int, default=200, help="vertices per polygon")
    ap.add_argument("--crops", default="512,1024,2048", help="data-path crop sides")
    ap.add_argument("--epochs", type=int, default=2, help="data-path epochs (the first also learns the image sizes)")
    ap.add_argument("--train-crops", default="512", help="training crop sides ('' = no training)")
    ap.add_argument("--train-batches", type=int, default=4, help="training batches (of 2) per epoch, 2 epochs (full-size crops: at most 2 of 1)")
    ap.add_argument("--tile", type=int, default=1024, help="sliding-window validation tile")
    ap.add_argument("--project", type=int, default=800, help="project epoch times to this many images")
    ap.add_argument("--workdir", help="keep data and caches here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from seglab.data.cache_build import available_cores
    from seglab.data.synth.polygons import make_polygon_dataset

    work = Path(args.workdir or tempfile.mkdtemp(prefix="seglab_fullres_"))
    data = work / "data"
    people = max(3, args.images // 2)
    if not (data / "bench.json").is_file():
        start = time.perf_counter()
        make_polygon_dataset(data, people - 1, 1, 0, size=args.size, seed=0, num_classes=args.classes, points=args.points)
        (data / "bench.json").write_text(json.dumps({"classes": args.classes, "people": people}))
        print(f"generated {2 * people} images {args.size}x{args.size} ({args.classes} classes, {args.points} points "
              f"per polygon) in {time.perf_counter() - start:.0f} s under {data}", flush=True)
    cores = available_cores()
    load = os.getloadavg()[0]
    results: dict = {"images": 2 * people, "size": args.size, "cores": cores, "load_average_at_start": load}

    results["cache"] = {w: in_child("cache", data, work / f"cache_w{w}", w) for w in sorted({1, cores})}
    print(f"\ncache build (`seglab data cache`: images and masks of train + val resized to 1024x1024, "
          f"{results['cache'][1]['samples']} images)")
    for w, r in results["cache"].items():
        print(f"  {w} worker(s): {r['seconds']:.1f} s ({r['samples'] / r['seconds']:.2f} img/s, {r['files']} files)")

    rows = []
    for crop in [int(c) for c in args.crops.split(",") if c]:
        plain = in_child("data", data, work / "cache_unused", "plain", crop, args.epochs)
        seglab = in_child("data", data, work / f"cache_data_{crop}", "seglab", crop, args.epochs)
        rows.append((crop, plain, seglab))
    results["data"] = [{"crop": c, "plain": p, "seglab": s} for c, p, s in rows]
    print(f"\ndata path, one process, batches of 2 random crops ({rows[0][1]['images'] if rows else 0} training images)")
    print(f"{'crop':>5} {'pipeline':<8} {'1st epoch img/s':>16} {'steady img/s':>13} {'vs plain':>9} "
          f"{'peak RSS MB':>12} {'800 img: 1st / steady epoch':>28}")
    for crop, plain, seglab in rows:
        for name, r in (("plain", plain), ("seglab", seglab)):
            steady = r["steady_img_s"] or r["first_epoch_img_s"]
            ratio = steady / (plain["steady_img_s"] or plain["first_epoch_img_s"])
            proj = f"{args.project / r['first_epoch_img_s']:.0f} s / {args.project / steady:.0f} s"
            print(f"{crop:>5} {name:<8} {r['first_epoch_img_s']:>16.1f} {steady:>13.1f} {ratio:>8.2f}x "
                  f"{r['peak_rss_mb']:>12.0f} {proj:>28}")

    train_rows = []
    for crop in [int(c) for c in args.train_crops.split(",") if c]:
        # Whole 2048 px images: batches of one, two steps (a memory check more than a speed figure on a CPU).
        full = crop >= args.size
        batches = max(1, min(args.train_batches, 2)) if full else args.train_batches
        r = in_child("train", data, work / f"cache_train_{crop}", crop, batches, args.tile, work / f"run_{crop}", 1 if full else 2)
        train_rows.append((crop, r))
    results["train"] = [{"crop": c, **r} for c, r in train_rows]
    if train_rows:
        print(f"\ntraining (Unet-ResNet18, batches of 2 (1 at full size), random crops of the {args.size}px images; validation: "
              f"sliding window, {args.tile}px tiles, on the whole images)")
        print(f"{'crop':>5} {'first step s':>13} {'1st epoch img/s':>16} {'2nd epoch img/s':>16} {'validation s':>13} {'peak RSS MB':>12}")
        for crop, r in train_rows:
            print(f"{crop:>5} {r['first_step_s']:>13.1f} {r['first_epoch_img_s']:>16.2f} {r['steady_img_s']:>16.2f} "
                  f"{r['validation_s']:>13.1f} {r['peak_rss_mb']:>12.0f}")
    results["load_average_at_end"] = os.getloadavg()[0]
    print(f"\nload average (1 min) at start {load:.1f}, at end {results['load_average_at_end']:.1f} on {cores} core(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
