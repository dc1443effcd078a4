"""What every validation visualizer shares (class maps, multi-label masks): when it runs,
which fixed samples it follows, and where its figures go.

A visualizer subclasses `EpochFigureHooks`, collects in `on_validation_batch_end` and
answers `draw`; `lazy_callback` makes the Lightning Callback from it on first use,
so that importing a visualizer module for drawing never imports Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from seglab.visualization.figures import _unique, log_images, save_png

Figures = dict[str, tuple[str, np.ndarray]]  # logger tag -> (file stem, image)


class EpochFigureHooks:
    """Every `every_n_epochs` validations, on rank 0 and never in the sanity check: the
    subclass collects, then `draw` runs in on_validation_end (Lightning runs the callbacks'
    on_validation_epoch_end before the module's, where `last_val_result` gets set) and the
    figures go to RUN_DIR/viz/epoch_NNN/ and every image logger. The fixed samples are the
    first `num_samples` ids seen, followed for the whole run. Under DDP only rank 0
    collects, so worst images come from rank 0's share of the validation set."""

    def __init__(self, run_dir, class_names: Sequence[str], every_n_epochs: int = 1, num_samples: int = 4,
                 worst_k: int = 3, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        self.run_dir, self.class_names = Path(run_dir), list(class_names)
        self.every_n_epochs, self.num_samples, self.worst_k = max(1, every_n_epochs), num_samples, worst_k
        self.mean, self.std = mean, std
        self._sample_ids: list[str] = []
        self._samples_frozen = False
        self._reset()

    def _reset(self) -> None:
        """Forget what the last validation collected."""
        raise NotImplementedError

    def draw(self, val_result: Mapping | None) -> tuple[Figures, dict[str, str] | None]:
        """This validation's figures, and {logger tag: report section} (or None: no index)."""
        raise NotImplementedError

    def write_index(self, out_dir: Path, files: dict[str, list[str]]) -> None:
        """Called with {section: [file names]} when `draw` names sections."""

    def _active(self, trainer) -> bool:
        return (not getattr(trainer, "sanity_checking", False) and trainer.is_global_zero
                and (trainer.current_epoch + 1) % self.every_n_epochs == 0)

    def _pick_samples(self, ids: Sequence[str]) -> None:
        if not self._samples_frozen:
            for image_id in ids:
                if len(self._sample_ids) < self.num_samples and image_id not in self._sample_ids:
                    self._sample_ids.append(image_id)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        self._samples_frozen = True
        figures, sections = self.draw(getattr(pl_module, "last_val_result", None))
        out_dir = self.run_dir / "viz" / f"epoch_{trainer.current_epoch:03d}"
        used: set[str] = set()
        files: dict[str, list[str]] = {}
        for tag, (stem, img) in figures.items():
            path = save_png(img, out_dir / _unique(stem, used))
            if sections is not None:
                files.setdefault(sections[tag], []).append(path.name)
        if sections is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.write_index(out_dir, files)
        log_images(getattr(trainer, "loggers", []), {t: img for t, (_, img) in figures.items()}, trainer.global_step)
        self._reset()


def lightning_callback(hooks: type, name: str) -> type:
    """The Callback class `name` made of `hooks` (for a module's lazy `__getattr__`; the
    module caches it, so pickling and isinstance work as usual)."""
    from lightning.pytorch.callbacks import Callback

    return type(name, (hooks, Callback), {"__module__": hooks.__module__, "__doc__": hooks.__doc__})


def lazy_callback(namespace: dict, hooks: type, name: str):
    """A module `__getattr__` (`__getattr__ = lazy_callback(globals(), Hooks, "Name")`) that
    makes the Callback class `name` of `hooks` on first use, so importing the module does not
    import Lightning, and keeps it in the module."""
    def __getattr__(attr: str):
        if attr != name:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attr!r}")
        namespace[name] = lightning_callback(hooks, name)
        return namespace[name]

    return __getattr__
