"""Nothing lost: data-file names stay inside their folder, per-image outputs stay under
--out (written whole, never over an input), one process per run folder, files made with
the user's umask, and `--resume` keeps the labels the run started with."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.cli import main
from seglab.config import load_config
from seglab.core.runlock import LOCK_NAME, RunLock
from seglab.data import collect_problems
from seglab.errors import DataError, SeglabError
from seglab.paths import OUTPUT_MARKER, OutputFolder, inside
from tests.conftest import write_coco
from tests.workflow_helpers import ROOT, TEST_ENCODER, constructed_run, seglab_process, tiny_config

CATS = [{"id": 0, "name": "paper"}, {"id": 1, "name": "metal"}]


def coco_config(root: Path, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"data.root={root}", "data.train=train.json", "data.val=null", "data.test=test.json", "data.classes=null",
        "data.coco=null", f"model.encoder={TEST_ENCODER}", "trainer.progress_bar=false", *extra])


# ------------------------------------------------------------ names from data files


@pytest.mark.parametrize("name, why", [("/etc/hosts", "is an absolute path"), ("../outside.png", "climbs out"),
                                       ("d/../../x.png", "climbs out"), ("C:\\data\\x.png", "is an absolute path")])
def test_names_leaving_the_root_are_refused_by_validation_and_the_reader(tmp_path, name, why):
    root = tmp_path / "root"
    write_coco(root, "train.json", [{"id": 1, "file_name": "d/x.png", "height": 8, "width": 8}], [], CATS)
    doc = json.loads((root / "train.json").read_text())
    doc["images"][0]["file_name"] = name
    (root / "train.json").write_text(json.dumps(doc))
    _, problems = collect_problems(coco_config(root), ("train",))
    assert any(f"file name {name!r} {why}" in p and "train.json: image 1" in p for p in problems), problems
    with pytest.raises(DataError, match="names in data files are read relative to"):
        inside(root, name, "train.json: image 1")
    # The switch lets the readers read it; validation no longer objects to the name.
    _, problems = collect_problems(coco_config(root, "data.allow_outside_root=true"), ("train",))
    assert not any("climbs out" in p or "absolute" in p for p in problems)


def test_csv_and_polygon_list_names_are_confined(tmp_path):
    from seglab.data.sources.classification import CsvSource
    from seglab.data.sources.polygons import PolygonSource

    (tmp_path / "train.csv").write_text("path,label\n../x.jpg,a\nimgs/y.jpg,b\n")
    from seglab.config import DataConfig

    data = DataConfig(format="csv", root=str(tmp_path), train="train.csv", classes=["a", "b"])
    samples, problems = CsvSource.read(data, tmp_path / "train.csv", "train", ["a", "b"])
    assert [s.id for s in samples] == ["imgs/y.jpg"] and "line 2: file name '../x.jpg' climbs out" in problems[0]
    (tmp_path / "images").mkdir()
    (tmp_path / "list.txt").write_text("../secret.png\n")
    data = data.model_copy(update={"format": "polygons", "train": "list.txt", "classes": ["a"]})
    with pytest.raises(DataError, match=r"list.txt: line 1: file name '../secret.png' climbs out"):
        PolygonSource(data, "train")


# ------------------------------------------------------------ output folders


def test_output_folder_is_written_whole_and_confined(tmp_path):
    out = tmp_path / "pred"
    with OutputFolder(out, "test") as folder:
        cv2.imwrite(str(folder.path("a/x.png", "image 'a/x.jpg'")), np.zeros((2, 2), np.uint8))
        assert not out.exists()  # nothing under --out until complete
        with pytest.raises(DataError, match="would also be written for"):
            folder.path("a/x.png", "image 'a/x.tif'")
        for bad in ("../x.png", "/tmp/x.png"):
            with pytest.raises(DataError, match="nothing is written outside"):
                folder.path(bad, "image")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "a"]
    # A second output replaces the first whole: no stale file survives.
    with OutputFolder(out, "test") as folder:
        cv2.imwrite(str(folder.path("b.png", "image 'b'")), np.zeros((2, 2), np.uint8))
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "b.png"]
    # A crash leaves the previous output as it was and no partial folder.
    with pytest.raises(RuntimeError):
        with OutputFolder(out, "test") as folder:
            cv2.imwrite(str(folder.path("c.png", "image 'c'")), np.zeros((2, 2), np.uint8))
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "b.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["pred"]


def test_output_folder_refuses_a_folder_seglab_did_not_write(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "x.png").write_bytes(b"organiser's image")
    with pytest.raises(SeglabError, match="not empty and was not written by seglab"):
        OutputFolder(images, "predict")
    assert (images / "x.png").read_bytes() == b"organiser's image" and len(list(tmp_path.iterdir())) == 1


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from seglab.data.synth.coco import make_coco_dataset

    root = tmp_path_factory.mktemp("data")
    make_coco_dataset(root, n_train=2, n_val=1, n_test=2, size=32, seed=0)
    cfg = tiny_config(root, "data.image_size=[32, 32]")
    return constructed_run(tmp_path_factory.mktemp("run") / "run", cfg), root


def test_predict_png_never_writes_over_an_input_nor_outside_out(small_run, tmp_path):
    run, root = small_run
    test = json.loads((root / "test.json").read_text())
    # --out = the folder of the test images: refused before anything is written.
    image_dir = (root / test["images"][0]["file_name"]).parent
    before = {p: p.read_bytes() for p in image_dir.iterdir()}
    assert main(["predict", str(run), "--format", "png", "--device", "cpu", "--out", str(image_dir)]) == 2
    assert {p: p.read_bytes() for p in image_dir.iterdir()} == before
    # --out = the test split's own file (a CSV format): refused.
    data = root / "test.json"
    text = data.read_text()
    assert main(["predict", str(run), "--format", "coco_csv", "--device", "cpu", "--out", str(data)]) == 2
    assert data.read_text() == text
    # Nor the scores of an ensemble over the validation split's file.
    val = (root / "val.json").read_text()
    assert main(["ensemble", str(run), "--split", "val", "--device", "cpu", "--out", str(root / "val.json")]) == 2
    assert (root / "val.json").read_text() == val
    # Stale files of an earlier prediction never mix in.
    out = tmp_path / "png"
    assert main(["predict", str(run), "--format", "png", "--device", "cpu", "--out", str(out)]) == 0
    (out / "stale.png").write_bytes(b"old")
    assert main(["predict", str(run), "--format", "png", "--device", "cpu", "--out", str(out)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted(Path(i["file_name"]).with_suffix(".png").as_posix() for i in test["images"])


def test_rle_decode_names_are_confined_and_collisions_refused(tmp_path, capsys):
    from seglab.submission.rle import encode_rle

    rle = encode_rle(np.ones((2, 2), bool))
    csv_path = tmp_path / "sub.csv"
    csv_path.write_text(f"image_name,class,rle\na/x.png,c,{rle}\nb/x.png,c,{rle}\n")
    assert main(["data", "rle-decode", str(csv_path), "--out", str(tmp_path / "m"), "--size", "2", "2"]) == 2
    assert "'x/c.png' would also be written for" in capsys.readouterr().err and not (tmp_path / "m").exists()
    csv_path.write_text(f"image_name,class,rle\n../../x.png,c,{rle}\n")
    assert main(["data", "rle-decode", str(csv_path), "--out", str(tmp_path / "m"), "--size", "2", "2"]) == 2
    assert "image name climbs out of its folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]


# ------------------------------------------------------------ run folder lock

HOLD = """
import sys, time
from seglab.core.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_cannot_train_into_a_held_run_folder(tmp_path, synth_root, capsys):
    run = tmp_path / "run"
    holder = seglab_process(str(run), script=HOLD)  # a real second process holds the folder
    try:
        assert holder.stdout.readline().strip() == "held"
        config = tmp_path / "c.yaml"
        config.write_text(f"data: {{root: {synth_root}}}\nmodel: {{encoder: {TEST_ENCODER}}}\n")
        assert main(["train", str(config), "--out", str(run), "trainer.max_epochs=1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by seglab train (process {holder.pid}" in err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_said(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "then"}))
    with caplog.at_level("WARNING", logger="seglab"):
        with RunLock(run):
            assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "no longer running" in caplog.text and not (run / LOCK_NAME).exists()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(SeglabError, match="on host elsewhere .* delete"):
        RunLock(run).acquire()


