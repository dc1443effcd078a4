"""After each validation of a multi-label task (C x H x W boolean masks, classes overlap):
per-class ground truth / prediction / TP-FP-FN panels, an all-classes outline overlay, the
worst images per class by that class's Dice, per-class Dice bars and a per-class
over/under-segmentation figure (predicted vs true area), as PNGs under
RUN_DIR/viz/epoch_NNN/ and in every image logger.

Classes overlap, so one colour per pixel (the class-map panels) cannot show them: every
class gets its own tile, and the outline overlay draws each class's border in its colour.
The files it writes are listed with their report sections in `sections.json` beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from seglab.io import write_json
from seglab.visualization.class_maps import WorstImages, _to_uint8_hwc
from seglab.visualization.epoch_figures import EpochFigureHooks, Figures, lazy_callback
from seglab.visualization.figures import (FN, FP, OUTCOME_COLORS, TN, TP, _render, _shrink, _tile_grid, class_palette,
                                          per_class_bars, safe_filename)

SECTIONS_FILE = "sections.json"
PANEL_PX = 240  # stored crops are shrunk to this: C*k full-size 2048 px masks would be gigabytes


# --- pure drawing (numpy in, RGB uint8 out)


def binary_outcomes(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """uint8 [H, W] TN/TP/FP/FN codes of one class's boolean masks."""
    lut = np.array([TN, FP, FN, TP], dtype=np.uint8)   # index: 2 * in_gt + in_pred
    return lut[2 * gt.astype(np.intp) + pred.astype(np.intp)]


def _grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def mask_overlay(image: np.ndarray, mask: np.ndarray, color, alpha: float = 0.6) -> np.ndarray:
    """The class's pixels in its colour over a dimmed grey copy of the image."""
    grey = _grey(image)[..., None] * 0.6
    out = np.repeat(grey, 3, axis=2)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return (out + 0.5).astype(np.uint8)


def outcome_overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """TP green, FP red, FN blue over the dimmed image; true negatives show the image."""
    codes = binary_outcomes(gt, pred)
    out = np.repeat(_grey(image)[..., None] * 0.6, 3, axis=2)
    hit = codes != TN
    out[hit] = (1 - alpha) * out[hit] + alpha * OUTCOME_COLORS[codes[hit]].astype(np.float32)
    return (out + 0.5).astype(np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the image border counts as outside)."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~inner


def outline_overlay(image: np.ndarray, masks: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Every class's border in its colour over the grey image (overlaps stay visible)."""
    out = np.repeat((_grey(image) * 0.8 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    for c, mask in enumerate(masks):
        out[boundary(mask)] = palette[c]
    return out


def class_palette_no_background(num_classes: int) -> np.ndarray:
    """[C, 3] colours for C overlapping classes (no black Background entry)."""
    return class_palette(num_classes + 1)[1:]


def per_class_mask_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, class_names: Sequence[str],
                         title: str = "", ncols: int = 6, dice: Sequence[float] | None = None) -> np.ndarray:
    """One TP/FP/FN tile per class present in the GT or prediction, captioned with its Dice
    (`dice`, e.g. computed at full size before the masks were shrunk, else from these masks)."""
    from seglab.metrics.dice import DICE_EPS

    tiles = []
    small = _shrink(200, image, *gt, *pred)
    c_count = len(class_names)
    image_s, gt_s, pred_s = small[0], small[1 : 1 + c_count], small[1 + c_count :]
    for c, name in enumerate(class_names):
        if not (gt[c].any() or pred[c].any()):
            continue
        if dice is None:
            inter = int((gt[c] & pred[c]).sum())
            value = (2 * inter + DICE_EPS) / (int(gt[c].sum()) + int(pred[c].sum()) + DICE_EPS)
        else:
            value = float(dice[c])
        tiles.append((outcome_overlay(image_s, gt_s[c], pred_s[c]), f"{name}\nDice {value:.3f}"))
    if not tiles:
        tiles = [(image_s, "no class in GT or prediction\n")]
    legend = (OUTCOME_COLORS[[TP, FP, FN]], ["correct (TP)", "predicted, not in GT (FP)", "missed (FN)"])
    return _tile_grid(tiles, min(ncols, len(tiles)), title, legend, tile_px=200, caption_lines=2)


def outline_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, class_names: Sequence[str],
                  palette: np.ndarray, title: str = "") -> np.ndarray:
    """image | ground-truth outlines | predicted outlines, every class in its colour."""
    image_s, *small = _shrink(400, image, *gt, *pred)
    c = len(class_names)
    gt_s, pred_s = np.stack(small[:c]), np.stack(small[c:])
    present = [i for i in range(c) if gt[i].any() or pred[i].any()]
    tiles = [(image_s, "image"), (outline_overlay(image_s, gt_s, palette), "ground truth (outlines)"),
             (outline_overlay(image_s, pred_s, palette), "prediction (outlines)")]
    return _tile_grid(tiles, 3, title, ([palette[i] for i in present], [class_names[i] for i in present]), tile_px=400)


def class_case_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, color, title: str = "") -> np.ndarray:
    """One class on one image: ground truth | prediction | TP/FP/FN."""
    tiles = [(mask_overlay(image, gt, color), "ground truth"), (mask_overlay(image, pred, color), "prediction"),
             (outcome_overlay(image, gt, pred), "TP / FP / FN")]
    legend = (OUTCOME_COLORS[[TP, FP, FN]], ["correct (TP)", "predicted, not in GT (FP)", "missed (FN)"])
    return _tile_grid(tiles, 3, title, legend, tile_px=PANEL_PX)


