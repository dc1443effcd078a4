"""One dataset interface for every layout: a *source* knows the samples, the dataset
decodes, augments and returns tensors.

A source has `__len__`, `sample_id(i)`, `image_path(i)`, `original_size(i)`,
`load_mask(i)` (class map, uint8/uint16 [H, W]) and `has_masks`. Adding a layout
means writing a source and registering it in `seglab.data.SOURCES`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.errors import DataError

cv2.setNumThreads(0)  # DataLoader workers already parallelise; OpenCV threads would oversubscribe.

CACHE_VERSION = "2"


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


def _encode(array: np.ndarray, compress: bool) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    # zlib level 1: class maps shrink ~100x and decode ~8x faster than PNG.
    return zlib.compress(buf.getvalue(), 1) if compress else buf.getvalue()


def _decode(data: bytes, compress: bool) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(data) if compress else data), allow_pickle=False)


class ArrayCache:
    """Arrays on disk (one .npy file per sample, zlib-compressed or raw), keyed by
    everything that decides their content.

    Workers fill it lazily; writes are atomic, so concurrent workers or a killed run
    never leave a half-written file behind. A read-only or full cache only costs speed.
    """

    def __init__(self, cache_dir: Path, name: str, *key_parts: str, compress: bool = True):
        key = hashlib.sha1("|".join((CACHE_VERSION,) + key_parts).encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / name.split("/")[0] / f"{name.split('/')[-1]}-{key}"
        self.compress = compress

    def path(self, sample_id: str) -> Path:
        return self.dir / f"{hashlib.sha1(sample_id.encode()).hexdigest()[:20]}.npy{'.z' if self.compress else ''}"

    def get(self, sample_id: str, make) -> np.ndarray:
        path = self.path(sample_id)
        try:
            return _decode(path.read_bytes(), self.compress)
        except (OSError, ValueError, zlib.error):
            pass  # not cached yet (or a foreign/corrupt file): rebuild it
        array = make()
        try:
            atomic_write_bytes(path, _encode(array, self.compress))
        except OSError:
            pass
        return array


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_stamp(path: Path) -> str:
    """Size and mtime: a changed image file gets a new cache entry."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


class SegmentationDataset(Dataset):
    """Items: {"image": uint8 [3,H,W], "mask": [H,W] class map or [C,H,W] bool (if labelled), "id": str, "index": int}."""

    def __init__(self, source, transform, with_masks: bool = True, resized_cache: "ArrayCache | None" = None,
                 size: tuple[int, int] | None = None):
        if with_masks and not source.has_masks:
            raise DataError(f"{source.name}: split has no labels")
        self.source = source
        self.transform = transform
        self.with_masks = with_masks
        # With a resized cache the transform has no Resize: images and masks come pre-resized.
        self.resized_cache, self.size = resized_cache, size

    def __len__(self) -> int:
        return len(self.source)

    def _image(self, i: int) -> np.ndarray:
        if self.resized_cache is None:
            return self.source.load_image(i)
        key = f"image:{self.source.sample_id(i)}:{file_stamp(self.source.image_path(i))}"
        h, w = self.size
        return self.resized_cache.get(key, lambda: cv2.resize(self.source.load_image(i), (w, h), interpolation=cv2.INTER_LINEAR))

    def _mask(self, i: int) -> np.ndarray:
        if self.resized_cache is None:
            return self.source.load_mask(i)
        stamp = file_stamp(self.source.mask_path(i)) if hasattr(self.source, "mask_path") else ""
        return self.resized_cache.get(f"mask:{self.source.sample_id(i)}:{stamp}", lambda: self._resized_mask(i))

    def _resized_mask(self, i: int) -> np.ndarray:
        h, w = self.size
        mask = self.source.load_mask(i)
        if mask.ndim == 2:
            return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        # C x H x W booleans (multilabel): resize each channel, keep the layout
        return np.stack([cv2.resize(m.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in mask]).astype(bool)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # A training sampler sends (index, augmentation seed): the same image then gets the
        # same augmentation in any worker and in a resumed run (see seglab.data.resumable).
        i, aug_seed = key if isinstance(key, tuple) else (key, None)
        if aug_seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(aug_seed)
        image = self._image(i)
        item = {"id": self.source.sample_id(i), "index": i}
        if self.with_masks:
            mask = self._mask(i)
            multilabel = mask.ndim == 3  # C x H x W booleans; albumentations wants H x W x C
            if multilabel:
                mask = mask.transpose(1, 2, 0).view(np.uint8)
            out = self.transform(image=image, mask=mask)
            if multilabel:
                out["mask"] = out["mask"].transpose(2, 0, 1).astype(bool)
            item["mask"] = torch.from_numpy(np.ascontiguousarray(out["mask"]))
            if item["mask"].dtype == torch.uint16:
                item["mask"] = item["mask"].to(torch.int32)
        else:
            out = self.transform(image=image)
        item["image"] = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return item
