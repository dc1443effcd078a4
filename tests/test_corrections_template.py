"""`seglab data corrections-template`: the highest-loss images of a run as commented-out
corrections records (that load once uncommented), with panels; the per-image loss and the
proposals checked by hand."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from seglab.cli import main
from seglab.config import load_config
from seglab.data import open_source, resolve_labels
from seglab.data.corrections import read_corrections
from seglab.data.sources.base import Source
from seglab.data.sources.combined import _Delegating
from seglab.kfold import fold_config, make_folds_file
from seglab.task import get_task
from tests.workflow_helpers import TASKS, constructed_run, task_data


@pytest.mark.parametrize("task", TASKS)
def test_template_lists_commented_records_that_load_when_uncommented(task, tmp_path, capsys):
    config, overrides = task_data(task, tmp_path / "data")
    run = constructed_run(tmp_path / "run", load_config(config, overrides))
    main(["data", "corrections-template", str(run), "--top", "3", "--device", "cpu"])
    out = run / "corrections_template.yaml"
    lines = out.read_text().splitlines()
    assert lines and all(line.startswith("#") or not line.strip() for line in lines)
    ranked = [line for line in lines if ". loss " in line]
    assert len(ranked) == 3
    losses = [float(line.split("loss ")[1].split()[0]) for line in ranked]
    assert losses == sorted(losses, reverse=True)
    records = [line[2:] for line in lines if line.startswith("# - {")]
    assert records  # an untrained model disagrees with something
    uncommented = tmp_path / "fix.yaml"
    uncommented.write_text("\n".join(records) + "\n")
    assert len(read_corrections(uncommented).records) == len(records)
    assert len(list((run / "corrections_template_panels").glob("*.png"))) == 3
    assert "3 images" in capsys.readouterr().out


def test_per_image_loss_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    loss = get_task("classification").per_image_loss(probs, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, torch.tensor([-math.log(0.7), -math.log(0.1)]))
    dense = torch.tensor([[[[0.9, 0.5]], [[0.1, 0.5]]]])            # [1, 2 classes, 1, 2 pixels]
    loss = get_task("multiclass").per_image_loss(dense, torch.tensor([[[1, 255]]]))   # the second pixel is ignored
    torch.testing.assert_close(loss, torch.tensor([-math.log(0.1)]))
    loss = get_task("multilabel").per_image_loss(torch.tensor([[[[0.9]], [[0.2]]]]), torch.tensor([[[[True]], [[True]]]]))
    torch.testing.assert_close(loss, torch.tensor([(-math.log(0.9) - math.log(0.2)) / 2]))


def test_proposals_name_the_annotation_the_model_disagrees_with(tmp_path):
    config, overrides = task_data("multiclass", tmp_path)
    cfg = load_config(config, overrides)
    labels = resolve_labels(cfg)
    source = open_source(cfg, "train", labels)
    anns = source.annotation_masks(0)
    key, cls, mask = anns[0]
    other = next(c for c in range(1, labels.num_classes) if c != cls)
    h, w = mask.shape
    probs = torch.zeros(labels.num_classes, h, w)
    for _, c, m in anns:                                   # the model agrees with every annotation ...
        probs[:, torch.from_numpy(m)] = 0
        probs[c, torch.from_numpy(m)] = 1
    probs[:, torch.from_numpy(mask)] = 0
    probs[other, torch.from_numpy(mask)] = 1               # ... except the first, which it sees as `other`
    probs[0, probs.sum(0) == 0] = 1
    records = get_task("multiclass").propose_corrections(labels, source, 0, source.sample_id(0), probs, source.load_target(0))
    relabels = [r for r, _ in records if f"annotation: {key}," in r]
    assert relabels == [f'- {{image: "{source.sample_id(0)}", annotation: {key}, action: relabel, value: "{labels.classes[other]}"}}']
    probs[:, torch.from_numpy(mask)] = 0.3                 # no class above one half there: drop it
    records = get_task("multiclass").propose_corrections(labels, source, 0, source.sample_id(0), probs, source.load_target(0))
    assert [r for r, _ in records if f"annotation: {key}," in r] == [
        f'- {{image: "{source.sample_id(0)}", annotation: {key}, action: drop}}']


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_kfold_folder_gets_per_annotation_records_from_its_folds(task, tmp_path, capsys):
    """Each fold judges its held-out images through the fold wrapper, which must pass the
    annotations on: an untrained model disagrees with annotations, so records name them."""
    config, overrides = task_data(task, tmp_path / "data")
    cfg = load_config(config, overrides + ["kfold.folds=2"])
    out = tmp_path / "kf"
    make_folds_file(cfg, resolve_labels(cfg), out)
    for k in range(2):
        fold = fold_config(cfg, out, k)
        assert open_source(fold, "val", resolve_labels(fold)).annotation_masks(0)  # through the fold wrapper
        constructed_run(out / f"fold_{k}", fold, seed=k)
    assert main(["data", "corrections-template", str(out), "--top", "4", "--device", "cpu", "--no-panels"]) == 0
    records = [line for line in (out / "corrections_template.yaml").read_text().splitlines() if line.startswith("# - {")]
    assert any("annotation: " in r for r in records), records
    assert "4 images" in capsys.readouterr().out


def test_the_fold_and_extra_set_wrappers_forward_every_per_sample_question():
    asked = {name for name, f in vars(Source).items() if callable(f) and not name.startswith("_")
             and list(inspect.signature(f).parameters)[1:2] == ["i"]}
    assert {"load_target", "annotation_masks", "load_instances", "classes_present", "target_stamp"} <= asked
    assert [name for name in sorted(asked) if getattr(_Delegating, name) is getattr(Source, name)] == []
