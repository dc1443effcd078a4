"""Reading images: RGB uint8 arrays, truncated and corrupt files reported by name."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from seglab.errors import DataError

cv2.setNumThreads(0)  # DataLoader workers already parallelise; OpenCV threads would oversubscribe.

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def images_under(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, hidden files skipped), sorted."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"{where}: unreadable image {path}: {e}") from None


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
