"""Competition C's label encoding and the classification config section."""

from pathlib import Path

import pytest

from seglab.config import load_config
from seglab.data import maskstatus
from seglab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def expected_band(age, bounds):
    return 0 if age < bounds[0] else (1 if age < bounds[1] else 2)


@pytest.mark.parametrize("bounds", [(30, 60), (30, 59), (30, 58)])
def test_every_mask_gender_age_combination(bounds):
    masks = {"mask1": 0, "mask2": 0, "mask3": 0, "mask4": 0, "mask5": 0, "incorrect_mask": 1, "normal": 2}
    seen = set()
    for kind, m in masks.items():
        for gender, g in (("male", 0), ("female", 1), ("Female", 1)):
            for age in range(18, 81):
                label = maskstatus.label_of(kind, gender, age, bounds)
                band = expected_band(age, bounds)
                assert label == 6 * m + 3 * g + band
                assert maskstatus.decode(label) == (m, g, band)
                seen.add(label)
    assert seen == set(range(18))


def test_age_boundary_knob_moves_the_late_fifties():
    assert maskstatus.age_band(29) == 0 and maskstatus.age_band(30) == 1
    assert maskstatus.age_band(59) == 1 and maskstatus.age_band(60) == 2
    assert maskstatus.age_band(59, (30, 59)) == 2 and maskstatus.age_band(58, (30, 59)) == 1
    assert maskstatus.age_band(58, (30, 58)) == 2 and maskstatus.age_band(57, (30, 58)) == 1
    assert maskstatus.label_of("normal", "female", 59, (30, 59)) == 17
    assert maskstatus.label_of("normal", "female", 59) == 16


def test_class_names_follow_the_bounds_and_the_index_order():
    names = maskstatus.class_names((30, 59))
    assert len(names) == len(set(names)) == 18
    assert names[0] == "wear/male/<30" and names[4] == "wear/female/30-58" and names[17] == "not_worn/female/>=59"
    for label, name in enumerate(names):
        m, g, a = maskstatus.decode(label)
        assert name.split("/") == [maskstatus.MASK_NAMES[m], ("male", "female")[g], maskstatus.band_names((30, 59))[a]]


def test_bad_names_are_refused():
    assert maskstatus.parse_person("000001_female_Asian_45") == ("000001", "female", 45)
    with pytest.raises(ValueError, match="is not <id>_<gender>_<race>_<age>"):
        maskstatus.parse_person("000001_female_Asian")
    with pytest.raises(ValueError, match="unknown mask kind"):
        maskstatus.label_of("mask6", "male", 20)
    with pytest.raises(ValueError, match="unknown gender"):
        maskstatus.label_of("mask1", "x", 20)


def test_facet_accuracies_fold_the_18_class_matrix():
    import torch

    from seglab.metrics.f1 import ClassificationConfusion, facet_accuracies

    cm = torch.zeros(18, 18, dtype=torch.int64)
    cm[0, 0] = 3       # right
    cm[0, 1] = 1       # age wrong only
    cm[0, 3] = 1       # gender wrong only
    cm[0, 12] = 1      # mask wrong only
    acc = facet_accuracies(cm, maskstatus.FACETS)
    assert acc == {"mask_accuracy": 5 / 6, "gender_accuracy": 5 / 6, "age_accuracy": 5 / 6}
    cm[1, 2] = 2       # age wrong only (true 'wear/male/30-59', predicted '>=60')
    acc = facet_accuracies(cm, maskstatus.FACETS)
    assert acc == {"mask_accuracy": 7 / 8, "gender_accuracy": 7 / 8, "age_accuracy": 5 / 8}
    # the classification metric reports them beside macro F1, from the same matrix
    metric = ClassificationConfusion(18, maskstatus.FACETS)
    metric.mat = cm.clone()
    scores = metric.compute()
    assert {k: scores[k] for k in acc} == acc and scores["accuracy"] == 3 / 8


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_classification_defaults_and_demo_config():
    cfg = load_config(ROOT / "configs" / "demo_cls.yaml")
    assert cfg.task == "classification" and cfg.model.arch == "classifier"
    assert cfg.eval.monitor == "macro_f1" and cfg.submission.format == "maskstatus"
    assert cfg.data.maskstatus.age_bounds == (30, 60) and cfg.data.fold == 0 and cfg.kfold.folds == 5


@pytest.mark.parametrize("text, message", [
    ("task: classification\ndata: {format: csv, image_size: [32, 32]}\nloss: [{name: dice}]\n", "loss[0].name: 'dice' is not a classification loss"),
    ("task: classification\ndata: {format: csv}\n", "data.image_size"),
    ("task: classification\ndata: {format: maskstatus, image_size: [32, 32], maskstatus: {age_bounds: [60, 30]}}\n", "data.maskstatus.age_bounds"),
    ("task: classification\ndata: {format: csv, image_size: [32, 32], fold: 5}\n", "data.fold: 5 is out of range for kfold.folds 5"),
    ("task: classification\ndata: {format: csv, image_size: [32, 32]}\nclassification: {head: cosface}\n", "classification.head"),
    ("task: classification\ndata: {format: csv, image_size: [32, 32]}\nsubmission: {format: coco_csv}\n", "submission.format: 'coco_csv' is not a classification format"),
    ("task: classification\ndata: {format: csv, image_size: [32, 32], classification: {n_splits: 5}}\n", "data.classification: unknown key"),
])
def test_wrong_classification_settings_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)


# Checked by the preflight (they need the training stack or the class list), not at load.
# maskstatus classes come from the encoding, so these configs need no data on disk.
MASKSTATUS = "task: classification\ndata: {format: maskstatus, image_size: [32, 32]}\n"


@pytest.mark.parametrize("text, message", [
    (MASKSTATUS + "model: {arch: Unet}\n", "model.arch: unknown classifier 'Unet'"),
    (MASKSTATUS + "classification: {uda: {weight: 1, strong: [{name: Flipp}]}}\n", "classification.uda.strong[0]: unknown albumentations transform 'Flipp'"),
    (MASKSTATUS + "eval: {monitor: mIoU}\n", "eval.monitor: 'mIoU' is not a classification metric"),
    ("task: classification\ndata: {format: coco, image_size: [32, 32]}\n", "task classification trains on class"),
    ("data: {format: maskstatus}\n", "'maskstatus' gives class targets; task multiclass trains on class_map"),
])
def test_wrong_settings_found_by_the_preflight_name_the_key(tmp_path, text, message):
    from seglab.core.training import preflight
    from seglab.errors import DataValidationError

    cfg = load_config(write(tmp_path, text))  # loads: these are not config-load errors
    with pytest.raises(DataValidationError) as e:
        preflight(cfg, None, ())
    assert any(message in p for p in e.value.problems), e.value.problems


def test_facet_accuracies_are_valid_monitors(tmp_path):
    from seglab.core.training import preflight

    cfg = load_config(write(tmp_path, MASKSTATUS + "eval: {monitor: age_accuracy}\n"))
    labels = preflight(cfg, None, ())
    assert labels.num_classes == 18 and set(labels.facets) == {"mask", "gender", "age"}
