"""Pseudo-labels: only confident pixels are labelled, the file is an ordinary COCO set
that `data.extra_train` adds to training, and test images never reach validation."""

import json

import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import config_from_dict
from seglab.core.run import load_run
from seglab.core.training import train
from seglab.data import build_dataset, check_data, resolve_labels
from seglab.data.labels import LabelSpec
from seglab.data.sources.coco import CocoSource, read_coco
from seglab.data.sources.combined import extra_labels, open_extra_sources
from seglab.errors import ConfigError, DataError
from seglab.inference.ensemble import Member
from seglab.inference.predict import predictions
from seglab.inference.pseudo import mask_annotations, write_pseudo_labels
from seglab.tasks import get_task
from tests.workflow_helpers import constructed_run, tiny_config

GAP = 1e-4  # thresholds and decisions are picked this far from any probability: no float tie decides


def test_confident_class_map_keeps_only_confident_pixels():
    probs = torch.tensor([[[0.95, 0.50], [0.10, 0.30]],
                          [[0.03, 0.45], [0.85, 0.30]],
                          [[0.02, 0.05], [0.05, 0.40]]])  # [C=3, 2, 2]
    labels = LabelSpec(("Background", "a", "b"), 255, {}, "class_map")
    task = get_task("multiclass")
    class_map, share = task.confident_target(probs, 0.8, labels)
    assert class_map.dtype == np.uint8
    assert class_map.tolist() == [[0, 255], [1, 255]] and share == 0.5
    class_map, share = task.confident_target(probs, 0.0, labels)
    assert class_map.tolist() == [[0, 0], [1, 2]] and share == 1.0


def test_confident_multilabel_masks_are_the_decision_and_the_share_counts_both_sides():
    probs = torch.tensor([[[0.95, 0.50], [0.10, 0.30]],
                          [[0.03, 0.45], [0.85, 0.70]]])  # [C=2, 2, 2]
    labels = LabelSpec(("a", "b"), 255, {}, "binary_masks")
    task = get_task("multilabel")
    masks, share = task.confident_target(probs, 0.8, labels, torch.tensor([0.5, 0.6]))
    assert masks.tolist() == [[[True, False], [False, False]], [[False, False], [True, True]]]
    # confident: p >= 0.8 or p <= 0.2 -> 0.95, 0.10, 0.03, 0.85 of 8 decisions
    assert share == 0.5


