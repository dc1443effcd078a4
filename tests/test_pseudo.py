"""Pseudo-labels: only confident pixels are labelled, the file is an ordinary COCO set
that `data.extra_train` adds to training, and test images never reach validation."""

import json

import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import config_from_dict
from seglab.data import build_dataset, check_data, resolve_labels
from seglab.data.extra import extra_labels
from seglab.data.coco import read_coco
from seglab.data.sources.coco import CocoSource
from seglab.inference.ensemble import Member, iter_member_probs
from seglab.errors import DataError
from seglab.inference.pseudo import class_map_annotations, confident_class_map, write_pseudo_labels
from seglab.core.training import train
from tests.workflow_helpers import constructed_run, tiny_config


def test_confident_class_map_keeps_only_confident_pixels():
    probs = torch.tensor([[[0.95, 0.50], [0.10, 0.30]],
                          [[0.03, 0.45], [0.85, 0.30]],
                          [[0.02, 0.05], [0.05, 0.40]]])  # [C=3, 2, 2]
    class_map, share = confident_class_map(probs, 0.8, 255)
    assert class_map.tolist() == [[0, 255], [1, 255]] and share == 0.5
    class_map, share = confident_class_map(probs, 0.0, 255)
    assert class_map.tolist() == [[0, 0], [1, 2]] and share == 1.0


def test_annotations_round_trip_through_the_coco_reader(tmp_path):
    rng = np.random.default_rng(0)
    class_map = rng.integers(0, 4, (20, 30)).astype(np.uint8)
    class_map[rng.random((20, 30)) < 0.3] = 255
    anns = class_map_annotations(class_map, 0, 4, 255, 4, 0)
    assert [a["category_id"] for a in anns] == [1, 2, 3, 4]
    doc = {"images": [{"id": 0, "file_name": "x.png", "height": 20, "width": 30}], "annotations": anns,
           "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}, {"id": 4, "name": "ignore"}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    # the extra-set reader maps by name ...
    cfg = config_from_dict({"data": {"root": str(tmp_path), "train": "p.json", "classes": ["bg", "a", "b", "c"],
                                     "category_map": {1: 1, 2: 2, 3: 3, 4: "ignore"}}})
    labels = resolve_labels(cfg)
    spec = extra_labels(read_coco(tmp_path / "p.json", tmp_path), labels)
    assert spec.source_to_class == {1: 1, 2: 2, 3: 3, 4: 255}
    # ... and the plain COCO reader loads it with category 'ignore' mapped to ignore
    assert np.array_equal(CocoSource(cfg.data, "train", labels).load_mask(0), class_map)
    assert np.array_equal(CocoSource(cfg.data, "train", spec).load_mask(0), class_map)


@pytest.fixture(scope="module")
def run(synth_root, tmp_path_factory):
    return constructed_run(tmp_path_factory.mktemp("pseudo") / "run", tiny_config(synth_root))


def test_pseudo_labels_from_a_run_keep_confident_pixels_and_drop_unsure_images(run, synth_root, tmp_path, capsys):
    probs = [(sid, p) for sid, _, p, _, _ in iter_member_probs([Member(run)], "test")]
    threshold = float(np.median(probs[0][1].max(0).values.numpy()))
    out = tmp_path / "pl"
    assert main(["pseudo", str(run), "--split", "test", "--out", str(out), "--threshold", str(threshold), "--min-confident", "0"]) == 0
    assert "data.extra_train=" in capsys.readouterr().out
    doc = json.loads((out / "pseudo.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == [sid for sid, _ in probs]
    assert doc["categories"][-1] == {"id": 7, "name": "ignore"}
    cfg = tiny_config(synth_root)
    labels = resolve_labels(cfg)
    source = CocoSource(cfg.data.model_copy(update={"train": str(out / "pseudo.json")}), "train",
                        extra_labels(read_coco(out / "pseudo.json", synth_root), labels))
    for i, (sid, p) in enumerate(probs):
        conf, cls = p.max(0)
        mask = source.load_mask(i)
        confident = (conf >= threshold).numpy()
        assert np.array_equal(mask[confident], cls.numpy()[confident]), sid
        assert (mask[~confident] == 255).all(), sid
    # every image with a confident share below 100% is dropped at min_confident=1
    summary = write_pseudo_labels([Member(run)], tmp_path / "strict.json", "test", threshold, 1.0)
    shares = [float((p.max(0).values >= threshold).float().mean()) for _, p in probs]
    assert summary["images_kept"] == sum(s >= 1.0 for s in shares) and summary["images_dropped"] == sum(s < 1.0 for s in shares)


def test_extra_train_adds_the_pseudo_set_to_training(run, synth_root, tmp_path):
    summary = write_pseudo_labels([Member(run)], tmp_path / "pseudo.json", "test", threshold=0.0, min_confident=0.0)
    assert summary["images_kept"] == 4
    cfg = tiny_config(synth_root, f"data.extra_train=[{tmp_path / 'pseudo.json'}]", "trainer.limit_train_batches=2")
    labels = resolve_labels(cfg)
    check_data(cfg, labels, ("train", "val"))
    dataset = build_dataset(cfg, "train", labels, train=True, with_masks=True)
    assert len(dataset) == 12 + 4
    assert dataset[12]["id"] == json.loads((synth_root / "test.json").read_text())["images"][0]["file_name"]
    assert dataset[12]["mask"].shape == (64, 64)
    best = train(cfg, tmp_path / "run")  # one short epoch with the pseudo-labelled images in the batches
    assert 0 <= best["mIoU"] <= 1


def test_extra_images_in_the_validation_split_are_an_error(run, synth_root, tmp_path):
    write_pseudo_labels([Member(run)], tmp_path / "from_val.json", "val", threshold=0.0, min_confident=0.0)
    cfg = tiny_config(synth_root, f"data.extra_train=[{tmp_path / 'from_val.json'}]")
    with pytest.raises(DataError, match="is also in the validation split"):
        build_dataset(cfg, "train", resolve_labels(cfg), train=True)


def test_extra_set_with_an_unknown_class_is_an_error(synth_root, tmp_path):
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "hexagon"}]}
    (tmp_path / "x.json").write_text(json.dumps(doc))
    cfg = tiny_config(synth_root, f"data.extra_train=[{tmp_path / 'x.json'}]")
    with pytest.raises(DataError, match="'hexagon' is not a training class"):
        build_dataset(cfg, "train", resolve_labels(cfg), train=True)
