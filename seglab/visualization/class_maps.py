"""After each validation of a class-map task: fixed sample panels, the worst images per
class, the confusion matrix and per-class IoU, as PNGs under RUN_DIR/viz/epoch_NNN/ and in
every image logger."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from seglab.visualization.epoch_figures import EpochFigureHooks, Figures, lazy_callback
from seglab.visualization.figures import (_shrink, class_palette, confusion_matrix_figure, per_class_bars, per_class_panel,
                                          prediction_panel, safe_filename)


# --- worst images per class


def per_image_class_iou(gt, pred, num_classes: int, ignore_index: int | None = 255):
    """Per image and class (intersection, union) pixel counts: int64 tensors [B, C] on gt's device."""
    import torch

    b = gt.shape[0]
    gt, pred = gt.reshape(b, -1).long(), pred.reshape(b, -1).long()
    valid = (gt >= 0) & (gt < num_classes)
    if ignore_index is not None:
        valid &= gt != ignore_index
    offset = torch.arange(b, device=gt.device).unsqueeze(1) * num_classes
    size = b * num_classes

    def count(labels, keep):
        return torch.bincount((labels + offset)[keep], minlength=size).reshape(b, num_classes)

    pred_ok = valid & (pred >= 0) & (pred < num_classes)
    inter = count(gt, valid & (gt == pred))
    union = count(gt, valid) + count(pred, pred_ok) - inter
    return inter, union


class WorstImages:
    """Per class, the k images with the lowest IoU among those where the class occurs.

    One bounded max-heap per class (memory O(C*k) whatever the validation size); on equal
    IoU the image seen first is kept, so the selection is reproducible.
    """

    def __init__(self, num_classes: int, k: int):
        self.num_classes, self.k = num_classes, k
        self._heaps: list[list[tuple[float, int, str]]] = [[] for _ in range(num_classes)]
        self._seq = itertools.count()

    def update(self, image_ids: Sequence[str], inter, union) -> None:
        """inter/union: [B, C] counts (tensors on any device, or arrays) for these images."""
        inter, union = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
                        for x in (inter, union))
        for b, c in zip(*np.nonzero(union > 0)):
            iou, seq = inter[b, c] / union[b, c], next(self._seq)
            heap = self._heaps[c]
            # Stored as (-iou, -seq): the heap top is the best-scoring, latest-seen entry,
            # which is the first to give way to a worse image.
            if len(heap) < self.k:
                heapq.heappush(heap, (-iou, -seq, str(image_ids[b])))
            elif iou < -heap[0][0]:
                heapq.heapreplace(heap, (-iou, -seq, str(image_ids[b])))

    def worst(self, class_index: int) -> list[tuple[float, str]]:
        """[(iou, image_id)], lowest IoU first."""
        entries = sorted(self._heaps[class_index], key=lambda e: (-e[0], -e[1]))
        return [(-neg_iou, image_id) for neg_iou, _, image_id in entries]

    def held_ids(self) -> set[str]:
        return {image_id for heap in self._heaps for _, _, image_id in heap}

def _to_uint8_hwc(image, mean, std) -> np.ndarray:
    """[3, H, W] tensor -> HxWx3 uint8; float images are un-normalised with mean/std (0-1 units)."""
    import torch

    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = image.float()
        if mean is not None and std is not None:
            image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
        image = (image * 255).round().clamp(0, 255).to(torch.uint8)
    return image.permute(1, 2, 0).numpy()


class _ValidationVisualizerHooks(EpochFigureHooks):
    """After each validation: fixed sample panels, the worst images per class, the confusion
    matrix and per-class IoU, as PNGs under RUN_DIR/viz/epoch_NNN/ and in every image logger.

    The LightningModule's validation_step returns {"pred": int [B, H, W]}; the batch is
    {"image": [B, 3, H, W], "target": [B, H, W], "id": [str]}. When and where it draws:
    `EpochFigureHooks`.
    """

    def __init__(self, run_dir, class_names: Sequence[str], ignore_index: int | None = 255,
                 every_n_epochs: int = 1, num_samples: int = 4, worst_k: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        self.ignore_index = ignore_index
        super().__init__(run_dir, class_names, every_n_epochs, num_samples, worst_k, mean, std)
        self.palette = class_palette(len(self.class_names))

    def _reset(self) -> None:
        self._worst = WorstImages(len(self.class_names), self.worst_k)
        self._samples: dict[str, tuple] = {}
        self._crops: dict[str, tuple] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx: int = 0) -> None:
        if dataloader_idx != 0 or not self._active(trainer):
            return
        import torch

        pred = outputs.get("pred") if isinstance(outputs, Mapping) else outputs
        if not torch.is_tensor(pred):
            # Fails on the first validation batch, not after hours of training.
            raise TypeError("ValidationVisualizer needs validation_step to return "
                            f"{{'pred': int tensor [B, H, W]}}, got {type(outputs).__name__}")
        gt, ids = batch["target"], [str(i) for i in batch["id"]]
        inter, union = per_image_class_iou(gt, pred, len(self.class_names), self.ignore_index)
        self._worst.update(ids, inter, union)
        self._pick_samples(ids)
        held = self._worst.held_ids()
        for i, image_id in enumerate(ids):
            if image_id in held or image_id in self._sample_ids:
                crop = (_to_uint8_hwc(batch["image"][i], self.mean, self.std),
                        gt[i].detach().cpu().numpy().astype(np.int16),
                        pred[i].detach().cpu().numpy().astype(np.int16))
                if image_id in self._sample_ids:
                    self._samples[image_id] = crop
                if image_id in held:
                    # Kept at panel resolution: C*k full-size 2048px crops would be gigabytes.
                    self._crops[image_id] = tuple(_shrink(300, *crop))
        # Drop crops that worse images pushed out of every class's list: memory stays O(C*k).
        self._crops = {k: v for k, v in self._crops.items() if k in held}

    def draw(self, val_result: Mapping | None) -> tuple[Figures, None]:
        """{logger tag: (file stem, image)} for this validation's collected data (no sections)."""
        names, figures = self.class_names, {}
        for image_id in self._sample_ids:
            if image_id not in self._samples:
                continue
            image, gt, pred = self._samples[image_id]
            stem = safe_filename(image_id)
            figures[f"val_samples/{image_id}"] = (f"sample_{stem}", prediction_panel(
                image, gt, pred, names, self.ignore_index, title=image_id, palette=self.palette))
            figures[f"val_per_class/{image_id}"] = (f"per_class_{stem}", per_class_panel(
                gt, pred, names, self.ignore_index, title=image_id))
        for c, name in enumerate(names):
            for rank, (iou, image_id) in enumerate(self._worst.worst(c), start=1):
                image, gt, pred = self._crops[image_id]
                title = f"worst #{rank} for {name}: IoU {iou:.3f} ({image_id})"
                panel = prediction_panel(image, gt, pred, names, self.ignore_index, title, self.palette, focus=c)
                figures[f"val_worst/{name}/{rank}"] = (f"worst_{safe_filename(name)}_{rank}", panel)
        if val_result:
            cm = val_result.get("confusion_matrix")
            if cm is not None:
                cm = np.asarray(cm.detach().cpu() if hasattr(cm, "detach") else cm)
                figures["val/confusion_matrix"] = ("confusion_matrix",
                                                   confusion_matrix_figure(cm, names))
            if val_result.get("per_class_iou") is not None:
                figures["val/per_class_iou"] = ("per_class_iou",
                                                per_class_bars(val_result["per_class_iou"]))
        return figures, None


__getattr__ = lazy_callback(globals(), _ValidationVisualizerHooks, "ValidationVisualizer")
