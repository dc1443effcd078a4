"""Multi-label masks (C x H x W booleans): a compact on-disk cache, used for COCO
multi-label masks (whether rasterising COCO annotations at load would pay, as it does for
polygon JSON, has not been measured).

A 29 x 2048 x 2048 mask is 121 MB as bytes; bit-packed (np.packbits) and compressed
in an .npz it is a few hundred KB. Reading one back takes about 38 ms on one core: more
than parsing and rasterising 29 simple polygons (5 to 12 ms), which is why per-image
polygon JSON is rasterised at load instead (benchmarks/README.md, full-resolution
section). The cache is keyed by the label file's content, so editing a label file, the
class list or the remap invalidates exactly the masks it changes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from seglab.data.cache import DECODING, atomic_write_bytes

BITMASK_CACHE_VERSION = "1"


def pack(mask: np.ndarray) -> bytes:
    """C x H x W booleans -> compressed .npz bytes (bit-packed along W)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, bits=np.packbits(mask.astype(bool), axis=-1), shape=np.array(mask.shape, np.int64))
    return buf.getvalue()


def unpack(data: bytes | Path) -> np.ndarray:
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data) as z:
        shape = tuple(int(v) for v in z["shape"])
        # unpackbits gives 0/1 bytes: viewed as booleans, not copied (121 MB for 29 x 2048 x 2048).
        return np.unpackbits(z["bits"], axis=-1, count=shape[-1]).view(bool).reshape(shape)


class BitmaskCache:
    """C x H x W boolean masks on disk, one .npz per (sample, label-file content).

    Writes are atomic (temporary file + rename), so concurrent DataLoader workers and
    killed runs never leave a torn file; an unreadable entry is simply rebuilt.
    """

    def __init__(self, cache_dir: Path, name: str, *key_parts: str):
        key = hashlib.sha1("|".join((BITMASK_CACHE_VERSION, DECODING) + tuple(map(str, key_parts))).encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / "bitmasks" / f"{name}-{key}"

    def path(self, sample_id: str, content_key: str = "") -> Path:
        safe = hashlib.sha1(f"{sample_id}|{content_key}".encode()).hexdigest()[:24]
        return self.dir / f"{safe}.npz"

    def get(self, sample_id: str, make, content_key: str = "") -> np.ndarray:
        path = self.path(sample_id, content_key)
        if path.exists():
            try:
                return unpack(path)
            except Exception:  # torn or foreign file: rebuild it
                pass
        mask = make()
        try:
            atomic_write_bytes(path, pack(mask))
        except OSError:
            pass  # a read-only or full cache only costs speed, never correctness
        return mask
