"""Figures: class overlays, panels, grids, confusion matrices, per-class bars, learning
curves, and where they go (PNG files, every image logger).

Everything renders through matplotlib's Agg canvas into uint8 RGB arrays, so the same
image goes to a PNG file, TensorBoard, W&B or MLflow. No pyplot: it keeps global state
that breaks inside dataloader workers and DDP ranks.

torch and Lightning are imported only by the functions that need them: they take
seconds to import, and `seglab report`, `seglab runs` and `seglab viz gt` only draw.
"""

from __future__ import annotations

import colorsys
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

IGNORE_COLOR = (255, 255, 255)
ERROR_COLOR = (255, 0, 0)
# Per-class outcome codes and colours: TN, TP, FP (predicted, not in GT), FN (missed), ignore.
# Ignored is grey here, not white, so it stays visible against the white figure.
TN, TP, FP, FN, IGNORED = 0, 1, 2, 3, 4
OUTCOME_COLORS = np.array(
    [(25, 25, 25), (46, 204, 64), (255, 65, 54), (0, 116, 217), (170, 170, 170)], dtype=np.uint8
)


# 48 class colours as far apart as possible for the eye: picked greedily, each the colour
# farthest (CIELAB distance) from black (background), white and grey (ignored), the
# error-map red and all picked before, out of a 16-level RGB grid without greys. The first
# 30 stay more than 30 CIELAB units apart (tab10 + tab20 gave classes 10-11 lighter shades
# of classes 1-2). Fixed here, so a class keeps its colour across runs, reports and
# palette PNGs.
DISTINCT_COLORS = (
    (0, 0, 255), (0, 255, 0), (255, 51, 187), (255, 204, 0), (0, 119, 238), (34, 119, 0),
    (0, 255, 204), (136, 68, 0), (102, 34, 102), (255, 119, 136), (204, 238, 136), (238, 170, 255),
    (221, 17, 255), (0, 187, 255), (68, 17, 170), (255, 187, 119), (0, 102, 85), (187, 238, 0),
    (17, 85, 136), (255, 136, 0), (136, 0, 51), (0, 221, 102), (136, 136, 68), (0, 238, 255),
    (187, 102, 238), (238, 0, 68), (187, 119, 153), (153, 221, 187), (153, 170, 0), (34, 68, 0),
    (187, 136, 0), (0, 170, 119), (204, 68, 17), (204, 204, 255), (153, 102, 85), (238, 0, 119),
    (255, 187, 187), (51, 153, 170), (17, 51, 153), (136, 102, 187), (170, 0, 119), (0, 85, 255),
    (85, 187, 0), (102, 51, 68), (255, 119, 187), (221, 119, 85), (136, 17, 153), (238, 221, 170),
)


