"""The GPU check (benchmarks/gpu_check.py) cannot rot between GPU runs: its smoke mode runs
every section's code on the CPU and must write the results file the README's tables are
generated from; the tables in benchmarks/README.md must be current."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_tables  # noqa: E402


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore", OUT=str(out / "copy"))
    (out / "copy").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out / "results")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list((out / "results").glob("*.json"))
    assert [f.name for f in files] == [f"{time.strftime('%Y-%m-%d', time.gmtime())}-cpu-smoke.json"] or len(files) == 1
    assert (out / "copy" / files[0].name).read_text() == files[0].read_text()  # the copy under $OUT
    return json.loads(files[0].read_text())


def test_smoke_run_covers_every_section(smoke_result):
    r = smoke_result
    assert r["smoke"] is True and r["gpu"] == "cpu" and r["schema"] == 1 and r["complete"] is True
    assert list(r["sections"]) == list(gpu_check.SECTIONS)
    assert {name: sec["status"] for name, sec in r["sections"].items()} == dict.fromkeys(gpu_check.SECTIONS, "done")
    for sec in r["sections"].values():
        assert not [row for row in sec["rows"] if "error" in row or "skipped" in row], sec["rows"]

    throughput = r["sections"]["train_throughput"]["rows"]
    assert [(row["model"], row["loop"]) for row in throughput] == [
        (m, loop) for m in gpu_check.THROUGHPUT_MODELS for loop in ("ceiling", "plain_fp32", "naive", "seglab")] + [
        (m, "seglab_profile") for m in gpu_check.THROUGHPUT_MODELS]
    assert all(row["img_per_s"] > 0 for row in throughput)
    for profile in (row for row in throughput if row["loop"] == "seglab_profile"):
        assert profile["wall_ms_per_step"] > 0 and profile["time_is"] == "cpu" and len(profile["top_ops"]) > 3
    for row in throughput:  # the ratio is the row's img/s over its model's ceiling row
        ceiling = next(c for c in throughput if c["model"] == row["model"] and c["loop"] == "ceiling")
        assert row["ratio"] == pytest.approx(row["img_per_s"] / ceiling["img_per_s"])

    real = r["sections"]["real_data"]["rows"]
    assert [row["run"] for row in real] == ["bf16+channels_last+compile", "fp16"]
    assert [row["precision"] for row in real] == ["bf16", "16"]
    for row in real:
        assert 0 <= row["value"] <= 1 and row["floor"] > gpu_check.MIOU_MARGIN and row["epochs"] == 1
        assert row["passed"] is None  # floors apply to the GPU run's epochs only
    syncs = real[0]["syncs"]  # 8 images, batch 2: 4 steps, the first 2 counted apart; CUDA counts on a GPU only
    assert (syncs["steps"], syncs["steps_between_checks"], syncs["counted"]) == (4, 1, False)

    assert [row["model"] for row in r["sections"]["models"]["rows"]] == list(gpu_check.SMOKE_MODELS)
    loader = r["sections"]["data_path"]["rows"]
    assert [row["pass"].split()[0] for row in loader] == ["cold", "warm"]
    assert all(row["img_per_s"] > 0 and isinstance(row["keeps_up_with_fastest"], bool) for row in loader)


def test_smoke_and_cpu_results_stay_out_of_the_readme_tables(smoke_result, tmp_path):
    (tmp_path / "smoke.json").write_text(json.dumps(smoke_result))
    (tmp_path / "cpu.json").write_text(json.dumps({**smoke_result, "smoke": False}))
    assert gpu_tables.load_results(tmp_path) == []
    assert "Not measured yet" in gpu_tables.render([])


def test_a_section_out_of_time_is_recorded_as_skipped(tmp_path):
    settings = gpu_check.Settings(True, "cpu", 64, 2, 2, 1, 0, 1, str(tmp_path), str(tmp_path), 1, ["Unet"])
    section = gpu_check.run_section("models", settings, timeout=0.5, work=tmp_path)  # killed while importing
    assert section["status"] == "skipped" and "ran out of its 0 s budget" in section["note"] and section["rows"] == []
    row = gpu_check.timed({"model": "x"}, lambda: {"img_per_s": 1.0}, deadline=time.time() - 1)
    assert row == {"model": "x", "skipped": "the section's time ran out"}
    row = gpu_check.timed({"model": "x"}, lambda: 1 / 0, deadline=time.time() + 60)
    assert row["error"] == "ZeroDivisionError: division by zero"


def fixture_result() -> dict:
    """A hand-written result in the GPU check's format (numbers invented)."""
    return {
        "schema": 1, "date": "2026-11-30", "started": "2026-11-30T10:00:00+00:00", "gpu": "NVIDIA H100 80GB HBM3",
        "smoke": False, "budget_s": 500, "settings": {"device": "cuda"}, "sections": {
            "train_throughput": {"status": "done", "rows": [
                {"model": "unet_r34", "loop": "ceiling", "img_per_s": 600.0, "peak_gb": 9.5, "ratio": 1.0},
                {"model": "unet_r34", "loop": "seglab", "img_per_s": 570.0, "peak_gb": 10.5, "ratio": 0.95},
                {"model": "fcn8s", "loop": "ceiling", "error": "OutOfMemoryError: CUDA out of memory"},
                {"model": "unet_r34", "loop": "seglab_profile", "seglab_vs_ceiling": 0.9, "wall_ms_per_step": 28.5,
                 "gpu_busy_share": 0.8, "top_ops": [{"name": "aten::convolution_backward", "ms_per_step": 9.04, "calls": 50}]},
            ]},
            "real_data": {"status": "done", "rows": [
                {"run": "fp16", "epochs": 4, "first_train_loss": 1.2, "last_train_loss": 0.4, "value": 0.61, "floor": 0.3,
                 "passed": True, "syncs": {"counted": True, "steps_between_checks": 90, "syncs_on_steps_between_checks": 0}},
            ]},
            "models": {"status": "skipped", "note": "ran out of its 80 s budget", "rows": [
                {"model": "Unet", "params_m": 24.4, "img_per_s": 700.0, "peak_gb": 8.0},
                {"model": "fcn8s", "skipped": "the section's time ran out"},
            ]},
            "data_path": {"status": "done", "rows": [
                {"pass": "warm (from the cache)", "workers": 16, "img_per_s": 2400.0,
                 "gpu_consumption_img_per_s": {"unet_r34 ceiling": 600.0, "unet_r34 seglab": 570.0}, "keeps_up_with_fastest": True},
            ]},
        },
    }


