"""The console: one line per event, RUN/train.log keeping it, progress with an ETA."""

from __future__ import annotations

import logging

import pytest

from seglab.console import DropNoise, quiet_lightning, run_log
from seglab.progress import progress, progress_line
from tests.workflow_helpers import seglab_process, tiny_config


def test_progress_line_eta():
    assert progress_line("evaluate", 25, 100, 10.0) == "evaluate: 25/100 batches (25%), 10 s, ETA 30 s"
    assert progress_line("predict", 3, None, 75.0, "images") == "predict: 3 images, 1 min 15 s"
    assert progress_line("kfold", 1, 5, 4000.0, "folds") == "kfold: 1/5 folds (20%), 1 h 06 min, ETA 4 h 26 min"


def test_progress_logs_every_interval_and_a_last_line(caplog):
    caplog.set_level(logging.INFO, logger="seglab")
    assert list(progress(range(3), "evaluate val", every=0)) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == [f"evaluate val: {i}/3 batches ({100 * i / 3:.0f}%)" + lines[i - 1].split("%)")[1] for i in (1, 2, 3)]
    assert "ETA" in lines[0] and lines[-1].startswith("evaluate val: 3 batches in")
    caplog.clear()
    assert list(progress(range(3), "quick", every=60)) == [0, 1, 2]
    assert caplog.records == []  # a loop shorter than the interval says nothing


def test_noise_is_dropped_and_lightning_prints_once():
    drop = DropNoise()
    record = lambda msg: logging.makeLogRecord({"msg": msg})  # noqa: E731
    assert not drop.filter(record("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"))
    assert not drop.filter(record("`weights_only` was not set, defaulting to `False`."))
    assert drop.filter(record("GPU available: False, used: False"))
    import lightning  # noqa: F401

    quiet_lightning()
    assert logging.getLogger("lightning").handlers == [] and logging.getLogger("lightning").propagate


def test_run_log_keeps_lines_and_the_error(tmp_path):
    with pytest.raises(ValueError):
        with run_log(tmp_path / "run"):
            logging.getLogger("seglab").info("validation after epoch 0")
            raise ValueError("boom")
    logging.getLogger("seglab").info("after the run: not in its log")
    text = (tmp_path / "run" / "train.log").read_text()
    assert "validation after epoch 0" in text and "stopped: ValueError: boom" in text and "after the run" not in text


def test_training_console_is_clean_and_kept_in_train_log(synth_root, tmp_path):
    """A real `seglab train` process with the progress bar off: progress lines, every
    Lightning line once, no advert or deprecation warning, and train.log holding it all."""
    import yaml

    config = tmp_path / "c.yaml"
    from seglab.config import to_yaml

    config.write_text(to_yaml(tiny_config(synth_root, "trainer.limit_train_batches=2")))
    script = ("import sys, seglab.progress as p; p.EVERY_SECONDS = 0; from seglab import cli; "
              "sys.exit(cli.main(sys.argv[1:]))")
    proc = seglab_process("train", str(config), "--out", str(tmp_path / "run"), script=script)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert sum("GPU available" in line for line in lines) == 1
    for noise in ("Tip:", "litlogger", "weights_only", "deprecated", "INFO:", "Warning"):
        assert noise not in out, noise
    assert any(line.startswith("epoch 0: 1/2 batches (50%)") and "ETA" in line for line in lines), out
    log = (tmp_path / "run" / "train.log").read_text()
    assert "validation after epoch 0" in log and "epoch 0: 1/2 batches" in log and "GPU available" in log
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["trainer"]["limit_train_batches"] == 2
