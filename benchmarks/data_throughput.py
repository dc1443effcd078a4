"""CPU data path: seglab's COCO training dataset vs the course-style naive Dataset.

Both read the same real JPEGs and COCO polygons (default: ../shared/data/trashbags
train split, 640x640), resize to --size and apply the same horizontal flip. The
naive baseline is the pattern of the course baseline: float32 image on the CPU and
pycocotools `annToMask` for every annotation of every image, every epoch. seglab
keeps the image uint8 (normalised later on the device) and reads the class map from
its on-disk cache (the first, cold pass rasterises and fills the cache).

    python benchmarks/data_throughput.py --images 200 --json benchmarks/data_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "trashbags" / "train"


class NaiveCourseDataset(Dataset):
    """What the course baseline does: decode, float32, annToMask per annotation, every call."""

    def __init__(self, root: Path, ann_file: Path, size: int):
        self.root, self.coco = root, COCO(str(ann_file))
        self.ids = self.coco.getImgIds()
        cats = self.coco.loadCats(self.coco.getCatIds())
        self.class_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.transform = A.Compose([A.Resize(size, size), A.HorizontalFlip(p=0.5)])

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        info = self.coco.loadImgs(self.ids[i])[0]
        image = cv2.cvtColor(cv2.imread(str(self.root / info["file_name"])), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        anns = sorted(self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"])), key=lambda a: a["area"], reverse=True)
        mask = np.zeros((info["height"], info["width"]), np.int64)
        for ann in anns:
            mask[self.coco.annToMask(ann) == 1] = self.class_of[ann["category_id"]]
        out = self.transform(image=image, mask=mask)
        return torch.from_numpy(out["image"].transpose(2, 0, 1).copy()), torch.from_numpy(out["mask"].copy())


def seglab_dataset(root: Path, ann_file: Path, size: int, cache: Path, cache_images: bool):
    from seglab.config import load_config
    from seglab.data import build_dataset, resolve_labels

    cfg_path = Path(tempfile.mkdtemp()) / "bench.yaml"
    cfg_path.write_text(
        f"data: {{root: '{root}', train: '{ann_file}', image_size: [{size}, {size}], cache_dir: '{cache}', "
        f"cache_images: {str(cache_images).lower()}}}\n"
        "augment: {train: [{name: HorizontalFlip, p: 0.5}]}\n"
    )
    cfg = load_config(cfg_path)
    labels = resolve_labels(cfg)
    return build_dataset(cfg, "train", labels, train=True)


def images_per_second(dataset, n: int, workers: int, batch: int = 8, repeats: int = 3) -> float:
    loader = DataLoader(torch.utils.data.Subset(dataset, range(min(n, len(dataset)))), batch_size=batch, num_workers=workers)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        count = sum(len(b["image"] if isinstance(b, dict) else b[0]) for b in loader)
        rates.append(count / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with annotations.json and images/")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    ann = args.data / "annotations.json"
    cache = Path(tempfile.mkdtemp()) / "cache"
    torch.set_num_threads(1)
    naive = NaiveCourseDataset(args.data, ann, args.size)
    variants = {
        "seglab (mask cache only)": seglab_dataset(args.data, ann, args.size, cache, cache_images=False),
        "seglab (default: + cache_images)": seglab_dataset(args.data, ann, args.size, cache, cache_images=True),
    }
    n = min(args.images, len(naive))
    rows = []
    for name, ds in variants.items():
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        rows.append({"pipeline": f"{name}, first epoch (fills cache)", "workers": 0, "img_per_s": n / (time.perf_counter() - t0)})
    for workers in args.workers:
        base = images_per_second(naive, n, workers)
        rows.append({"pipeline": "naive course-style Dataset", "workers": workers, "img_per_s": base})
        for name, ds in variants.items():
            rate = images_per_second(ds, n, workers)
            rows.append({"pipeline": name, "workers": workers, "img_per_s": rate, "ratio_vs_naive": rate / base})
    print(f"{args.images} images from {args.data}, resized to {args.size}, hflip; median of 3 passes")
    print(f"{'pipeline':<56} {'workers':>7} {'img/s':>8} {'vs naive':>9}")
    for r in rows:
        ratio = f"{r['ratio_vs_naive']:.2f}x" if r.get("ratio_vs_naive") else ""
        print(f"{r['pipeline']:<56} {r['workers']:>7} {r['img_per_s']:>8.1f} {ratio:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
