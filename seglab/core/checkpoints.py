"""Checkpoints: written atomically, read weights-only, checked against the run, and the
state that lets `--resume` continue exactly where a run stopped."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seglab.data.resumable import ResumableLoader
from seglab.errors import CheckpointError, SeglabError
from seglab.io import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer and reader, made safe.

    Written through a temporary file and a rename: a kill or a full disk never leaves a
    half-written checkpoint, and the previous one survives. Weights that went NaN/inf
    are never written over a good checkpoint. Read with `weights_only=True`: a
    checkpoint from elsewhere cannot run code.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        bad = [k for k, v in checkpoint.get("state_dict", {}).items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise SeglabError(
                f"{path}: not written: weights {bad[:3]} are NaN/inf at step {checkpoint.get('global_step')}; "
                "the previous checkpoint is kept. Try a lower optim.lr, optim.grad_clip, or trainer.precision=32"
            )
        with atomic_open(path, "wb") as f:
            out = _ErrorKeepingWriter(f)
            try:
                torch.save(checkpoint, out)
            except RuntimeError:
                if out.error is not None:  # torch reports a failed write (disk full) as an opaque RuntimeError
                    raise out.error from None
                raise

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint_file(path, map_location)


class _ErrorKeepingWriter:
    """A file wrapper that remembers the OSError behind a failed write."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.f.flush()


def load_checkpoint_file(path: str | Path, map_location=None) -> dict:
    """A checkpoint as a dict, loaded weights-only (no code runs); CheckpointError if it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(
            f"{path}: cannot load checkpoint weights-only ({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(state).__name__}, not a dict)")
    return state


def check_checkpoint_meta(meta: dict, cfg, labels, source: str) -> None:
    if meta.get("task") not in (None, cfg.task):
        raise CheckpointError(f"{source}: trained for task {meta['task']!r}, the config says {cfg.task!r}")
    classes = meta.get("classes")
    if classes is not None and list(classes) != list(labels.classes):
        raise CheckpointError(f"{source}: trained for {len(classes)} classes {classes[:6]}..., the config has {len(labels.classes)} {list(labels.classes)[:6]}...")
    if meta.get("arch") not in (None, cfg.model.arch) or (meta.get("encoder") not in (None, cfg.model.encoder) and cfg.model.arch == meta.get("arch")):
        raise CheckpointError(f"{source}: written by model {meta.get('arch')}/{meta.get('encoder')}, the config builds {cfg.model.arch}/{cfg.model.encoder}")


def check_state_dict_fits(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    """A checkpoint without (or with misleading) metadata still has to fit tensor by tensor."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not fit the model {getattr(module.cfg.model, 'arch', '')} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: {key}: shape {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} in the model (another model or class count?)")


class ExactResume(Checkpoint):
    """Writes `last.ckpt` so that `--resume` continues exactly where the run stopped.

    Saved at the end of every epoch, after its validation and after ModelCheckpoint
    (whether or not it was the best: Lightning's own `save_last` skips epochs that did
    not improve), and every `every_n_steps` optimiser steps mid-epoch; always through the
    atomic writer, so a kill leaves the previous one intact. Every checkpoint also
    keeps the global random states (Python, NumPy, torch), restored when training
    restarts; the data order and position are restored by the ResumableLoader. A
    Checkpoint subclass, so Lightning runs it after the other callbacks (EMA first).
    """

    def __init__(self, last_path: Path, every_n_steps: int | None):
        self.last_path, self.every_n_steps = Path(last_path), every_n_steps
        self._saved_step = -1
        self._rng: dict | None = None

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def _save(self, trainer) -> None:
        self._saved_step = trainer.global_step
        trainer.save_checkpoint(self.last_path, weights_only=False)  # the full state: resume needs it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.every_n_steps or step == self._saved_step or step % self.every_n_steps:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the end-of-epoch checkpoint follows (after the validation, if one runs)
        self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        # After the epoch's validation and after ModelCheckpoint, which by default records
        # its best at train-epoch end: saved any earlier, a resumed run would forget the
        # best and overwrite best.ckpt with a worse epoch.
        self._save(trainer)

    def on_fit_start(self, trainer, pl_module):
        self._trainer = trainer

    def _loaders(self) -> list[ResumableLoader]:
        loaders = self._trainer.train_dataloader if getattr(self, "_trainer", None) else None
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        elif not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        return [dl for dl in loaders if isinstance(dl, ResumableLoader)]

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        return {
            "rng": {
                "python": random.getstate(),
                "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "loaders": [dl.state_dict() for dl in self._loaders()],
        }

    def load_state_dict(self, state: dict) -> None:
        self._rng, self._loader_states = state.get("rng"), state.get("loaders", [])

    def on_train_start(self, trainer, pl_module):
        # Restored here, after the sanity check and before the first batch is drawn.
        for loader, saved in zip(self._loaders(), getattr(self, "_loader_states", [])):
            loader.load_state_dict(saved)
        self._loader_states = []
        rng, self._rng = self._rng, None
        if not rng:
            return
        random.setstate(rng["python"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
