"""After each validation: the misclassified examples, the confusion matrix and per-class F1.

PNG files under RUN_DIR/viz/epoch_NNN/ and every image logger, like the segmentation
panels. The gallery shows, per true class, the `worst_k` most confident mistakes.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from seglab.visualization.epoch_figures import EpochFigureHooks, Figures
from seglab.visualization.figures import _tile_grid, confusion_matrix_figure, per_class_bars, safe_filename

TILE_PX = 184


def misclassified_gallery(mistakes: Sequence[tuple[np.ndarray, str, str, str, float]], title: str = "",
                          ncols: int = 6) -> np.ndarray:
    """(image HxWx3 uint8, id, true name, predicted name, confidence) -> one captioned grid."""
    tiles = [(img, f"{image_id[-28:]}\ntrue {true}\npred {pred} {conf:.2f}") for img, image_id, true, pred, conf in mistakes]
    return _tile_grid(tiles, min(ncols, len(tiles)), title, tile_px=TILE_PX, caption_lines=3)


class ClassificationVisualizer(EpochFigureHooks, Callback):
    """Needs validation_step to return {"pred": [B], "probs": [B, C]} with batch {"image", "target", "id"}.
    When and where it draws: `EpochFigureHooks`."""

    def __init__(self, run_dir, class_names: Sequence[str], every_n_epochs: int = 1, worst_k: int = 3):
        self._serial = 0
        super().__init__(run_dir, class_names, every_n_epochs, num_samples=0, worst_k=worst_k)

    def _reset(self) -> None:
        self._heaps: dict[int, list] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        if not self._active(trainer) or self.worst_k == 0:
            return
        pred, label = outputs["pred"].cpu(), batch["target"].cpu()
        conf = outputs["probs"].float().max(1).values.cpu()
        for i in torch.nonzero(pred != label).flatten().tolist():
            heap = self._heaps.setdefault(int(label[i]), [])
            self._serial += 1
            entry = (float(conf[i]), self._serial, str(batch["id"][i]), int(pred[i]))
            if len(heap) < self.worst_k or entry[0] > heap[0][0]:
                image = batch["image"][i].detach().cpu()
                image = image.permute(1, 2, 0).numpy() if image.dtype == torch.uint8 else None
                item = entry + (image,)
                heapq.heappush(heap, item) if len(heap) < self.worst_k else heapq.heapreplace(heap, item)

    def draw(self, val_result: Mapping | None) -> tuple[Figures, None]:
        figures = {}
        names = self.class_names
        mistakes = []
        for c in sorted(self._heaps):
            for conf, _, image_id, pred, image in sorted(self._heaps[c], reverse=True):
                if image is not None:
                    mistakes.append((image, image_id, names[c], names[pred], conf))
        if mistakes:
            figures["val/misclassified"] = ("misclassified", misclassified_gallery(
                mistakes, f"most confident mistakes, up to {self.worst_k} per true class"))
        if val_result:
            cm = val_result.get("confusion_matrix")
            if cm is not None:
                cm = cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)
                figures["val/confusion_matrix"] = ("confusion_matrix", confusion_matrix_figure(cm, names))
            if val_result.get("per_class_f1") is not None:
                figures["val/per_class_f1"] = ("per_class_f1", per_class_bars(val_result["per_class_f1"], metric="F1"))
        return figures, None


__all__ = ["ClassificationVisualizer", "misclassified_gallery", "safe_filename"]
