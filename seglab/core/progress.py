"""The training progress bar: Lightning's, showing the loss without waiting for the GPU.

Lightning's bar shows the scalars logged with `prog_bar=True` and reads each one back
from the device at every refresh (every step), which makes the host wait for the GPU
every step. seglab's loss is read back only when it is checked (LabModule.check_losses,
every trainer.log_every_n_steps steps); this bar shows that host-side value.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class LossBar(TQDMProgressBar):
    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "checked_loss", None)
        if loss is not None:
            items["loss"] = f"{loss:.4g}"
        return items
