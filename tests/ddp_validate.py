"""Run one validation pass of a task with N CPU processes (gloo) and write the rank-0 result.

Used by tests/test_ddp.py; Lightning's DDP launcher re-runs this script per rank.
"""

import json
import sys
from pathlib import Path

import lightning as L

from seglab.config import load_config
from seglab.core.loaders import LabData
from seglab.core.module import LabModule
from seglab.data import build_dataset, resolve_labels


def main(config: str, out: str, devices: int, overrides: list[str]) -> None:
    # Plain CE / BCE: a batch-level Dice loss term would legitimately change with the batch split.
    cfg = load_config(config, overrides + ["data.num_workers=0"])
    labels = resolve_labels(cfg)
    L.seed_everything(0, verbose=False)
    module = LabModule(cfg, labels)  # same seed, so the same weights on every rank
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
    )
    data = LabData(cfg, build_dataset(cfg, "train", labels, train=True), build_dataset(cfg, "val", labels))
    trainer.validate(module, datamodule=data, verbose=False)
    if trainer.is_global_zero:
        state = module.val_metric.state()
        result = {k: v for k, v in module.last_val_result.items() if isinstance(v, float)}
        Path(out).write_text(json.dumps({"state": state, "scores": result, "world_size": trainer.world_size}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
