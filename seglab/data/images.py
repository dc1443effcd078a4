"""Reading images and label maps: the one decoding path of training, validation and
inference. Truncated and corrupt files are reported by name.

EXIF orientation is applied (PIL's `ImageOps.exif_transpose`) to images *and* label
maps alike, and sizes are reported after it: a phone photo whose pixels are stored
sideways is seen upright, with its mask turned the same way (or found to disagree).
A palette ('P') label PNG is read as its indices, which are the class values (the
palette only colours them for people); an RGB label PNG holds colours, not classes,
and is an error.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np

from seglab.errors import DataError

cv2.setNumThreads(0)  # DataLoader workers already parallelise; OpenCV threads would oversubscribe.


def _keep_decoding_memory() -> None:
    """Pillow returns every decoded image's memory to the system by default (its
    PILLOW_BLOCKS_MAX is 0), so each decode page-faults fresh memory; keeping up to four
    16 MB blocks for reuse reads 640 px JPEGs about 1.4x faster (benchmarks/README.md,
    image decoding). A PILLOW_BLOCKS_MAX the user sets wins."""
    if "PILLOW_BLOCKS_MAX" not in os.environ:
        from PIL import Image

        Image.core.set_blocks_max(4)


_keep_decoding_memory()

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def images_under(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, hidden files skipped), sorted."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))


EXIF_ORIENTATION = 0x0112
TRANSPOSING = (5, 6, 7, 8)  # orientations that swap height and width
LABEL_MODES = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I")  # one value per pixel


def png_has_exif(path) -> bool:
    """Whether a PNG file holds an eXIf chunk, from its chunk headers alone. PIL decodes the
    whole image to look for one (it may follow the pixel data): 23 ms for a 2048 px PNG,
    against well under 1 ms to step over the chunks."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return True  # not a PNG after all: let PIL decide
        while True:
            head = f.read(8)
            if len(head) < 8 or head[4:] == b"IEND":
                return False
            if head[4:] == b"eXIf":
                return True
            f.seek(int.from_bytes(head[:4], "big") + 4, os.SEEK_CUR)  # the data and its CRC


def header_size(im) -> tuple[int, int]:
    """(height, width) as seen after EXIF orientation, from an open PIL image's header."""
    w, h = im.size
    if im.format == "PNG" and getattr(im, "filename", None) and not png_has_exif(im.filename):
        return (h, w)
    try:
        turned = im.getexif().get(EXIF_ORIENTATION) in TRANSPOSING
    except Exception:  # a broken EXIF block: PIL's exif_transpose ignores it too
        turned = False
    return (w, h) if turned else (h, w)


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(height, width) from the file (after EXIF orientation).

    Remembered per file version (path, inode, size, mtime, ctime: ctime changes with any
    write and cannot be set back, unlike mtime): a PNG's EXIF block may follow its pixel
    data, so PIL decodes the whole image to find it, and a training epoch asks for the size
    of every image again (a 2048 px PNG: about 25 ms each time)."""
    try:
        stat = os.stat(path)
    except OSError as e:
        raise DataError(f"{where}: unreadable image {path}: {e.strerror}") from None
    try:
        return _remembered_size(str(path), (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"{where}: unreadable image {path}: {e}") from None


@functools.lru_cache(maxsize=65536)
def _remembered_size(path: str, version: tuple) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return header_size(im)


def _decode(path: Path, where: str, what: str):
    """The upright PIL image (EXIF orientation applied), fully decoded."""
    from PIL import Image, ImageOps

    if not Path(path).is_file():
        raise DataError(f"{where}: {what} file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # a copy otherwise, even when upright
            return im
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"{where}: unreadable or truncated {what} {path}: {type(e).__name__}: {str(e)[:120]}") from None


def read_image(path: Path, where: str, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3], upright; grayscale is replicated to three channels."""
    if not Path(path).is_file():
        raise DataError(f"{where}: file not found: {path}")
    if truncated_jpeg(path):  # decoders fill a cut JPEG with grey rather than fail
        raise DataError(f"{where}: truncated image (JPEG data ends early): {path}")
    im = _decode(path, where, "image")
    # Grey and RGB skip PIL's convert: it and the copy out of PIL doubled the cost of a
    # 2048 px grey PNG (48 ms against 24 ms; benchmarks/fullres.py).
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit: keep the high byte, as OpenCV does
        array = (np.asarray(im).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    elif im.mode == "L":
        array = cv2.cvtColor(np.asarray(im), cv2.COLOR_GRAY2RGB)
    elif im.mode == "RGB":
        array = np.asarray(im)
    else:
        array = np.asarray(im.convert("RGB"))
    if expect_hw is not None and array.shape[:2] != tuple(expect_hw):
        raise DataError(f"{where}: image is {array.shape[0]}x{array.shape[1]} but the record says {expect_hw[0]}x{expect_hw[1]}")
    return np.ascontiguousarray(array)


def read_label_map(path: Path, where: str, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A label PNG as [H, W] integers (uint8 or uint16), upright like its image. A palette PNG
    gives its indices; RGB or grey+alpha files are refused (colours are not class values);
    a size other than the image's is an error, never resized to fit."""
    im = _decode(path, where, "label")
    if im.mode not in LABEL_MODES:
        hint = " (colours, not class indices)" if im.mode in ("RGB", "RGBA", "CMYK", "YCbCr") else ""
        raise DataError(f"{path}: label map is a {im.mode} image{hint}; expected one class value per pixel "
                        "(8- or 16-bit greyscale, or a palette PNG whose indices are the classes)")
    array = np.asarray(im)
    array = array.astype(np.uint8) if array.dtype == bool else array
    if array.dtype not in (np.uint8, np.uint16):
        if array.min() < 0 or array.max() > 65535:
            raise DataError(f"{path}: label values {int(array.min())}..{int(array.max())} do not fit 16 bits")
        array = array.astype(np.uint16)
    if expect_hw is not None and array.shape[:2] != tuple(expect_hw):
        raise DataError(f"{path}: label map is {array.shape[0]}x{array.shape[1]} but its image is "
                        f"{expect_hw[0]}x{expect_hw[1]}; a label map must match its image pixel for pixel")
    return np.ascontiguousarray(array)


def label_header_problem(path: Path, image_hw: tuple[int, int]) -> str | None:
    """What the header of a label PNG already says is wrong (mode, size), without decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode, hw = im.mode, header_size(im)
    except Exception as e:  # PIL raises many types for broken files
        return f"unreadable label file {path}: {e}"
    if mode not in LABEL_MODES:
        return f"{path}: label map is a {mode} image; expected one class value per pixel (greyscale or palette indices)"
    if hw != tuple(image_hw):
        return f"{path}: label map is {hw[0]}x{hw[1]} but its image is {image_hw[0]}x{image_hw[1]}"
    return None


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
