"""What the GPU check attaches to a training run (benchmarks/gpu_check.py): a counter of
CUDA synchronisations per step and a profiler of a few steps, both Lightning callbacks."""

from __future__ import annotations

import time


def make_sync_counter():
    """A Lightning callback counting CUDA's synchronising calls per training step
    (torch.cuda.set_sync_debug_mode("warn") warns at each one). A step's window runs from its
    on_train_batch_start to the next one's (so it holds the module's and Lightning's per-batch
    work after the step and the next batch's transfer), or to the validation or epoch end."""
    import warnings

    import lightning as L
    import torch

    class SyncCounter(L.Callback):
        def __init__(self):
            self.windows: list[tuple[int, bool, int]] = []  # (global_step at the end, last batch of its epoch, syncs)
            self.records: list = []
            self._open, self._catcher = None, None

        def on_train_start(self, trainer, pl_module):
            self._catcher = warnings.catch_warnings(record=True)
            self.records = self._catcher.__enter__()
            warnings.simplefilter("always")
            if torch.cuda.is_available():  # elsewhere (the smoke run) the windows are kept, with nothing to count
                torch.cuda.set_sync_debug_mode("warn")

        def _close(self):
            if self._open is not None and len(self._open) == 3:
                seen, step, last = self._open
                self.windows.append((step, last, sum("synchroniz" in str(w.message) for w in self.records[seen:])))
            self._open = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._close()
            self._open = (len(self.records),)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self._open is not None:
                self._open = (self._open[0], trainer.global_step, trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)

        def on_validation_start(self, trainer, pl_module):
            self._close()

        def on_train_epoch_end(self, trainer, pl_module):
            self._close()

        def on_train_end(self, trainer, pl_module):
            self._close()
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode(0)
            self._catcher.__exit__(None, None, None)

        def summary(self, every: int, warmup: int = 2) -> dict:
            # The losses are checked after the steps that end at a multiple of `every`, and at each epoch's
            # end. The first steps compile (torch.compile's autotuning synchronises): counted apart.
            steady = self.windows[warmup:]
            between = [n for step, last, n in steady if step % every and not last]
            return {"counted": torch.cuda.is_available(), "steps": len(self.windows), "check_every": every,
                    "syncs_in_first_steps": sum(n for _, _, n in self.windows[:warmup]), "first_steps": warmup,
                    "steps_between_checks": len(between), "syncs_on_steps_between_checks": sum(between),
                    "syncs_on_check_steps": sum(n for _, _, n in steady) - sum(between)}

    return SyncCounter()


def make_step_profiler(start: int, steps: int):
    """A Lightning callback that profiles training batches start .. start + steps - 1 with
    torch.profiler: wall time per step, the share of it the GPU spent in kernels, and the
    operators that took the most time (GPU time on a GPU, CPU time elsewhere)."""
    import lightning as L
    import torch
    from torch.profiler import ProfilerActivity, profile

    gpu = torch.cuda.is_available()

    class StepProfiler(L.Callback):
        def __init__(self):
            self.prof, self.t0, self.wall = None, None, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == start:
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
                self.prof = profile(activities=activities)
                self.prof.__enter__()
                if gpu:
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == start + steps - 1 and self.prof is not None:
                if gpu:
                    torch.cuda.synchronize()
                self.wall = time.perf_counter() - self.t0
                self.prof.__exit__(None, None, None)

        def summary(self) -> dict:
            if self.wall is None:
                raise ValueError(f"the profiled batches {start}..{start + steps - 1} did not run")
            events = self.prof.key_averages()
            key = "self_device_time_total" if gpu else "self_cpu_time_total"
            busy = sum(getattr(e, key, 0) for e in events) / 1e6 if gpu else None
            top = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:12]
            return {"profiled_steps": steps, "wall_ms_per_step": 1000 * self.wall / steps,
                    "gpu_busy_share": busy / self.wall if busy is not None else None, "time_is": "gpu" if gpu else "cpu",
                    "top_ops": [{"name": e.key[:80], "ms_per_step": getattr(e, key, 0) / 1000 / steps, "calls": e.count} for e in top]}

    return StepProfiler()