def class_palette(num_classes: int) -> np.ndarray:
    """[C, 3] uint8 colours: class 0 (background) black, then DISTINCT_COLORS (none grey or
    white, the colours of ignored pixels); past those, golden-ratio hue steps."""
    colors = [(0, 0, 0), *DISTINCT_COLORS]
    for i in range(num_classes - len(colors)):
        hue = (i * 0.618033988749895) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * ((i // 2) % 2))
        colors.append(tuple(round(255 * c) for c in rgb))
    return np.asarray(colors[:num_classes], dtype=np.uint8).reshape(-1, 3)


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """[H, W] class map -> [H, W, 3] uint8; ignored or out-of-range labels are white."""
    mask = np.asarray(mask)
    lut = np.vstack([palette, IGNORE_COLOR]).astype(np.uint8)
    valid = (mask >= 0) & (mask < len(palette))
    if ignore_index is not None:
        valid &= mask != ignore_index
    return lut[np.where(valid, mask, len(palette))]


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray,
            ignore_index: int | None = 255, alpha: float = 0.55) -> np.ndarray:
    """Blend the class colours over a grey copy of the image, so the colour a pixel shows
    is its class's (as in the legend), not a mix with the photo's own colour; background's
    black dims it, so objects pop."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    blend = (1 - alpha) * grey[..., None] + alpha * colorize(mask, palette, ignore_index)
    return (blend + 0.5).astype(np.uint8)


def error_mask(gt: np.ndarray, pred: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """Boolean [H, W]: wrong pixels; ignored GT pixels never count, as in the metric."""
    wrong = np.asarray(gt) != np.asarray(pred)
    if ignore_index is not None:
        wrong &= np.asarray(gt) != ignore_index
    return wrong


def error_map(image: np.ndarray, gt: np.ndarray, pred: np.ndarray,
              ignore_index: int | None = 255) -> np.ndarray:
    """Dimmed image with the wrong pixels in pure red."""
    out = (image.astype(np.float32) * 0.35).astype(np.uint8)
    out[error_mask(gt, pred, ignore_index)] = ERROR_COLOR
    return out


def class_pixel_stats(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                      ignore_index: int | None = 255) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (intersection, GT area, predicted area) in pixels, ignored GT pixels left out."""
    gt, pred = np.asarray(gt).ravel(), np.asarray(pred).ravel()
    valid = (gt >= 0) & (gt < num_classes)
    if ignore_index is not None:
        valid &= gt != ignore_index
    pred_ok = valid & (pred >= 0) & (pred < num_classes)
    inter = np.bincount(gt[valid & (gt == pred)], minlength=num_classes)
    return inter, np.bincount(gt[valid], minlength=num_classes), np.bincount(pred[pred_ok], minlength=num_classes)


def present_classes(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                    ignore_index: int | None = 255) -> list[int]:
    """Sorted class indices in the GT or the prediction, over non-ignored pixels."""
    _, area_gt, area_pred = class_pixel_stats(gt, pred, num_classes, ignore_index)
    return [int(c) for c in np.nonzero(area_gt + area_pred)[0]]


def class_outcomes(gt: np.ndarray, pred: np.ndarray, cls: int,
                   ignore_index: int | None = 255) -> np.ndarray:
    """uint8 [H, W] of TN/TP/FP/FN/IGNORED codes for one class."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    lut = np.array([TN, FP, FN, TP], dtype=np.uint8)   # index: 2 * in_gt + in_pred
    out = lut[2 * (gt == cls) + (pred == cls)]
    if ignore_index is not None:
        out[gt == ignore_index] = IGNORED
    return out


def _shrink(tile_px: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Stride big images down to about the tile size before any per-pixel drawing work."""
    h, w = arrays[0].shape[:2]
    step = max(1, min(w // tile_px, h // max(1, round(tile_px * h / w))))
    return [a[::step, ::step] for a in arrays]

# --- figures


def _render(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _class_name(class_names: Sequence[str], i: int) -> str:
    return class_names[i] if 0 <= i < len(class_names) else f"class {i}"


def _resize_nearest(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    rows = (np.arange(out_h) * image.shape[0] / out_h).astype(np.intp)
    cols = (np.arange(out_w) * image.shape[1] / out_w).astype(np.intp)
    return image[rows[:, None], cols]


def _tile_grid(tiles: Sequence[tuple[np.ndarray, str]], ncols: int, title: str = "",
               legend: tuple[Sequence, Sequence[str]] = ((), ()), tile_px: int = 300,
               caption_lines: int = 1) -> np.ndarray:
    """Images in a grid, each captioned, with a colour legend below.

    Tiles are pasted as pixels (figimage) rather than drawn in axes: a dozen axes cost
    about a second per figure, and this runs for every sample and worst image each epoch.
    """
    nrows = math.ceil(len(tiles) / ncols)
    h, w = tiles[0][0].shape[:2]
    tile_w, tile_h, gap, cap = tile_px, max(1, round(tile_px * h / w)), 8, 14 * caption_lines + 6
    colors, labels = legend
    legend_cols = max(1, min(len(labels), (ncols * tile_w) // 170))
    top, bottom = (40 if title else 4), 10 + 28 * math.ceil(len(labels) / legend_cols)
    fig_w, fig_h = ncols * tile_w + (ncols + 1) * gap, top + nrows * (tile_h + cap) + bottom
    fig = Figure(figsize=(fig_w / 100, fig_h / 100), dpi=100)
    for i, (tile, name) in enumerate(tiles):
        row, col = divmod(i, ncols)
        x, y = gap + col * (tile_w + gap), fig_h - top - (row + 1) * (tile_h + cap)
        fig.figimage(_resize_nearest(tile, tile_h, tile_w), xo=x, yo=y, origin="upper")
        fig.text((x + tile_w / 2) / fig_w, (y + tile_h + 3) / fig_h, name, ha="center",
                 va="bottom", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 8 / fig_h, va="top")
    if labels:
        handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="black", label=l)
                   for c, l in zip(colors, labels)]
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 2 / fig_h),
                   ncol=legend_cols, fontsize=8, frameon=False)
    return _render(fig)


def _class_legend(gt, pred, class_names, palette, ignore_index):
    present = present_classes(gt, pred, len(palette), ignore_index)
    return [palette[c] for c in present], [_class_name(class_names, c) for c in present]


def prediction_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                     class_names: Sequence[str], ignore_index: int | None = 255,
                     title: str = "", palette: np.ndarray | None = None, focus: int | None = None) -> np.ndarray:
    """One row: image | GT overlay | prediction overlay | error map, with a class legend;
    with `focus` (a class index) also that class's TP/FP/FN map."""
    palette = class_palette(len(class_names)) if palette is None else palette
    counted = gt.size if ignore_index is None else int((gt != ignore_index).sum())
    err_pct = 100.0 * error_mask(gt, pred, ignore_index).sum() / max(counted, 1)
    legend = _class_legend(gt, pred, class_names, palette, ignore_index)
    image, gt, pred = _shrink(300, image, gt, pred)
    tiles = [(image, "image"), (overlay(image, gt, palette, ignore_index), "ground truth"),
             (overlay(image, pred, palette, ignore_index), "prediction"),
             (error_map(image, gt, pred, ignore_index), f"errors ({err_pct:.1f}% of pixels)")]
    if focus is not None:
        outcome = OUTCOME_COLORS[class_outcomes(gt, pred, focus, ignore_index)]
        tiles.append((outcome, f"{_class_name(class_names, focus)}: TP green, FP red, FN blue"))
    return _tile_grid(tiles, len(tiles), title, legend, tile_px=300)


def prediction_only_panel(image: np.ndarray, pred: np.ndarray, class_names: Sequence[str], ignore_index: int | None = 255,
                          title: str = "", palette: np.ndarray | None = None) -> np.ndarray:
    """image | prediction overlay, with a class legend (an image without labels)."""
    palette = class_palette(len(class_names)) if palette is None else palette
    legend = _class_legend(pred, pred, class_names, palette, ignore_index)
    return _tile_grid([(image, "image"), (overlay(image, pred, palette, ignore_index), "prediction")], 2, title, legend,
                      tile_px=400)


def captioned_gallery(tiles: Sequence[tuple[np.ndarray, str]], title: str = "", ncols: int = 6) -> np.ndarray:
    """(image, caption of up to three lines) tiles as one grid."""
    return _tile_grid(tiles, min(ncols, len(tiles)), title, tile_px=184, caption_lines=3)


def per_class_panel(gt: np.ndarray, pred: np.ndarray, class_names: Sequence[str],
                    ignore_index: int | None = 255, title: str = "", ncols: int = 6) -> np.ndarray:
    """One TP/FP/FN map per class in the GT or prediction, titled with its IoU on this image."""
    inter, area_gt, area_pred = class_pixel_stats(gt, pred, len(class_names), ignore_index)
    small_gt, small_pred = _shrink(200, gt, pred)
    tiles = []
    for c in np.nonzero(area_gt + area_pred)[0]:
        iou = inter[c] / (area_gt[c] + area_pred[c] - inter[c])
        tiles.append((OUTCOME_COLORS[class_outcomes(small_gt, small_pred, c, ignore_index)],
                      f"{_class_name(class_names, c)}\nIoU {iou:.3f}"))
    if not tiles:
        tiles = [(OUTCOME_COLORS[np.full(small_gt.shape, IGNORED, np.uint8)], "no class present\n")]
    legend = (OUTCOME_COLORS[[TP, FP, FN, IGNORED]],
              ["correct (TP)", "predicted, not in GT (FP)", "missed (FN)", "ignored"])
    return _tile_grid(tiles, min(ncols, len(tiles)), title, legend, tile_px=200, caption_lines=2)


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str],
                            normalize: str | None = "true") -> np.ndarray:
    """Heat map, rows = ground truth; normalize: 'true' (rows), 'pred' (columns), 'all' or None."""
    cm = np.asarray(cm, dtype=np.float64)
    n = len(cm)
    sums = {"true": cm.sum(1, keepdims=True), "pred": cm.sum(0, keepdims=True), "all": cm.sum()}
    if normalize is not None:
        if normalize not in sums:
            raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, not {normalize!r}")
        # A class never seen in the GT has an empty row: show zeros, not NaN.
        cm = np.divide(cm, sums[normalize], out=np.zeros_like(cm), where=sums[normalize] > 0)
    names = [_class_name(class_names, i) for i in range(n)]
    side = max(5.0, 0.35 * n + 2.5)
    fig = Figure(figsize=(side + 1, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(cm.max(), 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix" + (f" (normalised over {normalize})" if normalize else ""))
    if n <= 20:
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                    fontsize=7, color="white" if v > 0.55 * vmax else "black")
    return _render(fig)


def _is_absent(v) -> bool:
    return v is None or math.isnan(float(v))


def per_class_bars(per_class_iou: Mapping[str, float | None], metric: str = "IoU") -> np.ndarray:
    """Horizontal bars per class; None/NaN (class in neither GT nor prediction) says 'absent'."""
    names = list(per_class_iou)
    values = [None if _is_absent(v) else float(v) for v in per_class_iou.values()]
    fig = Figure(figsize=(7, max(2.5, 0.32 * len(names) + 1.2)), dpi=100, layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y, [v or 0.0 for v in values], color="tab:blue")
    for yi, v in zip(y, values):
        ax.text((v or 0.0) + 0.01, yi, "absent" if v is None else f"{v:.3f}", va="center",
                fontsize=8, color="grey" if v is None else "black")
    known = [v for v in values if v is not None]
    if known:
        mean = float(np.mean(known))
        ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {metric} {mean:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel(metric)
    ax.set_title(f"per-class {metric}")
    return _render(fig)


def learning_curves(history: Sequence[Mapping], metrics: Sequence[str] = ()) -> np.ndarray:
    """Loss (train/val) and the validation `metrics` (the monitored one first; default: every
    score in the history) against epoch (or step when epochs repeat)."""
    fig = Figure(figsize=(11, 3.8), dpi=100, layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    epochs = [h.get("epoch") for h in history]
    by_epoch = None not in epochs and len(set(epochs)) == len(epochs)
    xkey = "epoch" if by_epoch else "step"

    def plot(ax, key, **style):
        pts = [(h.get(xkey), h.get(key)) for h in history]
        pts = [(x, v) for x, v in pts if x is not None and v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=key, **style)

    for key in ("train_loss", "val_loss"):
        plot(ax_loss, key)
    if not metrics:
        skip = {"epoch", "step", "train_loss", "val_loss", "lr", "images"}
        metrics = [k for k in dict.fromkeys(k for h in history for k in h)
                   if k not in skip and all(isinstance(h.get(k, 0.0), (int, float, type(None))) for h in history)]
    for key, style in zip(metrics, itertools.cycle(({}, {"linestyle": "--"}, {"linestyle": ":"}, {"linestyle": "-."}))):
        plot(ax_metric, key, **style)
    for ax, name in ((ax_loss, "loss"), (ax_metric, "validation metrics")):
        ax.set_title(name)
        ax.set_xlabel(xkey)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    return _render(fig)

# --- files, loggers and the Lightning callback


def safe_filename(text: str, max_len: int = 120) -> str:
    """Image ids like 'batch_01_vt/002.jpg' -> 'batch_01_vt_002.jpg', safe in any folder."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return name[:max_len] or "unnamed"


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, image)
    return path


def log_images(loggers: Iterable, images: Mapping[str, np.ndarray], step: int) -> None:
    """Send HWC uint8 images to every logger that takes images; others are skipped."""
    for logger in loggers:
        # Matched by class name so wandb/mlflow are never imported unless that logger is in use.
        kinds = {cls.__name__ for cls in type(logger).__mro__}
        for tag, img in images.items():
            if "WandbLogger" in kinds:
                logger.log_image(key=tag, images=[img], step=step)
            elif "MLFlowLogger" in kinds:
                logger.experiment.log_image(logger.run_id, img, artifact_file=f"{tag}.png")
            elif hasattr(getattr(logger, "experiment", None), "add_image"):
                logger.experiment.add_image(tag, img, step, dataformats="HWC")


def draw_ground_truth(samples: Iterable[tuple[str, np.ndarray, np.ndarray]], out_dir,
                      class_names: Sequence[str], ignore_index: int | None = 255,
                      palette: np.ndarray | None = None, limit: int | None = None) -> list[Path]:
    """One PNG per (image_id, image HxWx3 uint8, mask HxW): image | GT overlay + legend."""
    palette = class_palette(len(class_names)) if palette is None else palette
    out_dir, paths, used = Path(out_dir), [], set()
    for image_id, image, mask in itertools.islice(samples, limit):
        mask = np.asarray(mask)
        tiles = [(image, "image"), (overlay(image, mask, palette, ignore_index), "ground truth")]
        legend = _class_legend(mask, mask, class_names, palette, ignore_index)
        panel = _tile_grid(tiles, 2, str(image_id), legend, tile_px=400)
        paths.append(save_png(panel, out_dir / _unique(f"gt_{safe_filename(image_id)}", used)))
    return paths


def draw_augmented(samples: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], out_dir,
                   class_names: Sequence[str], ignore_index: int | None = 255,
                   palette: np.ndarray | None = None) -> list[Path]:
    """One PNG per (id, image, mask, augmented image, augmented mask):
    original with its mask | augmented image | augmented image with its mask, and a legend;
    original | augmented when there are no masks (image classification)."""
    palette = class_palette(len(class_names)) if palette is None else palette
    out_dir, paths, used = Path(out_dir), [], set()
    for k, (image_id, image, mask, aug_image, aug_mask) in enumerate(samples):
        if mask is None:
            panel = _tile_grid([(image, "original"), (aug_image, "augmented")], 2, str(image_id), tile_px=360)
            paths.append(save_png(panel, out_dir / _unique(f"aug_{k:03d}_{safe_filename(image_id)}", used)))
            continue
        legend = _class_legend(mask, aug_mask, class_names, palette, ignore_index)
        image, mask = _shrink(400, image, mask)
        aug_image, aug_mask = _shrink(400, aug_image, aug_mask)
        tiles = [(overlay(image, mask, palette, ignore_index), "original + mask"), (aug_image, "augmented"),
                 (overlay(aug_image, aug_mask, palette, ignore_index), "augmented + mask")]
        if aug_image.shape != image.shape:  # a crop or rescale changed the size: show each at its own scale
            tiles[0] = (_resize_nearest(tiles[0][0], *aug_image.shape[:2]), f"original + mask ({image.shape[1]}x{image.shape[0]})")
        panel = _tile_grid(tiles, 3, str(image_id), legend, tile_px=360)
        paths.append(save_png(panel, out_dir / _unique(f"aug_{k:03d}_{safe_filename(image_id)}", used)))
    return paths


def _unique(stem: str, used: set[str]) -> str:
    """File name not yet used in this folder: different ids can sanitise to the same name.
    An image id's own extension is dropped (`gt_x.png`, never `gt_x.png.png`)."""
    stem = re.sub(r"\.(png|jpe?g|bmp|tiff?|webp|gif)$", "", stem, flags=re.IGNORECASE)
    name, n = f"{stem}.png", 2
    while name in used:
        name, n = f"{stem}_{n}.png", n + 1
    used.add(name)
    return name
