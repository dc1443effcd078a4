"""Fill a config's on-disk caches up front, on every core: `seglab data cache CONFIG`.

Training fills the caches lazily (each DataLoader worker decodes and rasterises what it
is asked for first), so the first epoch pays for them. Here every configured split's
samples are cut into chunks and a process pool rasterises the masks (polygons, COCO) and,
with `data.image_size` and `data.cache_images`, resizes images and masks, writing the same
cache entries the datasets read (same keys: `build_dataset` makes them). Writes are
atomic, so a run training at the same time, or a second `data cache`, is safe.

Processes, not threads: rasterising and PNG decoding hold the GIL for part of their time.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

from seglab.data.cache import default_cache_dir
from seglab.io import check_writable

_WORKER: dict = {}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _datasets(cfg, labels) -> dict:
    """{split: dataset} of the configured splits (test included: its resized images are cached too);
    the training split's as training builds it (with object ids when copy-paste pastes objects)."""
    from seglab.data import SPLITS, _configured, build_dataset

    out = {}
    for split in SPLITS:
        if _configured(cfg, split):
            out[split] = build_dataset(cfg, split, labels, train=split == "train")
    return out


def _fill(dataset, start: int, stop: int) -> None:
    """What a training epoch would decode for these samples, so that it lands in the caches."""
    for i in range(start, stop):
        if dataset.resized_cache is not None:
            dataset._image(i)
        if dataset.with_targets:
            dataset._target(i)
        if dataset.with_instances:
            dataset.source.load_instances(i)


def _init_worker(cfg, labels) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    _WORKER["datasets"] = _datasets(cfg, labels)


def _run_chunk(split: str, start: int, stop: int) -> int:
    _fill(_WORKER["datasets"][split], start, stop)
    return stop - start


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def print_progress(done: int, total: int, elapsed: float, stream=None) -> None:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else math.inf
    print(f"cache: {done}/{total} samples ({100 * done / max(total, 1):.0f}%), {rate:.1f} samples/s, "
          f"elapsed {format_eta(elapsed)}, ETA {format_eta(eta)}", file=stream or sys.stderr, flush=True)


def build_caches(cfg, workers: int | None = None, progress: Callable | None = print_progress,
                 every_s: float = 2.0) -> dict:
    """Fill every cache the config's splits read; returns {"samples": {split: n}, "seconds",
    "workers", "new_files"} (entries written now, not found already there).

    `workers`: processes (default: every core this process may use; 1 = in this process).
    `progress(done, total, elapsed)` is called at most every `every_s` seconds and at the end.
    """
    from seglab.data import resolve_labels

    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    # Training shrugs off an unwritable cache (it only costs speed); asked to fill it, say so.
    check_writable(cache_dir)
    before = _entries(cache_dir)
    labels = resolve_labels(cfg)
    datasets = _datasets(cfg, labels)
    sizes = {split: len(ds) for split, ds in datasets.items()}
    total = sum(sizes.values())
    workers = max(1, min(workers or available_cores(), max(total, 1)))
    # Small chunks keep every worker busy to the end; large enough that scheduling costs nothing.
    step = max(1, min(32, total // (workers * 8) or 1))
    chunks = [(split, i, min(i + step, n)) for split, n in sizes.items() for i in range(0, n, step)]
    start, last, done = time.perf_counter(), 0.0, 0

    def tick(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter() - start
        if progress is not None and (now - last >= every_s or done == total):
            last = now
            progress(done, total, now)

    if workers == 1:
        for split, a, b in chunks:
            _fill(datasets[split], a, b)
            tick(b - a)
    else:
        # fork: workers start at once and share the parent's imports (spawn re-imports torch in each).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                 initializer=_init_worker, initargs=(cfg, labels)) as pool:
            for n in pool.map(_run_chunk, *zip(*chunks)) if chunks else ():
                tick(n)
    seconds = time.perf_counter() - start
    return {"samples": sizes, "seconds": seconds, "workers": workers, "new_files": len(_entries(cache_dir) - before)}


def _entries(cache_dir: Path) -> set[Path]:
    return {p for p in cache_dir.rglob("*") if p.is_file()} if cache_dir.is_dir() else set()
