"""One dataset interface for every layout: a *source* knows the samples, the dataset
decodes, augments and returns tensors.

A source has `__len__`, `sample_id(i)`, `image_path(i)`, `original_size(i)`,
`load_mask(i)` (class map, uint8/uint16 [H, W]) and `has_masks`. Adding a layout
means writing a source and registering it in `seglab.data.SOURCES`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.errors import DataError

cv2.setNumThreads(0)  # DataLoader workers already parallelise; OpenCV threads would oversubscribe.

MASK_CACHE_VERSION = "1"


def read_image(path: Path, where: str, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]; grayscale is replicated to three channels."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        reason = "file not found" if not Path(path).exists() else "unreadable or truncated image"
        raise DataError(f"{where}: {reason}: {path}")
    if truncated_jpeg(path):  # OpenCV decodes a cut JPEG without error, greying the missing part
        raise DataError(f"{where}: truncated image (JPEG data ends early): {path}")
    if expect_hw is not None and img.shape[:2] != tuple(expect_hw):
        raise DataError(f"{where}: image is {img.shape[0]}x{img.shape[1]} but the record says {expect_hw[0]}x{expect_hw[1]}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def truncated_jpeg(path: Path) -> bool:
    """Whether a JPEG file lacks its end-of-image marker (checked on the last bytes only;
    a file with trailing bytes after the marker gets a full decode to decide)."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(max(0, os.fstat(f.fileno()).st_size - 32))
        if f.read().rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            return False
    return image_decode_problem(path) is not None


def image_decode_problem(path: Path) -> str | None:
    """Why the image cannot be fully decoded (truncated, corrupt), or None: a full decode with PIL."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {e}"
    return None


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEGLAB_CACHE", Path.home() / ".cache" / "seglab"))


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, array):
            raise OSError(f"could not write {tmp}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class MaskCache:
    """Class maps on disk, keyed by everything that decides their pixels.

    Workers fill it lazily; writes are atomic, so concurrent workers or a killed run
    never leave a half-written mask behind.
    """

    def __init__(self, cache_dir: Path, name: str, *key_parts: str):
        key = hashlib.sha1("|".join((MASK_CACHE_VERSION,) + key_parts).encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / "masks" / f"{name}-{key}"

    def path(self, sample_id: str) -> Path:
        safe = hashlib.sha1(sample_id.encode()).hexdigest()[:20]
        return self.dir / f"{safe}.png"

    def get(self, sample_id: str, make) -> np.ndarray:
        path = self.path(sample_id)
        if path.exists():
            mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if mask is not None:
                return mask
        mask = make()
        try:
            atomic_write_png(path, mask)
        except OSError:
            pass  # a read-only or full cache only costs speed, never correctness
        return mask


class SegmentationDataset(Dataset):
    """Items: {"image": uint8 [3,H,W], "mask": [H,W] (if labelled), "id": str, "index": int}."""

    def __init__(self, source, transform, with_masks: bool = True):
        if with_masks and not source.has_masks:
            raise DataError(f"{source.name}: split has no labels")
        self.source = source
        self.transform = transform
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # A training sampler sends (index, augmentation seed): the same image then gets the
        # same augmentation in any worker and in a resumed run (see seglab.data.resumable).
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        if aug_seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(aug_seed)
        image = self.source.load_image(i)
        item = {"id": self.source.sample_id(i), "index": i}
        if self.with_masks:
            mask = self.source.load_mask(i)
            out = self.transform(image=image, mask=mask)
            item["mask"] = torch.from_numpy(np.ascontiguousarray(out["mask"]))
            if item["mask"].dtype == torch.uint16:
                item["mask"] = item["mask"].to(torch.int32)
        else:
            out = self.transform(image=image)
        item["image"] = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return item
