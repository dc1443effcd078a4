"""Training recipes end to end: batch augmentations and class-balanced sampling in a real
run, `seglab viz aug`, and the shipped competition-A recipe."""

from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.data.labels import LabelSpec
from seglab.cli import main
from seglab.config import load_config
from seglab.data.batch_augment import BatchAugmentations, build_batch_augment
from seglab.data.sampling import WeightedEpochSampler
from seglab.core.training import train
from tests.workflow_helpers import TEST_ENCODER

ROOT = Path(__file__).resolve().parents[1]
BATCH = "augment.batch=[{name: cutmix, p: 0.5}, {name: copy_paste, p: 1.0, classes: [star, ring], hflip_p: 0.5, translate: 0.2}]"
TRAIN = "augment.train=[{name: HorizontalFlip, p: 0.5}, {name: GridMask, ratio: 0.6, unit_size_range: [8, 16], p: 0.5}]"


def test_training_applies_batch_augmentations_and_the_sampler(synth_root, tmp_path, monkeypatch):
    seen = []
    original_call = BatchAugmentations.__call__

    def spy(self, images, masks, generator=None, instances=None):
        out = original_call(self, images, masks, generator, instances)
        seen.append((images.clone(), masks.clone(), *out))
        return out

    monkeypatch.setattr(BatchAugmentations, "__call__", spy)
    samplers = []
    import seglab.core.loaders as loaders

    original_loader = loaders.train_loader
    monkeypatch.setattr(loaders, "train_loader", lambda *a, **k: samplers.append(original_loader(*a, **k)) or samplers[-1])
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={synth_root}", "data.batch_size=4", f"model.encoder={TEST_ENCODER}", "trainer.max_epochs=1",
        "trainer.progress_bar=false", "logging.viz_every_n_epochs=0", "logging.loggers=[]", "schedule.warmup_epochs=0",
        "data.sampler={name: class_balanced, power: 1.0}", BATCH, TRAIN,
    ])
    best = train(cfg, tmp_path / "run")
    assert 0 <= best["mIoU"] <= 1
    assert isinstance(samplers[0].sampler.sampler, WeightedEpochSampler)  # inside the resumable wrapper
    assert len(seen) == 3  # 12 training images, batches of 4
    before_images, before_masks, images, masks = seen[0]
    assert images.dtype == torch.uint8 and images.shape == before_images.shape and masks.shape == before_masks.shape
    assert any(not torch.equal(m, b) for _, b, _, m in seen), "copy-paste with p=1 changed no mask"


def test_viz_aug_writes_one_panel_per_sample(synth_root, tmp_path, capsys):
    out = tmp_path / "aug"
    code = main(["viz", "aug", str(ROOT / "configs" / "demo.yaml"), f"data.root={synth_root}", BATCH, TRAIN,
                 "data.sampler.name=class_balanced", "--out", str(out), "--n", "3"])
    assert code == 0
    pngs = sorted(out.glob("aug_*.png"))
    assert len(pngs) == 3
    from matplotlib.image import imread

    assert imread(pngs[0]).shape[1] > 900  # three tiles side by side
    assert "wrote 3 augmented samples" in capsys.readouterr().out


def test_viz_aug_samples_follow_the_training_pipeline(synth_root):
    from seglab.data.preview import augmented_samples

    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.root={synth_root}", "augment.train=[{name: HorizontalFlip, p: 1}]"])
    _, samples = augmented_samples(cfg, 2, seed=0)
    for _, image, mask, aug_image, aug_mask in samples:
        assert np.array_equal(aug_image, image[:, ::-1]) and np.array_equal(aug_mask, mask[:, ::-1])


def test_recipe_config_resolves_against_its_classes():
    cfg = load_config(ROOT / "configs" / "trash_recipe.yaml")
    pipeline = build_batch_augment(cfg.augment.batch, LabelSpec(tuple(cfg.data.classes), cfg.data.ignore_index))
    names = [cfg.data.classes[i] for i in pipeline.augments[0].classes]
    assert names == ["Battery", "Clothing", "Metal", "Glass", "Paper pack"]
    assert cfg.trainer.precision == "bf16" and cfg.trainer.channels_last and cfg.averaging.ema_decay
    assert cfg.model.arch in ("DeepLabV3Plus", "UnetPlusPlus") and cfg.model.encoder.startswith("tu-")


@pytest.mark.parametrize("bad, message", [
    ("augment.batch=[{name: copy_paste, classes: [Sqare]}]", "unknown class 'Sqare'; did you mean 'square'?"),
])
def test_bad_batch_class_names_stop_training_before_it_starts(synth_root, tmp_path, bad, message, capsys):
    code = main(["train", str(ROOT / "configs" / "demo.yaml"), f"data.root={synth_root}", bad, "--out", str(tmp_path / "r")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()
