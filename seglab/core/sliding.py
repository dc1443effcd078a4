"""Sliding-window inference: predict a large image tile by tile and blend the overlaps.

Tiles of `tile` pixels step by `tile * (1 - overlap)`; the last tile in each direction
is moved back to end at the border, so every pixel is covered. Each tile's output is
weighted by a Gaussian centred on the tile (tile borders, where the model sees least
context, count least) or uniformly ("mean"), and the weighted sum is divided by the
summed weights. An image smaller than the tile is predicted whole.
"""

from __future__ import annotations

from typing import Callable

import torch

from seglab.config import SlidingWindowConfig


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets along one axis: regular steps, the last tile flush with the end."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_weights(h: int, w: int, blend: str = "gaussian", sigma: float = 0.125, device=None) -> torch.Tensor:
    """[h, w] weights, max 1, strictly positive (so every covered pixel gets a weight)."""
    if blend == "mean":
        return torch.ones(h, w, device=device)

    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (sigma * n)) ** 2)

    g = axis(h)[:, None] * axis(w)[None, :]
    g = g / g.max()
    return g.clamp(min=max(float(g[g > 0].min()), 1e-3))


@torch.no_grad()
def sliding_window(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tile: tuple[int, int],
                   overlap: float = 0.25, blend: str = "gaussian", sigma: float = 0.125, tiles_per_batch: int = 4) -> torch.Tensor:
    """`fn` ([N, 3, th, tw] -> [N, C, th, tw]) applied tile by tile to `images` [B, 3, H, W]."""
    b, _, h, w = images.shape
    th, tw = min(tile[0], h), min(tile[1], w)
    windows = [(y, x) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]
    weight = blend_weights(th, tw, blend, sigma, images.device)
    out = norm = None
    for k in range(0, len(windows), tiles_per_batch):
        chunk = windows[k : k + tiles_per_batch]
        crops = torch.cat([images[:, :, y : y + th, x : x + tw] for y, x in chunk])
        pred = fn(crops).float()
        if out is None:
            out = torch.zeros(b, pred.shape[1], h, w, device=pred.device)
            norm = torch.zeros(1, 1, h, w, device=pred.device)
        for j, (y, x) in enumerate(chunk):
            out[:, :, y : y + th, x : x + tw] += pred[j * b : (j + 1) * b] * weight
            norm[:, :, y : y + th, x : x + tw] += weight
    return out / norm


def sliding_window_from_config(fn, images: torch.Tensor, cfg: SlidingWindowConfig) -> torch.Tensor:
    return sliding_window(fn, images, cfg.tile, cfg.overlap, cfg.blend, cfg.sigma, cfg.tiles_per_batch)
