"""No library exception reaches the user: each path a user can reach ends in one line
`error: ...` (exit 2), found before training where it can be."""

from __future__ import annotations

import errno

import pytest
import torch

from seglab.cli import library_message, main, worker_message
from seglab.core.loaders import Collate
from seglab.data.sources.coco import read_coco
from seglab.errors import ConfigError, DataError
from tests.workflow_helpers import ROOT, constructed_run, tiny_config


def validate(tmp_path, synth_root, capsys, *overrides) -> list[str]:
    with pytest.raises(SystemExit):
        main(["data", "validate", str(ROOT / "configs" / "demo.yaml"), f"data.root={synth_root}", *overrides])
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("override, says", [
    ("trainer.precision=17", "trainer.precision: '17' is not a precision"),
    ("trainer.precision=bf17", "trainer.precision: 'bf17' is not a precision"),
    ("trainer.strategy=dpp", "trainer.strategy: unknown strategy 'dpp'; did you mean 'ddp'?"),
    ("trainer.accelerator=gpux", "trainer.accelerator: unknown accelerator 'gpux'"),
    ("model.in_channels=1", "model.in_channels: 1, but seglab reads every image as 3-channel RGB"),
    pytest.param("trainer.accelerator=gpu", "trainer.accelerator: 'gpu' but no CUDA GPU is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_trainer_settings_lightning_would_refuse_are_found_before_training(tmp_path, synth_root, capsys, override, says):
    lines = validate(tmp_path, synth_root, capsys, override)
    assert [line for line in lines if says in line] and lines[-1].startswith("1 problem(s)"), lines


def test_lightning_and_worker_errors_become_one_line(monkeypatch, capsys, tmp_path):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    import seglab.cli.look

    def boom(args):
        raise MisconfigurationException("No supported gpu backend found!\nmore text")

    monkeypatch.setattr(seglab.cli.look, "cmd_report", boom)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: trainer settings: No supported gpu backend found! (see trainer.* in the config)\n"
    wrapped = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nseglab.errors.DataError: train.json: image 3: truncated image\n')
    assert worker_message(wrapped) == "train.json: image 3: truncated image"
    assert library_message(RuntimeError(wrapped)) == "train.json: image 3: truncated image"
    assert library_message(KeyError("a bug")) is None  # seglab's own bugs keep their traceback


def test_os_errors_are_one_line_naming_the_file(monkeypatch, capsys, tmp_path):
    import seglab.cli.look

    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.json"))

    monkeypatch.setattr(seglab.cli.look, "cmd_report", disk_full)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.json'}: No space left on device\n"


def test_images_of_mixed_sizes_in_a_batch_are_explained():
    items = [{"image": torch.zeros(3, 4, 4), "id": "a.jpg"}, {"image": torch.zeros(3, 4, 6), "id": "b.jpg"}]
    with pytest.raises(DataError, match=r"different sizes: 4x4 \('a.jpg'\), 4x6 \('b.jpg'\); set data.image_size"):
        Collate()(items)
    assert Collate()(items[:1])["image"].shape == (1, 3, 4, 4)


def test_non_utf8_config_and_huge_integers(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(b"optim: {lr: 0.1}\nname: caf\xe9\n")
    assert main(["config", str(tmp_path / "c.yaml")]) == 2
    assert "c.yaml: not UTF-8 text (invalid continuation byte at byte" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("seed: " + "7" * 5000 + "\n")
    assert main(["config", str(tmp_path / "c.yaml")]) == 2
    assert "c.yaml: unusable value (Exceeds the limit (4300 digits)" in capsys.readouterr().err
    assert main(["config", str(tmp_path / "c.yaml").replace("c.yaml", "d.yaml")]) == 2
    capsys.readouterr()
    (tmp_path / "d.json").write_text('{"images": [{"id": ' + "1" * 5000 + "}]}")
    with pytest.raises(DataError, match=r"d.json: not a usable JSON annotation file \(Exceeds the limit"):
        read_coco(tmp_path / "d.json", tmp_path)
    with pytest.raises(ConfigError, match="override 'seed=7777.*unusable value"):
        from seglab.config.loading import parse_override

        parse_override("seed=" + "7" * 5000)


def test_corrupt_labels_json_and_unwritable_report_folder(tmp_path, synth_root, capsys):
    run = constructed_run(tmp_path / "run", tiny_config(synth_root))
    (run / "labels.json").write_text('{"classes": ["a", ')
    assert main(["predict", str(run), "--device", "cpu", "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels.json: not a class list written by seglab" in err
    (run / "report").write_text("a file where the report folder goes")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / 'report'}: cannot write the report (File exists)" in err