def area_ratio_figure(pred_area: Sequence[float], true_area: Sequence[float], class_names: Sequence[str]) -> np.ndarray:
    """Per class, predicted area / true area over the validation set (1 = right size;
    above = over-segmented, below = under-segmented), on a log scale."""
    from matplotlib.figure import Figure

    pred_area, true_area = np.asarray(pred_area, np.float64), np.asarray(true_area, np.float64)
    ratio = np.divide(pred_area, true_area, out=np.full_like(pred_area, np.nan), where=true_area > 0)
    fig = Figure(figsize=(7, max(2.5, 0.32 * len(class_names) + 1.4)), dpi=100, layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(class_names))
    shown = np.where(np.isnan(ratio), 1.0, np.clip(ratio, 1e-3, 1e3))
    colors = ["tab:red" if r > 1 else "tab:blue" for r in shown]
    ax.barh(y, shown - 1, left=1, color=colors)
    # Symmetric about 1 on the log scale: half the area and twice the area look equally wrong.
    span = max(2.0, float(np.max(np.maximum(shown, 1 / shown)))) * 1.6
    for yi, r, p, s in zip(y, ratio, pred_area, shown):
        text = ("no true pixels" + (f", {int(p)} predicted" if p else "")) if np.isnan(r) else f"{r:.2f}x"
        ax.text(max(s, 1.0) * 1.03, yi, text, va="center", fontsize=8, color="grey" if np.isnan(r) else "black")
    ax.axvline(1, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(1 / span, span)
    ax.set_yticks(y, class_names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("predicted area / true area (red: over-segmented, blue: under-segmented)")
    ax.set_title("per-class over/under-segmentation")
    return _render(fig)


# --- the callback


class _BinaryMaskVisualizerHooks(EpochFigureHooks):
    """The Lightning hooks; validation_step returns {"pred": bool [B, C, H, W]}, the batch is
    {"image": [B, 3, H, W], "target": [B, C, H, W], "id": [str]}. When and where it draws:
    `EpochFigureHooks`; it also writes sections.json (the report's index)."""

    def __init__(self, run_dir, class_names: Sequence[str], every_n_epochs: int = 1, num_samples: int = 4,
                 worst_k: int = 3, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(run_dir, class_names, every_n_epochs, num_samples, worst_k, mean, std)
        self.palette = class_palette_no_background(len(self.class_names))

    def _reset(self) -> None:
        c = len(self.class_names)
        self._worst = WorstImages(c, self.worst_k)
        self._samples: dict[str, tuple] = {}
        self._crops: dict[str, tuple] = {}
        self._areas = np.zeros((2, c), np.float64)  # predicted, true pixels per class

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        from seglab.metrics.dice import dice_per_image

        if dataloader_idx != 0 or not self._active(trainer):
            return
        pred = outputs.get("pred") if isinstance(outputs, Mapping) else outputs
        if getattr(pred, "dim", lambda: 0)() != 4:
            raise TypeError("the multi-label visualizer needs validation_step to return "
                            f"{{'pred': bool tensor [B, C, H, W]}}, got {type(outputs).__name__}")
        gt, pred, ids = batch["target"].bool(), pred.bool(), [str(i) for i in batch["id"]]
        dice = dice_per_image(pred, gt)
        # An image counts for a class where the class is in its GT or its prediction (an
        # empty-empty pair scores 1 and is never a failure worth showing).
        seen = (gt.flatten(2).any(-1) | pred.flatten(2).any(-1)).double()
        self._worst.update(ids, (dice * seen).cpu(), seen.cpu())
        self._areas += np.stack([pred.flatten(2).sum(-1).sum(0).cpu().numpy(), gt.flatten(2).sum(-1).sum(0).cpu().numpy()])
        self._pick_samples(ids)
        held = self._worst.held_ids()
        for i, image_id in enumerate(ids):
            if image_id in held or image_id in self._sample_ids:
                image = _to_uint8_hwc(batch["image"][i], self.mean, self.std)
                g, p = gt[i].cpu().numpy(), pred[i].cpu().numpy()
                if image_id in self._sample_ids:
                    # Kept at the outline panel's resolution, with the full-size Dice: 29 classes of
                    # 2048 px masks are 242 MB per sample.
                    image_s, *small = _shrink(400, image, *g, *p)
                    c = len(self.class_names)
                    self._samples[image_id] = (image_s, np.stack(small[:c]), np.stack(small[c:]), dice[i].cpu().tolist())
                if image_id in held:
                    image_s, *small = _shrink(PANEL_PX, image, *g, *p)
                    c = len(self.class_names)
                    # Bit-packed: 29 classes of 240 px masks cost 0.4 MB per held image.
                    self._crops[image_id] = (image_s, np.packbits(np.stack(small[:c])), np.packbits(np.stack(small[c:])),
                                             (c, *image_s.shape[:2]))
        self._crops = {k: v for k, v in self._crops.items() if k in held}

    def write_index(self, out_dir: Path, files: dict[str, list[str]]) -> None:
        write_json(out_dir / SECTIONS_FILE, {"sections": files, "worst": self.worst_lists()})

    def worst_lists(self) -> dict[str, list[dict]]:
        """{class: [{"id", "dice"}, ...]} lowest Dice first: what the worst panels show."""
        return {name: [{"id": i, "dice": round(float(d), 6)} for d, i in self._worst.worst(c)]
                for c, name in enumerate(self.class_names)}

    def _unpack(self, image_id: str):
        image, gt, pred, shape = self._crops[image_id]
        n = int(np.prod(shape))
        return image, np.unpackbits(gt)[:n].reshape(shape).astype(bool), np.unpackbits(pred)[:n].reshape(shape).astype(bool)

    def draw(self, val_result: Mapping | None) -> tuple[Figures, dict[str, str]]:
        """({logger tag: (file stem, image)}, {logger tag: report section})."""
        names, figures, sections = self.class_names, {}, {}

        def add(tag, stem, image, section):
            figures[tag], sections[tag] = (stem, image), section

        for image_id in self._sample_ids:
            if image_id not in self._samples:
                continue
            image, gt, pred, dice = self._samples[image_id]
            stem = safe_filename(image_id)
            add(f"val_samples/{image_id}", f"sample_{stem}", outline_panel(image, gt, pred, names, self.palette, image_id),
                "Fixed samples: every class's outline")
            add(f"val_per_class/{image_id}", f"per_class_{stem}", per_class_mask_panel(image, gt, pred, names, image_id, dice=dice),
                "Fixed samples: each class on its own (TP / FP / FN)")
        for c, name in enumerate(names):
            for rank, (dice, image_id) in enumerate(self._worst.worst(c), start=1):
                image, gt, pred = self._unpack(image_id)
                panel = class_case_panel(image, gt[c], pred[c], self.palette[c],
                                         f"worst #{rank} for {name}: Dice {dice:.3f} ({image_id})")
                add(f"val_worst/{name}/{rank}", f"worst_{safe_filename(name)}_{rank}", panel, "Worst images per class")
        if val_result and val_result.get("per_class_dice") is not None:
            add("val/per_class_dice", "per_class_dice", per_class_bars(val_result["per_class_dice"], metric="Dice"),
                "Per-class Dice")
        if self._areas[1].any() or self._areas[0].any():
            add("val/area_ratio", "area_ratio", area_ratio_figure(self._areas[0], self._areas[1], names),
                "Over/under-segmentation per class (predicted vs true area)")
        return figures, sections


__getattr__ = lazy_callback(globals(), _BinaryMaskVisualizerHooks, "BinaryMaskVisualizer")
