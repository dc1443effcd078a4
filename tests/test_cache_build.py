"""`seglab data cache`: every split's caches filled up front by a process pool, the same
entries a run then reads (nothing left to write), with progress and ETA."""

from __future__ import annotations

import contextlib
import io

from seglab.cli import main
from seglab.config import load_config
from seglab.data import build_dataset, resolve_labels
from seglab.data.cache_build import build_caches, format_eta
from tests.workflow_helpers import task_data


def cache_files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_two_workers_fill_what_a_run_reads(tmp_path):
    config, overrides = task_data("multilabel", tmp_path / "data")
    cache = tmp_path / "cache"
    cfg = load_config(config, overrides + [f"data.cache_dir={cache}", "data.image_size=[24, 24]", "data.num_workers=0"])
    calls = []
    summary = build_caches(cfg, workers=2, progress=lambda done, total, elapsed: calls.append((done, total)), every_s=0)
    n = sum(summary["samples"].values())
    assert summary["workers"] == 2 and set(summary["samples"]) == {"train", "val", "test"}
    assert calls[-1] == (n, n) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    files = cache_files(cache)
    labelled = summary["samples"]["train"] + summary["samples"]["val"]
    # Resized images of every split and resized masks of the labelled ones; full-size polygon
    # masks are rasterised at load, never cached.
    assert len([f for f in files if f.parts[0] == "resized"]) == n + labelled
    assert {f.parts[0] for f in files} == {"resized"}
    # A run's datasets now find everything: reading every item writes nothing new.
    labels = resolve_labels(cfg)
    for split in ("train", "val"):
        dataset = build_dataset(cfg, split, labels, train=True)
        for i in range(len(dataset)):
            dataset[i]
    assert cache_files(cache) == files


def test_the_cli_prints_what_it_cached(tmp_path):
    config, overrides = task_data("multiclass", tmp_path / "data")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["data", "cache", str(config), *overrides, f"data.cache_dir={tmp_path / 'cache'}", "--workers", "1"])
    assert code == 0 and "cached 13 samples (train 8, val 3, test 2)" in out.getvalue() and "with 1 worker" in out.getvalue()
    # The class maps of the 11 labelled images (test has none); a second run finds them all.
    assert "11 new cache files" in out.getvalue() and "nothing new" not in out.getvalue()
    assert "ETA 0:00:00" in err.getvalue()
    # Copy-paste by object also reads the training images' object ids: cached up front too.
    objects = io.StringIO()
    with contextlib.redirect_stdout(objects), contextlib.redirect_stderr(io.StringIO()):
        main(["data", "cache", str(config), *overrides, f"data.cache_dir={tmp_path / 'cache'}", "--workers", "1",
              "augment.batch=[{name: copy_paste, unit: instance}]"])
    assert "8 new cache files" in objects.getvalue()
    assert len(list((tmp_path / "cache" / "instances").rglob("*.npy.z"))) == 8
    again = io.StringIO()
    with contextlib.redirect_stdout(again), contextlib.redirect_stderr(io.StringIO()):
        main(["data", "cache", str(config), *overrides, f"data.cache_dir={tmp_path / 'cache'}", "--workers", "1"])
    assert "0 new cache files" in again.getvalue() and "nothing new to cache" in again.getvalue()
    assert format_eta(3725) == "1:02:05"


def test_an_unwritable_cache_folder_is_one_line_not_a_silent_nothing(tmp_path, capsys):
    config, overrides = task_data("multiclass", tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["data", "cache", str(config), *overrides, f"data.cache_dir={blocker}", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err and "not writable" in err
    assert blocker.read_text() == "not a folder"