# ------------------------------------------------------------ umask, resume labels


def test_files_are_created_with_the_users_umask(tmp_path):
    from seglab.data.cache import atomic_write_png
    from seglab.io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        atomic_write_png(tmp_path / "p.png", np.zeros((2, 2), np.uint8))
        with OutputFolder(tmp_path / "o", "test") as folder:
            atomic_write_png(folder.path("x.png", "x"), np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    for path in (tmp_path / "metrics.json", tmp_path / "p.png", tmp_path / "o" / "x.png", tmp_path / "o" / OUTPUT_MARKER):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((tmp_path / "o").stat().st_mode) == 0o755


def test_resume_refuses_other_label_meanings_and_keeps_labels_json(tmp_path, synth_root, capsys):
    run = constructed_run(tmp_path / "run", tiny_config(synth_root))
    (run / "checkpoints" / "best.ckpt").rename(run / "checkpoints" / "last.ckpt")
    labels_before = (run / "labels.json").read_text()
    cfg_text = (run / "config.yaml").read_text()
    # Two categories swapped: the same class names, other meanings.
    swap = "data.coco.category_map={0: 2, 1: 1, 2: 3, 3: 4, 4: 5, 5: 6}"
    assert main(["train", "--resume", str(run), swap]) == 2
    err = capsys.readouterr().err
    assert "data.coco.category_map cannot change in a resumed run" in err, err  # the CLI refuses the override by name
    # Past the CLI (a config edited by hand), labels.json still guards the meaning of the outputs.
    from seglab.core.training import train

    with pytest.raises(SeglabError, match=r"labels.json: the config now gives other labels \(source_to_class changed"):
        train(load_config(run / "config.yaml", [swap]), run, resume=True)
    assert (run / "labels.json").read_text() == labels_before and (run / "config.yaml").read_text() == cfg_text
    assert not (run / LOCK_NAME).exists()


def test_extra_sets_may_name_images_of_the_configs_own_split_folders_only(tmp_path):
    """A pseudo-label set of a test folder beside data.root names `../test/...`: readable,
    because the config names that folder; anything else outside the root is refused."""
    from seglab.paths import split_folders
    from seglab.config import DataConfig

    data = DataConfig(root=str(tmp_path / "train"), train="train.json", test="../test")
    (tmp_path / "test").mkdir()
    allowed = tuple(split_folders(data))
    assert inside(tmp_path / "train", "../test/x.png", "pseudo.json", allowed) == tmp_path / "train" / "../test/x.png"
    with pytest.raises(DataError, match="climbs out"):
        inside(tmp_path / "train", "../other/x.png", "pseudo.json", allowed)


@pytest.mark.parametrize("name, written_as", [("../x.jpg", "x.jpg"), ("/srv/test/b.png", "srv/test/b.png"),
                                              ("a/../../b.jpg", "a/b.jpg"), ("..", "_"), ("d/x.jpg", "d/x.jpg")])
def test_ids_read_from_outside_the_root_are_written_inside_out(name, written_as):
    """With data.allow_outside_root the readers read such files; their outputs still land under --out."""
    from seglab.paths import confined_name, outside_problem

    assert confined_name(name) == written_as and outside_problem(confined_name(name)) is None


def test_partial_folders_of_killed_runs_are_cleaned_up(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".pred.partial-{int(dead.stdout)}-abc"
    running = tmp_path / f".pred.partial-{os.getpid()}-def"  # another writer still at work: kept
    killed.mkdir()
    running.mkdir()
    with OutputFolder(tmp_path / "pred", "test"):
        pass
    assert not killed.exists() and running.exists() and (tmp_path / "pred" / OUTPUT_MARKER).is_file()