def test_tables_from_a_result_file(tmp_path):
    (tmp_path / "2026-11-30-nvidia-h100.json").write_text(json.dumps(fixture_result()))
    text = gpu_tables.render(gpu_tables.load_results(tmp_path))
    lines = text.splitlines()
    assert "| 2026-11-30 | NVIDIA H100 80GB HBM3 | unet_r34 | seglab train, end to end | 570.0 | 0.95 | 10.5 |" in lines
    assert "| 2026-11-30 | NVIDIA H100 80GB HBM3 | fcn8s | plain loop, compiled (ceiling) | error: OutOfMemoryError: CUDA out of memory |  |  |" in lines
    assert "| 2026-11-30 | NVIDIA H100 80GB HBM3 | unet_r34 | 0.90 | 28.5 | 0.80 | aten::convolution_backward 9.0 |" in lines
    assert not [line for line in lines if "seglab_profile" in line]
    assert "| 2026-11-30 | NVIDIA H100 80GB HBM3 | fp16 | 4 | 1.20 / 0.40 | 0.61 | 0.30 | yes | 0 on 90 steps |" in lines
    assert "| 2026-11-30 | NVIDIA H100 80GB HBM3 | Unet | 24.4 | 700.0 | 8.00 |" in lines
    assert "| 2026-11-30 | NVIDIA H100 80GB HBM3 | fcn8s | skipped: the section's time ran out |  |  |" in lines
    assert "| 2026-11-30 | NVIDIA H100 80GB HBM3 | warm (from the cache) | 16 | 2400.0 | 600.0 | yes |" in lines
    assert "- 2026-11-30, NVIDIA H100 80GB HBM3: section models skipped (ran out of its 80 s budget)" in lines
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{gpu_tables.BEGIN}\nold\n{gpu_tables.END}\nafter\n")
    assert gpu_tables.update(readme, gpu_tables.load_results(tmp_path)) is True
    assert readme.read_text() == f"before\n{gpu_tables.block(gpu_tables.load_results(tmp_path))}\nafter\n"
    assert gpu_tables.update(readme, gpu_tables.load_results(tmp_path)) is False


def test_readme_gpu_tables_are_current():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    assert gpu_tables.block(gpu_tables.load_results()) in text, "run: make gpu-tables"


def test_carried_wheels_match_the_pins():
    """The Makefile's wheels for the GPU machine are the versions requirements.txt pins."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.txt").read_text(), re.M))
    makefile = (ROOT / "Makefile").read_text()
    carried = dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\\]*)", makefile[makefile.index("GPU_WHEELS :="):makefile.index("gpu-check-prep:")]))
    assert carried, "no GPU_WHEELS in the Makefile"
    for name, version in carried.items():
        if name in pins:
            assert pins[name] == version, f"{name}: Makefile carries {version}, requirements.txt pins {pins[name]}"
    # Every pinned package the GPU image lacks travels (the image's list: .library/device/KINDS.md).
    for name in ("segmentation-models-pytorch", "albumentations", "pycocotools", "pydantic", "iterative-stratification", "adamp"):
        assert name in carried, name


def test_prepare_data_copies_a_subset_with_its_annotations(tmp_path):
    from gpu_check_data import make_tiny_coco, prepare_data

    source = tmp_path / "trashbags"
    make_tiny_coco(source / "train", 5, 32, seed=0)
    make_tiny_coco(source / "valid", 2, 32, seed=1)
    prepare_data(source, tmp_path / "carried", train_images=3)
    train = json.loads((tmp_path / "carried" / "train" / "annotations.json").read_text())
    assert [img["id"] for img in train["images"]] == [0, 1, 2]
    assert sorted(a["image_id"] for a in train["annotations"]) == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "carried" / "train" / "images").iterdir()) == ["000.jpg", "001.jpg", "002.jpg"]
    assert len(json.loads((tmp_path / "carried" / "valid" / "annotations.json").read_text())["images"]) == 2
    doc = json.loads((source / "valid" / "annotations.json").read_text())
    doc["images"][1]["file_name"] = "../../secret.jpg"
    (source / "valid" / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match=r"valid/annotations.json: image 1: file_name '../../secret.jpg' leaves the split's folder"):
        prepare_data(source, tmp_path / "again", train_images=3)
