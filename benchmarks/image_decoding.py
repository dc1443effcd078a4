"""Image decoding: seglab's one loading path (PIL, EXIF orientation applied, issue 14)
against the OpenCV read it replaced (`cv2.imread` + BGR->RGB, which applied the EXIF
orientation to images but not to label maps), on the same files in the same run.

    .venv/bin/python benchmarks/image_decoding.py --images 48

Reads the real trashbag JPEGs (640x640) when present (default ../shared/data/trashbags),
plus PNG copies of them written to a temporary folder; median of 5 passes per row.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from seglab.data.images import images_under, read_image


def opencv_read(path: Path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def seglab_read(path: Path):
    return read_image(path, "bench")


def images_per_second(readers: dict, files: list[Path], passes: int = 5) -> dict:
    """Median img/s per reader, the readers taking turns within each pass: the order in
    which one process first allocates image-sized buffers moves a reader's speed by up to
    2x (the allocator keeps freed blocks after the first), and turns share that out."""
    rates: dict = {name: [] for name in readers}
    for _ in range(passes):
        for name, read in readers.items():
            start = time.perf_counter()
            for f in files:
                read(f)
            rates[name].append(len(files) / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "trashbags"), help="a folder of JPEGs (searched recursively)")
    p.add_argument("--images", type=int, default=48)
    args = p.parse_args()
    jpegs = [f for f in images_under(Path(args.data)) if f.suffix.lower() in (".jpg", ".jpeg")][: args.images]
    if not jpegs:
        raise SystemExit(f"no JPEGs under {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        pngs = []
        for i, f in enumerate(jpegs):
            pngs.append(Path(tmp) / f"{i}.png")
            cv2.imwrite(str(pngs[-1]), cv2.imread(str(f)))
        h, w = opencv_read(jpegs[0]).shape[:2]
        print(f"{len(jpegs)} images, {h}x{w}; median of 5 passes (the readers take turns), one process")
        print("| format | OpenCV (baseline) img/s | seglab read_image img/s | ratio |\n|---|---|---|---|")
        for name, files in (("JPEG", jpegs), ("PNG", pngs)):
            rates = images_per_second({"opencv": opencv_read, "seglab": seglab_read}, files)
            print(f"| {name} | {rates['opencv']:.1f} | {rates['seglab']:.1f} | {rates['seglab'] / rates['opencv']:.2f}x |")


if __name__ == "__main__":
    main()