def test_annotations_round_trip_through_the_coco_reader(tmp_path):
    rng = np.random.default_rng(0)
    class_map = rng.integers(0, 4, (20, 30)).astype(np.uint8)
    class_map[rng.random((20, 30)) < 0.3] = 255
    labels4 = LabelSpec(("bg", "a", "b", "c"), 255, {}, "class_map")
    anns = mask_annotations(get_task("multiclass").category_masks(class_map, labels4), 0, 0)
    assert [a["category_id"] for a in anns] == [1, 2, 3, 4]
    assert [a["id"] for a in anns] == [0, 1, 2, 3]
    assert sum(a["area"] for a in anns) == int((class_map != 0).sum())
    doc = {"images": [{"id": 0, "file_name": "x.png", "height": 20, "width": 30}], "annotations": anns,
           "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}, {"id": 4, "name": "ignore"}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    # the extra-set reader maps by name ...
    cfg = config_from_dict({"data": {"root": str(tmp_path), "train": "p.json", "classes": ["bg", "a", "b", "c"],
                                     "coco": {"category_map": {1: 1, 2: 2, 3: 3, 4: "ignore"}}}})
    labels = resolve_labels(cfg)
    spec = extra_labels(read_coco(tmp_path / "p.json", tmp_path), labels)
    assert spec.source_to_class == {1: 1, 2: 2, 3: 3, 4: 255}
    # ... and the plain COCO reader loads it with category 'ignore' mapped to ignore
    assert np.array_equal(CocoSource(cfg.data, "train", labels).load_target(0), class_map)
    assert np.array_equal(CocoSource(cfg.data, "train", spec).load_target(0), class_map)


@pytest.fixture(scope="module")
def run(synth_root, tmp_path_factory):
    return constructed_run(tmp_path_factory.mktemp("pseudo") / "run", tiny_config(synth_root))


def _between(values: np.ndarray, q: float) -> float:
    """A threshold near quantile `q` of `values` that lies in a gap wider than GAP (equal to none of them)."""
    v = np.unique(values.astype(np.float64))
    gaps = np.flatnonzero(np.diff(v) > GAP)
    i = gaps[np.argmin(np.abs(gaps - q * len(v)))]
    return float((v[i] + v[i + 1]) / 2)


def test_pseudo_labels_from_a_run_keep_confident_pixels_and_drop_unsure_images(run, synth_root, tmp_path, capsys):
    probs = [(p.id, p.probs) for p in predictions([Member(load_run(run, device="cpu"))], "test")]
    threshold = _between(probs[0][1].max(0).values.numpy(), 0.5)
    out = tmp_path / "pl"
    assert main(["pseudo", str(run), "--split", "test", "--out", str(out), "--threshold", repr(threshold),
                 "--min-confident", "0", "--device", "cpu"]) == 0
    assert "data.extra_train=" in capsys.readouterr().out
    doc = json.loads((out / "pseudo.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == [sid for sid, _ in probs]
    assert doc["categories"][-1] == {"id": 7, "name": "ignore"}
    cfg = tiny_config(synth_root)
    labels = resolve_labels(cfg)
    # read back exactly as data.extra_train reads it
    (source,) = open_extra_sources(cfg.data.model_copy(update={"extra_train": [str(out / "pseudo.json")]}), labels)
    assert len(source) == 4
    for i, (sid, p) in enumerate(probs):
        top2 = p.topk(2, dim=0)
        conf, cls = top2.values[0], top2.indices[0]
        mask = source.load_target(i)
        confident = (conf >= threshold).numpy()
        if i == 0:
            assert 0 < confident.sum() < confident.size  # the threshold splits the first image
        clear = confident & ((top2.values[0] - top2.values[1]) > GAP).numpy()
        assert clear.sum() > 0.9 * confident.sum()
        assert np.array_equal(mask[clear], cls.numpy()[clear]), sid
        assert (mask[~confident] == 255).all(), sid
        assert (mask[confident] != 255).all(), sid
    # an image whose confident share is below min_confident is dropped
    shares = [float((p.max(0).values >= threshold).float().mean()) for _, p in probs]
    assert len(set(shares)) > 1
    min_confident = float(np.mean(sorted(set(shares))[:2]))  # between the two smallest shares
    summary = write_pseudo_labels([Member(load_run(run, device="cpu"))], tmp_path / "strict.json", "test", threshold, min_confident)
    kept = [sid for (sid, _), s in zip(probs, shares) if s >= min_confident]
    assert 0 < summary["images_kept"] == len(kept) < 4 and summary["images_dropped"] == 4 - len(kept)
    strict = json.loads((tmp_path / "strict.json").read_text())
    assert [im["file_name"] for im in strict["images"]] == kept
    assert strict["info"]["dropped"] == [sid for sid, _ in probs if sid not in kept]


def test_pseudo_arguments_are_checked(run, tmp_path):
    member = Member(load_run(run, device="cpu"))
    with pytest.raises(ConfigError, match="--threshold 1.5"):
        write_pseudo_labels([member], tmp_path / "p.json", "test", threshold=1.5)
    with pytest.raises(ConfigError, match="--min-confident -0.1"):
        write_pseudo_labels([member], tmp_path / "p.json", "test", min_confident=-0.1)
    assert not (tmp_path / "p.json").exists()


def test_extra_train_adds_the_pseudo_set_to_training(run, synth_root, tmp_path):
    summary = write_pseudo_labels([Member(load_run(run, device="cpu"))], tmp_path / "pseudo.json", "test",
                                  threshold=0.0, min_confident=0.0)
    assert summary["images_kept"] == 4 and summary["mean_confident_share_kept"] == 1.0
    cfg = tiny_config(synth_root, f"data.extra_train=[{tmp_path / 'pseudo.json'}]", "trainer.limit_train_batches=2")
    labels = resolve_labels(cfg)
    check_data(cfg, labels, ("train", "val"))
    dataset = build_dataset(cfg, "train", labels, train=True, with_targets=True)
    assert len(dataset) == 12 + 4
    assert dataset[12]["id"] == json.loads((synth_root / "test.json").read_text())["images"][0]["file_name"]
    assert dataset[12]["target"].shape == (64, 64)
    assert int(dataset[12]["target"].max()) < 7  # threshold 0: every pixel labelled, none ignored
    best = train(cfg, tmp_path / "run")  # one short epoch with the pseudo-labelled images in the batches
    assert 0 <= best["mIoU"] <= 1


def test_extra_images_in_the_validation_split_are_an_error(run, synth_root, tmp_path):
    write_pseudo_labels([Member(load_run(run, device="cpu"))], tmp_path / "from_val.json", "val", threshold=0.0, min_confident=0.0)
    cfg = tiny_config(synth_root, f"data.extra_train=[{tmp_path / 'from_val.json'}]")
    with pytest.raises(DataError, match="is also in the validation split"):
        build_dataset(cfg, "train", resolve_labels(cfg), train=True)


def test_extra_set_with_an_unknown_class_is_an_error(synth_root, tmp_path):
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "hexagon"}]}
    (tmp_path / "x.json").write_text(json.dumps(doc))
    cfg = tiny_config(synth_root, f"data.extra_train=[{tmp_path / 'x.json'}]")
    with pytest.raises(DataError, match="'hexagon' is not a training class"):
        build_dataset(cfg, "train", resolve_labels(cfg), train=True)
