"""Instance copy-paste (`copy_paste` with `unit: instance`): one object lands with its exact
mask, pixel for pixel, for both mask types; an object is a connected component of one class,
or one annotation where the batch carries object ids (COCO, polygons)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.kinds import target_kind
from seglab.config import config_from_dict
from seglab.data.batch_augment import CopyPaste, batch_problems


CLASS_MAP = target_kind("class_map")

def pair_multiclass():
    """Image 0: the partner, two class-2 objects (an L and a square) and a class-1 bar.
    Image 1: the target, all class 3 (so every pasted label is visible)."""
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[0, 1:6, 1:3] = 2
    masks[0, 4:6, 1:6] = 2           # an L shape
    masks[0, 10:14, 10:14] = 2       # a second class-2 object, apart from the first
    masks[0, 8, 2:9] = 1
    masks[1] = 3
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[0] = torch.arange(256, dtype=torch.uint8).view(16, 16)   # every pixel distinct
    images[1] = 200
    return images, masks


def objects_of(mask: np.ndarray, cls: int) -> list[np.ndarray]:
    import cv2

    n, comp = cv2.connectedComponents((mask == cls).astype(np.uint8), connectivity=8)
    return [comp == k for k in range(1, n)]


def test_an_instance_lands_with_its_exact_mask_multiclass():
    images, masks = pair_multiclass()
    aug = CopyPaste(p=1.0, classes=[2], unit="instance", class_names=["bg", "a", "b", "c"], kind=CLASS_MAP)
    out_images, out_masks = aug(images, masks, torch.Generator().manual_seed(3))
    pasted = (out_masks[1] != 3).numpy()
    # Exactly one of the partner's two class-2 objects, whole: its footprint and nothing else.
    candidates = objects_of(masks[0].numpy(), 2)
    assert sum((pasted == obj).all() for obj in candidates) == 1
    assert (out_masks[1][torch.as_tensor(pasted)] == 2).all()
    assert torch.equal(out_images[1][:, torch.as_tensor(pasted)], images[0][:, torch.as_tensor(pasted)])
    assert (out_images[1][:, ~torch.as_tensor(pasted)] == 200).all()
    # The partner got nothing: the target has no class-2 objects.
    assert torch.equal(out_masks[0], masks[0]) and torch.equal(out_images[0], images[0])


def test_class_unit_pastes_every_object_of_the_class_instance_unit_one():
    images, masks = pair_multiclass()
    whole = CopyPaste(p=1.0, classes=[2], class_names=["bg", "a", "b", "c"], kind=CLASS_MAP)
    _, out = whole(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(out[1] == 2, masks[0] == 2)
    many = CopyPaste(p=1.0, classes=[2], unit="instance", objects=5, class_names=["bg", "a", "b", "c"], kind=CLASS_MAP)
    _, out = many(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(out[1] == 2, masks[0] == 2)   # asked for more objects than there are: all of them


def test_a_mirrored_instance_lands_mirrored():
    images, masks = pair_multiclass()
    aug = CopyPaste(p=1.0, classes=[1], unit="instance", hflip_p=1.0, class_names=["bg", "a", "b", "c"], kind=CLASS_MAP)
    out_images, out_masks = aug(images, masks, torch.Generator().manual_seed(0))
    expected = torch.flip(masks[0] == 1, dims=[-1])
    assert torch.equal(out_masks[1] != 3, expected) and (out_masks[1][expected] == 1).all()
    assert torch.equal(out_images[1][:, expected], torch.flip(images[0], dims=[-1])[:, expected])


def test_a_multilabel_instance_keeps_the_classes_it_overlaps():
    """The partner's disc (channel 0) overlaps its square (channel 1); pasting the disc pastes
    its full C-channel mask under its footprint: square bits included, nothing outside."""
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    masks[0, 0, 2:8, 2:8] = True            # disc: the only channel-0 object
    masks[0, 1, 5:12, 5:12] = True          # square, overlapping the disc
    masks[1, 2, :, :] = True                # the target: channel 2 everywhere
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[0] = torch.arange(256, dtype=torch.uint8).view(16, 16)
    images[1] = 50
    aug = CopyPaste(p=1.0, classes=["disc"], unit="instance", class_names=["disc", "square", "bar"], kind=target_kind("binary_masks"))
    out_images, out_masks = aug(images, masks, torch.Generator().manual_seed(1))
    footprint = masks[0, 0]
    expected = masks[1].clone()
    expected[:, footprint] = masks[0][:, footprint]
    assert torch.equal(out_masks[1], expected)
    assert out_masks[1, 1, 5:8, 5:8].all() and not out_masks[1, 1, 8:12, 8:12].any()   # overlap kept, rest not
    assert torch.equal(out_images[1][:, footprint], images[0][:, footprint])
    assert (out_images[1][:, ~footprint] == 50).all()


def test_instance_parameters_are_checked():
    cfg = config_from_dict({"task": "multilabel", "augment": {"batch": [
        {"name": "copy_paste", "unit": "object"}, {"name": "copy_paste", "unit": "instance", "objects": 0}]}})
    problems = batch_problems(cfg.augment.batch)
    assert len(problems) == 2 and "unit must be 'class' or 'instance'" in problems[0] and "objects" in problems[1]
    with pytest.raises(ValueError):
        CopyPaste(unit="instance", objects=1.5)


# ------------------------------------------------------------------ objects by annotation id


def touching_pair():
    """Image 0: two class-2 squares that touch (one connected component, two annotations, ids
    1 and 2). Image 1: all class 3."""
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    ids = torch.zeros(2, 16, 16, dtype=torch.int32)
    masks[0, 2:8, 2:8], ids[0, 2:8, 2:8] = 2, 1
    masks[0, 2:8, 8:14], ids[0, 2:8, 8:14] = 2, 2
    masks[1] = 3
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[0] = torch.arange(256, dtype=torch.uint8).view(16, 16)
    images[1] = 200
    return images, masks, ids


@pytest.mark.parametrize("warp", [{}, {"hflip_p": 1.0}])
@pytest.mark.parametrize("reverse", [False, True])   # the image with ids drawn first or second
def test_touching_objects_paste_one_by_one_with_their_ids(warp, reverse):
    images, masks, ids = touching_pair()
    src, dst = (1, 0) if reverse else (0, 1)
    if reverse:
        images, masks, ids = images.flip(0), masks.flip(0), ids.flip(0)
    aug = CopyPaste(p=1.0, classes=[2], unit="instance", class_names=["bg", "a", "b", "c"], kind=CLASS_MAP, **warp)
    out_images, out_masks, out_ids = aug.apply(images, masks, torch.Generator().manual_seed(0), ids)
    pasted = out_masks[dst] != 3
    source = torch.flip(ids[src], [1]) if warp else ids[src]   # the partner as it was pasted
    one = [source == k for k in (1, 2) if torch.equal(pasted, source == k)]
    assert len(one) == 1 and int(pasted.sum()) == 36   # one square, not the component of both
    assert torch.equal(out_ids[dst][pasted], source[pasted]) and (out_ids[dst][~pasted] == 0).all()
    # Without ids the two squares are one connected component: both paste together.
    _, merged = aug(images, masks, torch.Generator().manual_seed(0))
    assert int((merged[dst] != 3).sum()) == 72


def test_ids_follow_the_pixels_through_a_cutmix_before_the_paste():
    from seglab.data.batch_augment import CutMix

    images, masks, ids = touching_pair()
    ids[1] = 7
    _, out_masks, out_ids = CutMix(p=1.0).apply(images, masks, torch.Generator().manual_seed(1), ids)
    boxed = out_masks[1] != 3   # image 1 took a box of image 0 (partner), ids and all
    assert torch.equal(out_ids[1][boxed], ids[0][boxed]) and (out_ids[1][~boxed] == 7).all()


def test_a_coco_training_batch_carries_ids_that_match_its_class_maps(tmp_path):
    """COCO annotations become ids 1..N painted like the class map (the visible object per
    pixel), transformed with it, collated, and only when copy-paste pastes objects."""
    from seglab.config import load_config
    from seglab.core.loaders import Collate
    from seglab.data import build_dataset, resolve_labels
    from seglab.data.synth.coco import make_coco_dataset
    from tests.workflow_helpers import ROOT

    make_coco_dataset(tmp_path, n_train=4, n_val=1, n_test=1, size=32, seed=0)
    base = [f"data.root={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=[24, 24]",
            "augment.train=[{name: HorizontalFlip, p: 1.0}]"]
    cfg = load_config(ROOT / "configs" / "demo.yaml", base + ["augment.batch=[{name: copy_paste, p: 1.0, unit: instance}]"])
    labels = resolve_labels(cfg)
    dataset = build_dataset(cfg, "train", labels, train=True)
    batch = Collate(dataset.kind)([dataset[i] for i in range(4)])
    assert batch["instances"].shape == batch["target"].shape and batch["instances"].dtype == torch.int32
    for k in range(4):
        target, found = batch["target"][k], batch["instances"][k]
        assert torch.equal(found > 0, (target != 0) & (target != labels.ignore_index))
        # Each id covers pixels of one class only: the object that painted them.
        assert all(len(target[found == i].unique()) == 1 for i in found.unique().tolist() if i)
    assert any(len(batch["instances"][k].unique()) > 2 for k in range(4))   # images with several objects
    plain = load_config(ROOT / "configs" / "demo.yaml", base + ["augment.batch=[{name: copy_paste, p: 1.0}]"])
    assert "instances" not in build_dataset(plain, "train", labels, train=True)[0]
    assert "instances" not in build_dataset(cfg, "val", labels, train=False)[0]


def test_polygon_ids_match_the_painted_class_map(tmp_path):
    from seglab.config import load_config
    from seglab.data import open_source, resolve_labels
    from seglab.data.sources.polygons import read_polygon_json
    from seglab.data.synth.polygons import make_polygon_dataset
    from tests.workflow_helpers import ROOT

    make_polygon_dataset(tmp_path, n_train_ids=2, n_val_ids=1, n_test_ids=1, size=32, seed=0)
    cfg = load_config(ROOT / "configs" / "demo_multilabel.yaml", [f"data.root={tmp_path / 'train'}", "task=multiclass",
                                                                 "loss=[{name: ce}]", f"data.cache_dir={tmp_path / 'cache'}"])
    labels = resolve_labels(cfg)
    source = open_source(cfg, "train", labels)
    for i in range(len(source)):
        target, ids = source.load_target(i), source.load_instances(i)
        assert np.array_equal(ids > 0, target != 0)
        assert all(len(np.unique(target[ids == k])) == 1 for k in np.unique(ids) if k)
        assert ids.max() <= len(read_polygon_json(source.json_path(i))[0])
