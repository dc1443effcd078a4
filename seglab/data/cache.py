"""On-disk caches of decoded arrays (rasterised masks, resized images), keyed by
everything that decides their content, written atomically."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from seglab.io import new_file_mode

CACHE_VERSION = "2"
# How files become arrays is part of every key: arrays decoded by an older rule (before EXIF
# orientation was applied to images and label maps alike) are never served again.
DECODING = "pil-exif-transpose"
# Besides this, each source keys its caches on the label spec, the paint order, the label
# files' content and the data.corrections file's content (`Corrections.cache_part()`).


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEGLAB_CACHE", Path.home() / ".cache" / "seglab"))


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    new_file_mode(fd)  # submissions are PNGs too: the user's umask, not mkstemp's 0600
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
        key = hashlib.sha1("|".join((CACHE_VERSION, DECODING) + tuple(map(str, key_parts))).encode()).hexdigest()[:16]
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
    new_file_mode(fd)
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


def file_digest(path: Path) -> str:
    """The content hash of a (small) label file: an edit is seen even when it keeps the
    size and lands within the file system's mtime resolution, or when the mtime is restored."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
