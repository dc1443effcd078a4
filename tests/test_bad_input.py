"""The bad-input catalogue: every kind of broken input seglab checks, each with a test
of the exact error type and of a message that names the file, the record (image id,
annotation id, line, step) and what is wrong.

`CATALOGUE` maps each entry's title (the README's "Bad input" list, kept in step by
`test_readme_lists_the_catalogue`) to the test that covers it: one here, or an older
test elsewhere (checked to exist, so it cannot silently disappear). Adding a reader
(e.g. the polygon-JSON source) means adding its entries and one `Case` per entry.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch

import seglab.io
import seglab.losses
from seglab.kinds import target_kind
from seglab.cli import main
from seglab.config import config_from_dict, load_config
from seglab.core import training
from seglab.core.checkpoints import AtomicCheckpointIO
from seglab.core.run import load_run
from seglab.core.training import train
from seglab.data import collect_problems
from seglab.data.labels import LabelSpec
from seglab.data.sources.coco import CocoSource, read_coco, validate_coco
from seglab.data.sources.labelmap import LabelMapSource
from seglab.data.synth.coco import make_coco_dataset
from seglab.errors import CheckpointError, DataError, DataValidationError, SeglabError
from seglab.inference.predict import Prediction
from seglab.submission import WriteContext
from seglab.submission.segmentation import read_coco_csv, write_coco_csv
from tests.conftest import write_coco

ROOT = Path(__file__).resolve().parents[1]

# title -> "module::test" covering it. Titles are what the README lists.
CATALOGUE = {
    # images
    "missing image file": "tests.test_coco::test_missing_image_names_file_and_record",
    "unreadable image (not an image)": "tests.test_bad_input::test_bad_input[unreadable image]",
    "truncated image, found by `data validate` (JPEG) and `data validate --deep` (any format)": "tests.test_bad_input::test_truncated_png_needs_deep_validation",
    "truncated image, found when loaded during training": "tests.test_bad_input::test_bad_input[truncated JPEG at load time]",
    "image size differing from its record": "tests.test_coco::test_image_size_differs_from_record",
    "implausible image size in a record (0, negative, > 65535)": "tests.test_bad_input::test_bad_input[implausible size]",
    # COCO records
    "malformed JSON (line and column)": "tests.test_coco::test_empty_split_and_malformed_json",
    "annotation file that is not UTF-8": "tests.test_bad_input::test_bad_input[not UTF-8]",
    "annotation file not found": "tests.test_bad_input::test_bad_input[annotation file not found]",
    "record with a missing or wrongly typed key": "tests.test_bad_input::test_bad_input[wrongly typed key]",
    "polygon with fewer than 3 points": "tests.test_coco::test_broken_segmentations",
    "polygon with an odd coordinate count": "tests.test_coco::test_broken_segmentations",
    "polygon entirely outside the image": "tests.test_coco::test_broken_segmentations",
    "polygon vertex absurdly far outside the image": "tests.test_bad_input::test_bad_input[vertex far away]",
    "RLE whose size differs from the image": "tests.test_coco::test_broken_segmentations",
    "RLE whose runs do not cover the image exactly": "tests.test_coco::test_broken_segmentations",
    "compressed RLE string that is not valid": "tests.test_bad_input::test_bad_input[bad RLE string]",
    "segmentation that is neither polygons nor RLE": "tests.test_coco::test_broken_segmentations",
    "unknown category id": "tests.test_coco::test_unknown_category_and_orphan_and_duplicates_all_listed",
    "duplicate image ids": "tests.test_coco::test_unknown_category_and_orphan_and_duplicates_all_listed",
    "duplicate annotation ids": "tests.test_bad_input::test_bad_input[duplicate annotation id]",
    "duplicate category ids": "tests.test_bad_input::test_bad_input[duplicate category id]",
    "annotation pointing to a missing image id": "tests.test_coco::test_unknown_category_and_orphan_and_duplicates_all_listed",
    "empty split": "tests.test_coco::test_empty_split_and_malformed_json",
    # classes
    "class list in the config that does not match the data": "tests.test_coco::test_label_config_errors_are_clear",
    "category id without a class in data.coco.category_map": "tests.test_coco::test_label_config_errors_are_clear",
    "label-map PNG missing": "tests.test_bad_input::test_bad_input[label PNG missing]",
    "label-map PNG with values outside the class map": "tests.test_bad_input::test_bad_input[label PNG stray values]",
    # config
    "config: unknown key (with the closest valid key)": "tests.test_config::test_unknown_key_names_the_path_and_suggests",
    "config: wrong type": "tests.test_config::test_wrong_values_name_the_key",
    "config: negative learning rate": "tests.test_config::test_wrong_values_name_the_key",
    "config: batch size 0": "tests.test_config::test_wrong_values_name_the_key",
    "config: missing file, invalid YAML (line)": "tests.test_config::test_missing_file_and_bad_yaml",
    "config: unknown model name": "tests.test_bad_input::test_all_problems_before_training_are_listed_at_once",
    "config and data problems listed together, before training": "tests.test_bad_input::test_all_problems_before_training_are_listed_at_once",
    # checkpoints
    "checkpoint from a different class count (evaluate/predict)": "tests.test_bad_input::test_checkpoint_from_another_class_count_or_model",
    "checkpoint from a different model (evaluate/predict)": "tests.test_bad_input::test_checkpoint_from_another_class_count_or_model",
    "checkpoint without metadata whose tensors do not fit": "tests.test_bad_input::test_checkpoint_from_another_class_count_or_model",
    "`--resume` with a different model or class list": "tests.test_bad_input::test_resume_with_another_model_or_classes",
    "`--resume` with nothing to resume": "tests.test_bad_input::test_resume_with_another_model_or_classes",
    "checkpoint that would run code when loaded (refused, weights only)": "tests.test_safe_loading::test_checkpoint_with_code_is_refused_not_run",
    "run folder that already holds a run (never overwritten)": "tests.test_train_e2e::test_resume_continues_from_last_checkpoint",
    # outputs and training
    "submission CSV with a wrong row count, missing, extra or reordered ids": "tests.test_bad_input::test_submission_rows_are_checked_against_the_test_split",
    "submission CSV row with the wrong number of values": "tests.test_bad_input::test_submission_rows_are_checked_against_the_test_split",
    "NaN/inf loss (stops with step and image ids; last good checkpoint kept)": "tests.test_bad_input::test_nan_loss_stops_and_keeps_the_last_good_checkpoint",
    "NaN/inf weights are never written over a good checkpoint": "tests.test_bad_input::test_non_finite_weights_are_never_checkpointed",
    "out of GPU memory (suggests batch size, accumulation, bf16)": "tests.test_bad_input::test_out_of_memory_suggests_what_to_change",
    "output folder not writable": "tests.test_bad_input::test_output_folder_not_writable",
    "`data cache` into a cache folder that cannot be written (one line, not a silent nothing)": "tests.test_cache_build::test_an_unwritable_cache_folder_is_one_line_not_a_silent_nothing",
    "disk full while writing a checkpoint (previous one kept)": "tests.test_bad_input::test_disk_full_while_checkpointing_keeps_the_previous_one",
    # competition-B readers
    "polygon JSON with an unknown label": "tests.test_multilabel_data::test_data_problems_are_reported_one_line_each",
    "metadata table missing an ID": "tests.test_multilabel_data::test_xlsx_metadata_and_numeric_id_matching",
    "file name in a data file that is absolute or climbs out with `..` (refused unless data.allow_outside_root)": "tests.test_outputs_and_runs::test_names_leaving_the_root_are_refused_by_validation_and_the_reader",
    "CSV path or polygon split-list entry that leaves the data folder": "tests.test_outputs_and_runs::test_csv_and_polygon_list_names_are_confined",
    "per-image output name that would leave --out, or two images mapping to one output name": "tests.test_outputs_and_runs::test_output_folder_is_written_whole_and_confined",
    "`--out` that is an input file or a folder seglab did not write (nothing written over)": "tests.test_outputs_and_runs::test_output_folder_refuses_a_folder_seglab_did_not_write",
    "`predict --format png` over an earlier prediction (replaced whole, no stale file) or over the test images": "tests.test_outputs_and_runs::test_predict_png_never_writes_over_an_input_nor_outside_out",
    "`data rle-decode` with an escaping or colliding image name": "tests.test_outputs_and_runs::test_rle_decode_names_are_confined_and_collisions_refused",
    "a second `train`/`--resume` into a run folder another process holds": "tests.test_outputs_and_runs::test_a_second_process_cannot_train_into_a_held_run_folder",
    "run-folder lock left by a killed process (taken over, said on the console)": "tests.test_outputs_and_runs::test_a_stale_lock_is_taken_over_and_said",
    "files created 0600 whatever the umask (now created with the user's umask)": "tests.test_outputs_and_runs::test_files_are_created_with_the_users_umask",
    "label PNG edited after caching, even keeping its size and mtime (cache miss)": "tests.test_cache_and_images::test_labelmap_edit_keeping_size_and_mtime_is_a_cache_miss",
    "polygon JSON edited after caching, even keeping its size and mtime (cache miss)": "tests.test_cache_and_images::test_polygon_edit_keeping_size_and_mtime_is_a_cache_miss",
    "class map changed after caching (cache miss)": "tests.test_cache_and_images::test_coco_category_map_change_is_a_cache_miss",
    "JPEG with an EXIF orientation (image and label map turned alike, or the disagreement reported)": "tests.test_cache_and_images::test_exif_orientation_turns_image_and_label_map_alike",
    "COCO record of an EXIF-rotated image (its upright size)": "tests.test_cache_and_images::test_coco_record_size_is_the_upright_size",
    "label map of another size than its image (an error, never resized)": "tests.test_cache_and_images::test_label_map_of_another_size_is_an_error_not_resized",
    "label map that is RGB or grey+alpha (a palette PNG is read as its indices)": "tests.test_cache_and_images::test_label_map_modes",
    "label-map values outside the class map, found by `data validate --deep`": "tests.test_cache_and_images::test_deep_validation_finds_label_values_outside_the_class_map",
    "`--resume` with other label meanings (data.coco.category_map, classes...; labels.json kept)": "tests.test_outputs_and_runs::test_resume_refuses_other_label_meanings_and_keeps_labels_json",
    "config: a key given twice in one YAML mapping": "tests.test_readers_checked::test_yaml_duplicate_keys_are_refused",
    "config: inf/nan or true/false for a number, limit_train_batches 0": "tests.test_readers_checked::test_numbers_reject_inf_nan_and_bools",
    "polygon JSON vertex absurdly far outside the image, or a `label` that is not a string": "tests.test_fuzz_readers::test_polygon_labels_that_used_to_escape_validation",
    "splits sharing an image file or a person/group": "tests.test_readers_checked::test_train_and_val_sharing_images_or_people_is_an_error",
    "mask-status table disagreeing with the person's folder name": "tests.test_readers_checked::test_maskstatus_table_disagreeing_with_the_folder_name",
    "mask-status age negative or absurd, a person listed twice": "tests.test_readers_checked::test_maskstatus_absurd_ages_and_duplicated_persons",
    "mask-status images loose in the folder or of an unknown mask kind": "tests.test_readers_checked::test_maskstatus_loose_images_and_unknown_kinds_are_reported",
    "image-folder class folder without images (not a class), images loose in the split folder": "tests.test_readers_checked::test_empty_class_folder_is_not_a_class_and_loose_images_are_reported",
    "an image listed twice in a classification CSV or a label-map split list": "tests.test_readers_checked::test_an_image_listed_twice_is_reported",
    "submission file_name holding a comma or a quote (quoted; reads back)": "tests.test_readers_checked::test_coco_csv_quotes_a_comma_in_file_name_and_reads_back",
    "CSV row with fewer or more values than its header (a cut last row)": "tests.test_readers_checked::test_short_last_csv_row_is_one_line",
    "CSV label of Unicode digits": "tests.test_readers_checked::test_unicode_digits_are_not_class_indices",
    "trainer settings Lightning would refuse (no GPU, unknown accelerator, strategy or precision) and model.in_channels other than 3, found before training": "tests.test_one_line_errors::test_trainer_settings_lightning_would_refuse_are_found_before_training",
    "Lightning's own configuration errors and errors raised in DataLoader workers": "tests.test_one_line_errors::test_lightning_and_worker_errors_become_one_line",
    "images of different sizes in one batch without data.image_size": "tests.test_one_line_errors::test_images_of_mixed_sizes_in_a_batch_are_explained",
    "config that is not UTF-8; an integer of thousands of digits (JSON, YAML, override)": "tests.test_one_line_errors::test_non_utf8_config_and_huge_integers",
    "corrupt RUN/labels.json; `report` into a folder that cannot be written": "tests.test_one_line_errors::test_corrupt_labels_json_and_unwritable_report_folder",
    "any other operating-system error (one line naming the file)": "tests.test_one_line_errors::test_os_errors_are_one_line_naming_the_file",
    "any mutation of a COCO or polygon JSON file (fuzzed)": "tests.test_fuzz_readers::test_mutated_files_load_or_raise_seglab_errors",
    "any label-map PNG (fuzzed)": "tests.test_fuzz_tables_and_folders::test_fuzzed_label_maps_load_or_raise_seglab_errors",
    "any classification CSV (fuzzed)": "tests.test_fuzz_tables_and_folders::test_fuzzed_csv_loads_or_raises_seglab_errors",
    "any image-folder tree (fuzzed)": "tests.test_fuzz_tables_and_folders::test_fuzzed_image_folders_load_or_raise_seglab_errors",
    "any mask-status layout (fuzzed)": "tests.test_fuzz_tables_and_folders::test_fuzzed_mask_status_loads_or_raises_seglab_errors",
    "any command-line override (fuzzed)": "tests.test_fuzz_tables_and_folders::test_fuzzed_overrides_load_or_raise_config_errors",
}
# Entries whose reader is not merged yet (listed in the README as pending); none now.
PENDING: dict[str, str] = {}


def test_catalogue_points_at_existing_tests():
    for title, ref in CATALOGUE.items():
        module, name = ref.split("::")
        assert hasattr(importlib.import_module(module), name.split("[")[0]), f"{title}: {ref} does not exist"
        if "[" in name:
            assert name.split("[")[1].rstrip("]") in {c.id for c in CASES}, f"{title}: no case {name}"
    assert len(set(CATALOGUE) - set(PENDING)) >= 25


def test_readme_lists_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    listed = [line[2:].strip() for line in section.splitlines() if line.startswith("- ")]
    assert listed == [t + (" (pending: reader not merged yet)" if t in PENDING else "") for t in CATALOGUE]


# ----------------------------------------------------------------- table


CATS = [{"id": 0, "name": "paper"}, {"id": 1, "name": "metal"}]
LABELS = LabelSpec(("Background", "paper", "metal"), 255, {0: 1, 1: 2})
IMG = {"id": 1, "file_name": "d/x.jpg", "height": 8, "width": 8}
BIG = dict(IMG, height=64, width=64)  # big enough that a cut falls in the pixel data, not the header


def coco_problems(tmp_path, images=(IMG,), anns=(), cats=CATS, write_images=True):
    path = write_coco(tmp_path, "train.json", list(images), list(anns), cats, write_images)
    problems = validate_coco(read_coco(path, tmp_path), LABELS)
    if problems:
        raise DataValidationError(problems)


def ann(**kw):
    return {"id": 42, "image_id": 1, "category_id": 0, "segmentation": [[1, 1, 6, 1, 6, 6]], **kw}


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def noisy_jpeg(path: Path, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))


def unreadable(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jpg").write_text("not an image")
    coco_problems(tmp_path, write_images=False)


def truncated_at_load(tmp_path):
    noisy_jpeg(tmp_path / "d" / "x.jpg")
    write_coco(tmp_path, "train.json", [BIG], [], CATS, write_images=False)
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.root={tmp_path}", "data.train=train.json", "data.classes=null", "data.coco=null"])
    source = CocoSource(cfg.data, "train", LABELS)
    truncate(tmp_path / "d" / "x.jpg")  # broken after validation: found when the loader reads it
    source.load_image(0)


def wrongly_typed(tmp_path):
    write_coco(tmp_path, "train.json", [dict(IMG, height="8")], [], CATS, write_images=False)
    read_coco(tmp_path / "train.json", tmp_path)


def implausible(tmp_path):
    write_coco(tmp_path, "train.json", [dict(IMG, height=70000)], [], CATS, write_images=False)
    read_coco(tmp_path / "train.json", tmp_path)


def not_utf8(tmp_path):
    (tmp_path / "train.json").write_bytes(b'{"images": [{"file_name": "\xff\xfe"}]}')
    read_coco(tmp_path / "train.json", tmp_path)


def file_not_found(tmp_path):
    read_coco(tmp_path / "nope.json", tmp_path)


def labelmap(tmp_path, mask_values: np.ndarray | None):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    if mask_values is not None:
        cv2.imwrite(str(tmp_path / "masks" / "a.png"), mask_values.astype(np.uint8))
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={tmp_path}", "data.format=labelmap", "data.train=null", "data.val=null", "data.test=null",
        "data.classes=[bg, road]", "data.coco=null",
    ])
    labels, problems = collect_problems(cfg, ("train",))
    if problems:
        raise DataValidationError(problems)
    source = LabelMapSource(cfg.data, "train", labels)
    source.load_target(0)


@dataclass
class Case:
    id: str
    trigger: Callable
    error: type
    says: list[str] = field(default_factory=list)  # the file, the record and what is wrong


CASES = [
    Case("unreadable image", unreadable, DataValidationError, ["train.json: image 1 ('d/x.jpg')", "unreadable image", "x.jpg"]),
    Case("truncated JPEG at load time", truncated_at_load, DataError, ["train.json: image 1 ('d/x.jpg')", "truncated image", "x.jpg"]),
    Case("implausible size", implausible, DataError, ["train.json: image 1", "implausible size 70000x8"]),
    Case("not UTF-8", not_utf8, DataError, ["train.json", "not UTF-8 text", "at byte"]),
    Case("annotation file not found", file_not_found, DataError, ["nope.json", "annotation file not found"]),
    Case("wrongly typed key", wrongly_typed, DataError, ["train.json: images[0] (id 1)", "'height' missing or not int"]),
    Case("vertex far away", lambda p: coco_problems(p, anns=[ann(segmentation=[[1, 1, 6, 1, 1e9, 6]])]), DataValidationError,
         ["train.json: annotation 42 (image 1)", "polygon 0 has a vertex far outside the 8x8 image"]),
    Case("bad RLE string", lambda p: coco_problems(p, anns=[ann(segmentation={"size": [8, 8], "counts": "0~~~~"})]), DataValidationError,
         ["train.json: annotation 42 (image 1)", "compressed RLE 'counts' is not a valid COCO RLE string"]),
    Case("duplicate annotation id", lambda p: coco_problems(p, anns=[ann(), ann()]), DataValidationError,
         ["train.json: annotation 42 (image 1)", "duplicate annotation id"]),
    Case("duplicate category id", lambda p: coco_problems(p, cats=CATS + [{"id": 1, "name": "glass"}]), DataValidationError,
         ["train.json: categories[2]", "duplicate category id 1"]),
    Case("label PNG missing", lambda p: labelmap(p, None), DataValidationError, ["images", "a: label file not found", "masks/a.png"]),
    Case("label PNG stray values", lambda p: labelmap(p, np.array([[0, 1, 7, 7]] * 4)), DataError,
         ["masks/a.png", "pixel values [7] are not in data.labelmap.mask_value_map / classes"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path):
    with pytest.raises(case.error) as e:
        case.trigger(tmp_path)
    assert type(e.value) is case.error
    for text in case.says:
        assert text in str(e.value), f"{text!r} not in {str(e.value)!r}"


def test_truncated_png_needs_deep_validation(tmp_path, capsys):
    """`data validate` finds a cut JPEG (its end marker is missing); a cut PNG opens fine
    for its size, so only `--deep` (a full decode of every image) finds it."""
    images = [BIG, dict(BIG, id=2, file_name="d/y.png")]
    write_coco(tmp_path, "train.json", images, [], CATS, write_images=False)
    noisy_jpeg(tmp_path / "d" / "x.jpg")
    cv2.imwrite(str(tmp_path / "d" / "y.png"), np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncate(tmp_path / "d" / "x.jpg")
    truncate(tmp_path / "d" / "y.png", 0.8)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{root: {tmp_path}, train: train.json, classes: [Background, paper, metal], coco: {{category_map: {{0: 1, 1: 2}}}}}}\n")
    with pytest.raises(SystemExit):
        main(["data", "validate", str(config)])
    out = capsys.readouterr().out
    assert "train.json: image 1 ('d/x.jpg'): truncated or corrupt image" in out and "y.png" not in out
    with pytest.raises(SystemExit):
        main(["data", "validate", str(config), "--deep"])
    out = capsys.readouterr().out
    assert "train.json: image 1 ('d/x.jpg'): truncated or corrupt image" in out
    assert "train.json: image 2 ('d/y.png'): truncated or corrupt image" in out and "2 problem(s)" in out


# ------------------------------------------------------- all problems at once


def test_all_problems_before_training_are_listed_at_once(tmp_path, capsys):
    data = tmp_path / "data"
    make_coco_dataset(data, n_train=3, n_val=2, n_test=1, size=32, seed=0)
    doc = json.loads((data / "train.json").read_text())
    (data / doc["images"][1]["file_name"]).unlink()
    doc["annotations"][0]["category_id"] = 99
    (data / "train.json").write_text(json.dumps(doc))
    (data / "val.json").write_text('{"images": [')
    out = tmp_path / "file"
    out.write_text("a file where the run folder should go")
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.root={data}", "model.arch=Unett", "data.classes=[Background, disc]"])
    with pytest.raises(DataValidationError) as e:
        train(cfg, out / "run")
    text = str(e.value)
    assert f"output folder is not writable ({out} is a file, not a folder)" in text
    assert "model.arch: unknown model 'Unett'; did you mean 'Unet'?" in text
    assert "data.coco.category_map.1: class index 2 out of range for 2 classes" in text  # class list vs data
    missing = f"train.json: image {doc['images'][1]['id']} ({doc['images'][1]['file_name']!r}): image file not found"
    unknown = f"train.json: annotation {doc['annotations'][0]['id']} (image {doc['annotations'][0]['image_id']}): unknown category id 99"
    assert missing in text and unknown in text
    assert "val.json: malformed JSON at line 1, column 13" in text
    assert len(e.value.problems) == 6
    assert not (out / "run").exists()
    # `seglab data validate` lists the same class and data problems
    with pytest.raises(SystemExit):
        main(["data", "validate", str(ROOT / "configs" / "demo.yaml"), f"data.root={data}", "data.classes=[Background, disc]"])
    printed = capsys.readouterr().out
    assert "class index 2 out of range" in printed and missing in printed and unknown in printed and "val.json: malformed JSON" in printed
    assert "4 problem(s); classes: unresolved" in printed  # the test split is fine


# ------------------------------------------------------------ checkpoints


TINY = [
    "data.batch_size=2", "data.num_workers=0", "model.arch=deeplabv1", "model.params={width: 0.0625}",
    "trainer.max_epochs=1", "trainer.progress_bar=false", "logging.viz_every_n_epochs=0", "logging.loggers=[]",
    "schedule.warmup_epochs=0",
]


def tiny_config(data: Path, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", [f"data.root={data}", *TINY, *extra])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("tiny")
    make_coco_dataset(data, n_train=8, n_val=2, n_test=2, size=32, seed=0)
    return data


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "r"
    train(tiny_config(tiny_data), run)
    return run


def test_checkpoint_from_another_class_count_or_model(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)

    fewer = dict(ckpt, seglab=dict(ckpt["seglab"], classes=["Background", "disc", "square"]))
    torch.save(fewer, tmp_path / "fewer.ckpt")
    with pytest.raises(CheckpointError) as e:
        main_raising(["evaluate", str(tiny_run), "--checkpoint", str(tmp_path / "fewer.ckpt"), "--device", "cpu"])
    assert f"{tmp_path / 'fewer.ckpt'}: trained for 3 classes" in str(e.value) and "the config has 7" in str(e.value)

    other = dict(ckpt, seglab=dict(ckpt["seglab"], arch="Unet", encoder="resnet34"))
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"other.ckpt: written by model Unet/resnet34, the config builds deeplabv1/"):
        main_raising(["predict", str(tiny_run), "--checkpoint", str(tmp_path / "other.ckpt"), "--out", str(tmp_path / "s.csv")])

    head = next(k for k in ckpt["state_dict"] if k.endswith("weight") and ckpt["state_dict"][k].shape[0] == 7)
    bare = {"state_dict": dict(ckpt["state_dict"], **{head: torch.zeros((3,) + tuple(ckpt["state_dict"][head].shape[1:]))})}
    torch.save(bare, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError) as e:
        load_run(tiny_run, str(tmp_path / "bare.ckpt"), device="cpu")  # what evaluate, predict and ensemble load through
    assert f"bare.ckpt: {head}: shape (3," in str(e.value) and "in the model (another model or class count?)" in str(e.value)
    assert main(["evaluate", str(tiny_run), "--checkpoint", str(tmp_path / "bare.ckpt"), "--device", "cpu"]) == 2


def main_raising(argv):
    """Run a CLI command but let its SeglabError through (the CLI itself prints one line)."""
    from seglab.cli import build_parser

    args = build_parser().parse_args(argv)
    args.func(args)


def test_resume_with_another_model_or_classes(tiny_run, tmp_path, capsys):
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    labels_before = (run / "labels.json").read_text()
    for override, message in [
        ("data.remap={star: Background}", "data.remap cannot change in a resumed run"),
        ("model.arch=Unet", "model.arch cannot change in a resumed run"),
    ]:
        assert main(["train", "--resume", str(run), override, "trainer.max_epochs=9"]) == 2
        assert message in capsys.readouterr().err
    assert (run / "labels.json").read_text() == labels_before  # nothing in the run folder was rewritten
    with pytest.raises(SeglabError, match=r"nothing to resume \(no checkpoints/last.ckpt\)"):
        train(tiny_config(tmp_path), tmp_path / "empty", resume=True)


# ------------------------------------------------------------- submission


def prediction(image_id: str, output: np.ndarray) -> Prediction:
    return Prediction(image_id, Path(image_id), torch.zeros(1), output)


def test_submission_rows_are_checked_against_the_test_split(tmp_path):
    ids = ["a/1.jpg", "a/2.jpg", "b/3.jpg"]
    preds = [prediction(i, np.zeros((8, 8), np.uint8)) for i in ids]
    ctx = WriteContext(["Background", "paper"], config_from_dict({"submission": {"size": [4, 4]}}), "test", target_kind("class_map"))
    cases = [
        (preds[:2], r"sub.csv: 2 rows, the test split has 3 images; missing e.g. \['b/3.jpg'\]"),
        (preds + [prediction("c/4.jpg", preds[0].output)], r"sub.csv: 4 rows, the test split has 3 images; not in the test split e.g. \['c/4.jpg'\]"),
        ([preds[1], preds[0], preds[2]], r"sub.csv: line 2: image 'a/2.jpg' is out of order \(expected 'a/1.jpg'\)"),
        ([preds[0], preds[1], prediction("z.jpg", preds[0].output)], r"sub.csv: line 4: image 'z.jpg' is not in the test split"),
    ]
    for rows, message in cases:
        assert write_coco_csv(rows, tmp_path / "sub.csv", ctx) == len(rows)
        with pytest.raises(DataError, match=message):
            read_coco_csv(tmp_path / "sub.csv", (4, 4), expected_ids=ids)
    write_coco_csv(preds, tmp_path / "sub.csv", ctx)
    assert list(read_coco_csv(tmp_path / "sub.csv", (4, 4), expected_ids=ids)) == ids
    text = (tmp_path / "sub.csv").read_text().splitlines()
    (tmp_path / "sub.csv").write_text("\n".join(text[:2] + [text[2] + " 0"] + text[3:] + [text[1]]) + "\n")
    with pytest.raises(DataError, match=r"sub.csv: line 3 \(a/2.jpg\): 17 values, expected 16"):
        read_coco_csv(tmp_path / "sub.csv", (4, 4))


# --------------------------------------------------------------- training


class NaNOnCall(torch.nn.Module):
    """The real loss, but NaN on the n-th training call."""

    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, logits, target):
        loss = self.inner(logits, target)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.n:
                return loss * float("nan")
        return loss


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    build = seglab.losses.build_loss  # what the task's build_loss calls
    monkeypatch.setattr(seglab.losses, "build_loss", lambda *a, **k: NaNOnCall(build(*a, **k), 3))
    saved = []
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record_saves(AtomicCheckpointIO.save_checkpoint, saved))
    run = tmp_path / "r"
    with pytest.raises(SeglabError) as e:
        train(tiny_config(tiny_data, "trainer.checkpoint_every_n_steps=1"), run)
    msg = str(e.value)
    assert re.search(r"non-finite loss \(nan\) at step 2, epoch 0, images \['batch_0\d_vt/train_000\d.jpg', 'batch_0\d_vt/train_000\d.jpg'\]", msg), msg
    assert "the last good checkpoint is kept" in msg
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 == saved[-1]["global_step"]  # written after step 2, nothing after the NaN
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert all(torch.equal(last["state_dict"][k], saved[-1]["state_dict"][k]) for k in last["state_dict"])


def record_saves(save, saved):
    def wrapper(self, checkpoint, path, storage_options=None):
        save(self, checkpoint, path, storage_options)
        saved.append({"global_step": checkpoint["global_step"], "state_dict": {k: v.clone() for k, v in checkpoint["state_dict"].items()}})
    return wrapper


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(SeglabError, match=r"last.ckpt: not written: weights \['w'\] are NaN/inf at step 5; the previous checkpoint is kept"):
        io.save_checkpoint({"global_step": 5, "state_dict": {"w": torch.tensor([1.0, float("inf"), 0.0])}}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 4


@pytest.mark.parametrize("step, stage, batch_key", [
    ("training_step", "training", "data.batch_size (now 2)"),
    ("validation_step", "validation", "data.val_batch_size (now 2)"),
])
def test_out_of_memory_suggests_what_to_change(step, stage, batch_key, tiny_data, tmp_path, monkeypatch):
    def oom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(training.LabModule, step, oom)
    with pytest.raises(SeglabError) as e:
        train(tiny_config(tiny_data), tmp_path / "r")
    msg = str(e.value)
    assert type(e.value) is SeglabError
    assert f"out of GPU memory during {stage} at step 0, epoch 0 (CUDA out of memory. Tried to allocate 20.00 GiB)" in msg
    for hint in (f"Lower {batch_key}", "trainer.accumulate_grad_batches (now 1)", "trainer.precision=bf16 (now 32)"):
        assert hint in msg


def test_output_folder_not_writable(tiny_run, tiny_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataValidationError) as e:
        train(tiny_config(tiny_data), blocker / "run")
    assert e.value.problems == [f"{blocker / 'run'}: output folder is not writable ({blocker} is a file, not a folder)"]
    with pytest.raises(SeglabError, match=r"a-file/sub.csv: cannot write here \(.*a-file is a file, not a folder\)"):
        main_raising(["predict", str(tiny_run), "--out", str(blocker / "sub.csv")])


def test_disk_full_while_checkpointing_keeps_the_previous_one(tiny_data, tmp_path, monkeypatch):
    """The disk fills up during the third checkpoint write: the run stops with a clear
    message, the second checkpoint is still there and whole, no temporary file is left."""
    binary_opens = []

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    def fdopen(fd, mode="r", *args, **kwargs):
        f = os.fdopen(fd, mode, *args, **kwargs)
        if mode == "wb":
            binary_opens.append(1)
            if len(binary_opens) >= 3:
                return FullDisk(f)
        return f

    monkeypatch.setattr(seglab.io, "os", _OsWith(fdopen=fdopen))
    run = tmp_path / "r"
    with pytest.raises(SeglabError) as e:
        train(tiny_config(tiny_data, "trainer.checkpoint_every_n_steps=1"), run)
    assert str(e.value) == f"{run / 'checkpoints' / 'last.ckpt'}: write failed (No space left on device); the previous file, if any, is untouched"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]


class _OsWith:
    """The os module with some functions replaced."""

    def __init__(self, **replaced):
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(os, name)
