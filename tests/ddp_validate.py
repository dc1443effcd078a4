"""Run one validation pass with N CPU processes (gloo) and write the rank-0 result.

Used by tests/test_ddp.py; Lightning's DDP launcher re-runs this script per rank.
"""

import json
import sys
from pathlib import Path

import lightning as L

from seglab.config import load_config
from seglab.data import build_dataset, resolve_labels
from seglab.training import SegmentationData, LabModule

ROOT = Path(__file__).resolve().parents[1]


def main(data_root: str, out: str, devices: int) -> None:
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={data_root}", "data.batch_size=2", "model.encoder=resnet18", "data.num_workers=0",
        # CE only: a batch-level Dice term would legitimately change with the batch split
        "loss=[{name: ce}]",
    ])
    labels = resolve_labels(cfg)
    L.seed_everything(0, verbose=False)
    module = LabModule(cfg, labels)  # same seed, so the same weights on every rank
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
    )
    data = SegmentationData(cfg, build_dataset(cfg, "train", labels, train=True), build_dataset(cfg, "val", labels))
    trainer.validate(module, datamodule=data, verbose=False)
    if trainer.is_global_zero:
        result = module.last_val_result
        Path(out).write_text(json.dumps({"confusion_matrix": result["confusion_matrix"].tolist(), "mIoU": result["mIoU"],
                                         "loss": result["loss"], "world_size": trainer.world_size}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
