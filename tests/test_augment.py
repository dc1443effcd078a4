"""Augmentation from config: albumentations transforms and GridMask keep masks aligned;
batch-level CutMix and copy-paste paste pixels and labels together."""

import warnings

import numpy as np
import pytest
import torch

from seglab.data.labels import LabelSpec
from seglab.kinds import target_kind
from seglab.config import config_from_dict
from seglab.config.schema import BatchAugmentSpec
from seglab.core.training import config_problems
from seglab.data.batch_augment import CopyPaste, CutMix, build_batch_augment, paste
from seglab.data.transforms import build_transform
from seglab.errors import ConfigError

FILL = 255  # fill_mask for pixels that geometric transforms bring in from outside the image


CLASS_MAP = target_kind("class_map")

def encoded_sample(seed=0, size=96, block=16):
    """An image that encodes its own mask: class c is the colour whose channels are the bits of
    c + 1, times 255. Colours are corners of the RGB cube, so any interpolated (blended) pixel has
    a channel strictly between 0 and 255 and is recognised as such; black is fill."""
    rng = np.random.default_rng(seed)
    mask = np.kron(rng.integers(0, 7, (size // block, size // block)), np.ones((block, block), np.int64)).astype(np.uint8)
    bits = (mask[..., None].astype(np.int32) + 1) >> np.arange(3) & 1
    return (bits * 255).astype(np.uint8), mask


def decode(image):
    """Image -> (class map it encodes, where the pixel is an unblended corner colour); black decodes to FILL."""
    pure = ((image == 0) | (image == 255)).all(-1)
    code = ((image > 127).astype(np.int32) << np.arange(3)).sum(-1)
    return np.where(code == 0, FILL, code - 1), pure


def transform_from_config(specs):
    cfg = config_from_dict({"augment": {"train": specs}})
    return build_transform(cfg.augment, None, train=True)


GEOMETRIC = [
    [{"name": "HorizontalFlip", "p": 1}],
    [{"name": "VerticalFlip", "p": 1}],
    [{"name": "RandomRotate90", "p": 1}],
    [{"name": "Transpose", "p": 1}],
    [{"name": "Rotate", "limit": [20, 40], "fill_mask": FILL, "p": 1}],
    [{"name": "Affine", "scale": [0.7, 1.3], "rotate": [-30, 30], "translate_percent": 0.1, "fill_mask": FILL, "p": 1}],
    [{"name": "ShiftScaleRotate", "shift_limit": 0.1, "scale_limit": 0.2, "rotate_limit": 30, "fill_mask": FILL, "p": 1}],
    [{"name": "RandomResizedCrop", "size": [96, 96], "scale": [0.3, 0.6], "p": 1}],
    [{"name": "RandomScale", "scale_limit": [0.2, 0.5], "p": 1}, {"name": "RandomCrop", "height": 80, "width": 80, "p": 1}],
    [{"name": "GridDistortion", "p": 1}],
    [{"name": "ElasticTransform", "alpha": 500, "sigma": 10, "fill_mask": FILL, "p": 1}],
]
COLOUR = [
    [{"name": "ColorJitter", "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05, "p": 1}],
    [{"name": "RandomBrightnessContrast", "brightness_limit": [0.2, 0.3], "p": 1}],
    [{"name": "HueSaturationValue", "p": 1}],
    [{"name": "RandomGamma", "gamma_limit": [130, 150], "p": 1}],
    [{"name": "CLAHE", "clip_limit": 4.0, "p": 1}],
    [{"name": "GaussianBlur", "blur_limit": [3, 7], "p": 1}],
    [{"name": "MotionBlur", "p": 1}],
    [{"name": "GaussNoise", "std_range": [0.05, 0.1], "p": 1}],
]
DROPOUT = [
    [{"name": "CoarseDropout", "num_holes_range": [4, 8], "hole_height_range": [8, 16], "hole_width_range": [8, 16], "p": 1}],
    [{"name": "GridDropout", "ratio": 0.4, "unit_size_range": [16, 32], "p": 1}],
    [{"name": "GridMask", "ratio": 0.6, "unit_size_range": [16, 32], "rotate": 20, "p": 1}],
]


def _name(specs):
    return "+".join(s["name"] for s in specs)


@pytest.mark.parametrize("specs", GEOMETRIC, ids=_name)
def test_geometric_transforms_move_mask_with_image(specs):
    image, mask = encoded_sample()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ShiftScaleRotate's "use Affine" notice
        t = transform_from_config(specs)
    moved = 0
    for seed in range(3):
        t.set_random_seed(seed)
        out = t(image=image, mask=mask)
        decoded, pure = decode(out["image"])
        assert out["mask"].shape == out["image"].shape[:2]
        assert pure.mean() > 0.5, "too few unblended pixels to check"
        # Interpolation blends image pixels at class borders (recognised by their colour); every other pixel says its label.
        assert np.array_equal(decoded[pure], out["mask"][pure])
        moved += out["mask"].shape != mask.shape or not np.array_equal(out["mask"], mask)
    assert moved, "the transform never changed the mask"


@pytest.mark.parametrize("specs", COLOUR, ids=_name)
def test_colour_and_noise_transforms_leave_the_mask_alone(specs):
    image, mask = encoded_sample()
    image = image // 2 + 60  # mid-range values, which every colour transform changes
    out = transform_from_config(specs)(image=image, mask=mask)
    assert not np.array_equal(out["image"], image)
    assert np.array_equal(out["mask"], mask)


@pytest.mark.parametrize("specs", DROPOUT, ids=_name)
def test_dropout_keeps_labels_unless_fill_mask_is_set(specs):
    image, mask = encoded_sample()
    out = transform_from_config(specs)(image=image, mask=mask)
    dropped = (out["image"] == 0).all(-1)
    assert 0.02 < dropped.mean() < 0.6
    assert np.array_equal(out["mask"], mask)  # default: hidden objects keep their labels
    assert np.array_equal(out["image"][~dropped], image[~dropped])
    t = transform_from_config([{**specs[0], "fill_mask": FILL}])
    t.set_random_seed(1)
    out = t(image=image, mask=mask)
    dropped = (out["image"] == 0).all(-1)
    assert dropped.any() and np.array_equal(out["mask"] == FILL, dropped)


def test_gridmask_is_a_regular_lattice_dropping_the_paper_share():
    image = np.full((120, 120, 3), 100, np.uint8)
    t = transform_from_config([{"name": "GridMask", "ratio": 0.6, "unit_size_range": [20, 20], "p": 1}])
    for seed in range(4):
        t.set_random_seed(seed)
        dropped = t(image=image)["image"][..., 0] == 0
        # keep ratio r = 0.6 of each unit side: the dropped square is 8x8 of every 20x20 unit
        assert dropped.mean() == pytest.approx((1 - 0.6) ** 2)
        rows, cols = dropped.any(1), dropped.any(0)
        assert np.array_equal(dropped, rows[:, None] & cols[None, :])  # one lattice, no jittered holes
        assert np.array_equal(rows[20:], rows[:-20]) and np.array_equal(cols[20:], cols[:-20])


def test_gridmask_bad_parameters_are_preflight_problems():
    # Transform parameters are checked by the preflight (the config itself loads without albumentations).
    cfg = config_from_dict({"augment": {"train": [{"name": "GridMask", "ratio": 1.5}]}})
    (problem,) = config_problems(cfg)
    assert problem.startswith("augment.train[0] (GridMask): ratio must be in (0, 1)")
    with pytest.raises(ConfigError, match=r"augment.train\[0\] \(GridMask\): ratio must be in \(0, 1\)"):
        build_transform(cfg.augment, None, train=True)
    cfg = config_from_dict({"augment": {"train": [{"name": "GridMask", "r": 0.5}]}})
    assert config_problems(cfg) == ["augment.train[0].r: unknown parameter for GridMask"]
    assert config_problems(config_from_dict({"augment": {"train": [{"name": "GridMask", "ratio": 0.5}]}})) == []


# ------------------------------------------------------------------ batch level


def batch_with_objects(b=4, h=32, w=40):
    """Image b is grey level 10*(b+1); image b holds a square object of class b+1 at a known place."""
    images = torch.zeros(b, 3, h, w, dtype=torch.uint8)
    masks = torch.zeros(b, h, w, dtype=torch.int64)
    for i in range(b):
        images[i] = 10 * (i + 1)
        top, left = 2 + 6 * i, 3 + 7 * i
        masks[i, top:top + 5, left:left + 6] = i + 1
        images[i, :, top:top + 5, left:left + 6] = 200 + i
    return images, masks


def test_cutmix_box_area_matches_lambda_and_pastes_image_and_mask():
    images, _ = batch_with_objects(b=6, h=64, w=48)
    images[:, 0] += torch.arange(64, dtype=torch.uint8).view(1, 64, 1)  # position-dependent pixels
    masks = torch.randint(0, 5, (6, 64, 48), generator=torch.Generator().manual_seed(0))  # a different map per image
    cutmix = CutMix(p=1.0, alpha=1.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        params = cutmix.sample(images, masks, rng)
        out_images, out_masks = paste(images, masks, params["src_images"], params["src_masks"], params["region"])
        for i in range(6):
            top, left, bottom, right = params["boxes"][i]
            j = params["partner"][i]
            assert j != i
            area = (bottom - top) * (right - left)
            assert params["region"][i].sum() == area
            # rounding each side to whole pixels moves the area by at most about one row and one column
            assert abs(area / (64 * 48) - (1 - params["lam"][i])) <= (64 + 48 + 1) / (64 * 48)
            inside = params["region"][i]
            assert torch.equal(out_images[i][:, inside], images[j][:, inside])
            assert torch.equal(out_masks[i][inside], masks[j][inside])
            assert torch.equal(out_images[i][:, ~inside], images[i][:, ~inside])
            assert torch.equal(out_masks[i][~inside], masks[i][~inside])


def test_cutmix_probability_zero_and_single_image_batches_are_untouched():
    images, masks = batch_with_objects()
    out = CutMix(p=0.0)(images, masks)
    assert torch.equal(out[0], images) and torch.equal(out[1], masks)
    out = CutMix(p=1.0)(images[:1], masks[:1])
    assert torch.equal(out[0], images[:1]) and torch.equal(out[1], masks[:1])


def test_copy_paste_pastes_a_known_object_into_image_and_mask():
    images, masks = batch_with_objects()
    copy_paste = CopyPaste(p=1.0, classes=["c3"], class_names=["Background", "c1", "c2", "c3", "c4"], kind=CLASS_MAP)
    params = copy_paste.sample(images, masks, np.random.default_rng(0))
    out_images, out_masks = paste(images, masks, params["src_images"], params["src_masks"], params["region"])
    source = 2  # class 3 lives in image 2 only
    obj = masks[source] == 3
    for i in range(4):
        if params["partner"][i] == source:
            assert (out_masks[i][obj] == 3).all()
            assert (out_images[i][:, obj] == 202).all()
            assert torch.equal(out_masks[i][~obj], masks[i][~obj])
            assert torch.equal(out_images[i][:, ~obj], images[i][:, ~obj])
        else:  # the partner holds no class-3 pixels: nothing changes
            assert torch.equal(out_masks[i], masks[i]) and torch.equal(out_images[i], images[i])
    assert (params["partner"] == source).any()


def test_copy_paste_default_pastes_every_object_class_but_not_ignore():
    images, masks = batch_with_objects(b=2)
    masks[1, -3:, -3:] = 255
    images[1, :, -3:, -3:] = 77
    out_images, out_masks = CopyPaste(p=1.0, kind=CLASS_MAP)(images, masks)
    assert torch.equal(out_masks[0][masks[1] == 2], masks[1][masks[1] == 2])
    assert (out_images[0][:, masks[1] == 2] == 201).all()
    assert (out_masks[0][-3:, -3:] == 0).all() and (out_images[0][:, -3:, -3:] == 10).all()  # ignore is not an object
    assert (out_masks == 1).sum() == 2 * 30 and (out_masks == 2).sum() == 2 * 30


def test_copy_paste_with_flip_scale_and_shift_keeps_pixels_and_labels_together():
    torch.manual_seed(0)
    b, h, w = 4, 48, 64
    masks = torch.zeros(b, h, w, dtype=torch.int64)
    for i in range(b):
        masks[i, 5 + 3 * i:20 + 3 * i, 4 + 5 * i:30 + 5 * i] = i + 1
        masks[i, 30:40, 40:44] = 4 - i
    # the image encodes the mask, so any pixel pasted without its label shows up
    images = ((masks + 1) * 30).to(torch.uint8).unsqueeze(1).expand(b, 3, h, w).contiguous()
    augment = CopyPaste(p=1.0, hflip_p=0.5, scale_range=(0.6, 1.5), translate=0.3, kind=CLASS_MAP)
    for seed in range(5):
        params = augment.sample(images, masks, np.random.default_rng(seed))
        out_images, out_masks = paste(images, masks, params["src_images"], params["src_masks"], params["region"])
        assert torch.equal(out_images[:, 0].long() // 30 - 1, out_masks)
        assert params["region"].any()
        assert torch.equal(out_masks[params["region"]], params["src_masks"][params["region"]])
        assert (out_masks[params["region"]] > 0).all()  # only object pixels are pasted


def test_copy_paste_mirror_lands_where_expected():
    images, masks = batch_with_objects(b=2, h=16, w=20)
    augment = CopyPaste(p=1.0, classes=[2], hflip_p=1.0, kind=CLASS_MAP)
    params = augment.sample(images, masks, np.random.default_rng(0))
    out_images, out_masks = paste(images, masks, params["src_images"], params["src_masks"], params["region"])
    expected = torch.flip(masks[1] == 2, dims=[1])
    assert torch.equal(out_masks[0] == 2, expected)
    assert (out_images[0][:, expected] == 201).all()


def test_batch_augment_handles_multilabel_boolean_masks():
    images, class_maps = batch_with_objects(b=3)
    masks = torch.stack([class_maps == c for c in range(1, 5)], 1)  # [B, C=4, H, W] bool
    masks[0, 3, :4, :4] = True  # an overlapping second label in image 0
    out_images, out_masks = CopyPaste(p=1.0, classes=[1], kind=target_kind("binary_masks"))(images, masks)  # channel 1 = second class
    assert out_masks.dtype == torch.bool and out_masks.shape == masks.shape
    obj = masks[1, 1]
    receivers = [i for i in range(3) if torch.equal(out_masks[i][:, obj], masks[1][:, obj]) and i != 1]
    assert receivers, "the channel-1 object of image 1 was pasted nowhere"
    for i in receivers:
        assert (out_images[i][:, obj] == 201).all()
    out_images, out_masks = CutMix(p=1.0)(images, masks, torch.Generator().manual_seed(0))
    changed = (out_images != images).any(1)
    assert out_masks.shape == masks.shape and changed.any()
    for i in range(3):
        src = [j for j in range(3) if j != i and torch.equal(out_images[i][:, changed[i]], images[j][:, changed[i]])]
        assert any(torch.equal(out_masks[i][:, changed[i]], masks[j][:, changed[i]]) for j in src)


def test_batch_augment_config_validation_and_build():
    cfg = config_from_dict({"augment": {"batch": [{"name": "cutmix", "p": 0.3, "alpha": 0.5},
                                                  {"name": "copy_paste", "classes": ["Battery"], "hflip_p": 0.5}]}})
    pipeline = build_batch_augment(cfg.augment.batch, LabelSpec(("Background", "Metal", "Battery"), 255))
    assert [type(a).__name__ for a in pipeline.augments] == ["CutMix", "CopyPaste"]
    assert pipeline.augments[0].p == 0.3 and pipeline.augments[1].classes == (2,)
    assert build_batch_augment([], LabelSpec(("Background",), 255)) is None
    # Names and parameters are preflight problems; p is checked at config load.
    def problems(spec):
        return config_problems(config_from_dict({"augment": {"batch": [{"name": "cutmix"}, spec]}}))

    (problem,) = problems({"name": "cutmx"})
    assert problem.startswith("augment.batch[1]: unknown batch augmentation 'cutmx'; did you mean 'cutmix'?")
    assert problems({"name": "cutmix", "beta": 1}) == ["augment.batch[1].beta: unknown parameter for cutmix"]
    (problem,) = problems({"name": "copy_paste", "scale_range": [2, 1]})
    assert problem.startswith("augment.batch[1] (copy_paste): scale_range")
    assert problems({"name": "copy_paste", "classes": ["Battery"]}) == []  # class names are checked once the classes are known
    with pytest.raises(ConfigError, match=r"augment.batch.0.p"):
        config_from_dict({"augment": {"batch": [{"name": "cutmix", "p": 2}]}})
    with pytest.raises(ConfigError, match=r"unknown class 'Batery'; did you mean 'Battery'\?"):
        build_batch_augment([BatchAugmentSpec(name="copy_paste", classes=["Batery"])], LabelSpec(("Background", "Battery"), 255))
