"""Painting annotations into pixels, for every layout that has annotations (COCO, polygon
JSON): one annotation's mask (COCO polygons or RLE, point polygons), the order in which
overlapping annotations are painted (`data.paint_order`), the class map and the object ids
painted from them, and a mask written back as COCO RLE (pseudo-labels, results files).

A *layer* is one annotation as (boolean [H, W] mask, class index); layers are painted in
order, so a later one wins the pixels it shares with an earlier one.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

PAINT_ORDERS = ("area_desc", "annotation_order", "class_index")


def annotation_mask(seg, height: int, width: int) -> np.ndarray:
    """One COCO `segmentation` (polygon list, uncompressed or compressed RLE) as a boolean [H, W] mask."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
    return mask_utils.decode(rle).astype(bool)


def fill_polygon(canvas: np.ndarray, points: np.ndarray) -> None:
    """Set the pixels of one polygon (int32 [N, 2] x, y points) to 1 in a uint8 [H, W] canvas."""
    cv2.fillPoly(canvas, [points], 1)


def polygon_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One polygon (int32 [N, 2] x, y points) as a boolean [H, W] mask."""
    canvas = np.zeros(size, np.uint8)
    fill_polygon(canvas, points)
    return canvas.view(bool)


def paint_sequence(masks: list[np.ndarray], classes: list[int], order: str) -> list[int]:
    """Indices of the annotations in the order they are painted; later ones win overlapping pixels."""
    idx = list(range(len(masks)))
    if order == "area_desc":
        # Large first, so small objects lying on large ones stay visible (the common fix).
        areas = [int(m.sum()) for m in masks]
        return sorted(idx, key=lambda i: -areas[i])
    if order == "class_index":  # the higher class index wins
        return sorted(idx, key=lambda i: classes[i])
    if order == "annotation_order":
        return idx
    raise ValueError(f"unknown paint order {order!r}")


def ordered_layers(masks: list[np.ndarray], classes: list[int], order: str) -> list[tuple[np.ndarray, int]]:
    """(mask, class) layers in paint order."""
    return [(masks[k], classes[k]) for k in paint_sequence(masks, classes, order)]


def mask_dtype(labels):
    """The smallest unsigned type that holds every class index and the ignore index."""
    return np.uint8 if max(labels.ignore_index, labels.num_classes - 1) <= 255 else np.uint16


def paint_classes(size: tuple[int, int], layers: list, labels) -> np.ndarray:
    """The class map of painted (mask, class) layers: background 0, one class per pixel."""
    out = np.zeros(size, dtype=mask_dtype(labels))
    for mask, cls in layers:
        out[mask] = cls
    return out


def paint_instances(size: tuple[int, int], layers: list) -> np.ndarray:
    """The same layers as object ids (uint16, 0 = none; the k-th painted object is k): each
    pixel names the object its class-map pixel came from."""
    out = np.zeros(size, dtype=np.uint16)
    for k, (mask, _) in enumerate(layers, start=1):
        out[mask] = min(k, 65535)
    return out


def coco_rle(mask: np.ndarray) -> tuple[dict, list[float]]:
    """A boolean [H, W] mask as a COCO compressed RLE `segmentation` (counts as text) and its bbox [x, y, w, h]."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}, bbox
