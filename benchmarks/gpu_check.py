"""The GPU check: one command that measures speed and proves the CUDA paths train.

Run it whenever a GPU machine is available (`benchmarks/gpu_check.sh` installs the carried
wheels first; README "Reproduce" says how to prepare them). It runs these sections, each
in its own process under its own time budget (a share of --budget; time one section leaves
unused goes to the next), and writes benchmarks/results/<date>-<gpu>.json (and a copy under
$OUT when that is set). A section that runs out of time stops, keeps the rows it finished
and is recorded as skipped; a section that fails is recorded with its error.

  train_throughput  512x512, batch 16, UNet-ResNet34 and FCN-8s: the compiled plain loop (the
                    ceiling: bf16 + channels_last + torch.compile + fused AdamW on random tensors),
                    the plain fp32 loop, the course-style naive loop on real data, and `seglab
                    train` end to end from JPEG + COCO on disk; img/s, peak GPU memory, ratio to
                    the ceiling (benchmarks/train_throughput.py's loops); below 0.95, a profile of
                    seglab's steps (torch.profiler: GPU busy share, top operators)
  real_data         a short real training run on the trashbags data in bf16 + channels_last +
                    compile, and in fp16: the loss must fall and the validation mIoU must beat
                    predicting Background everywhere by MIOU_MARGIN (the floor); the bf16 run
                    also counts the host-device syncs per training step (CUDA sync debug mode)
  models            every registered model's forward+backward img/s and peak memory, bf16
                    (benchmarks/models.py's measurement, against torchvision's FCN-ResNet50)
  data_path         seglab's training loader alone with all CPU cores, cold (filling the cache)
                    and warm, against the GPU's consumption measured above

    bash benchmarks/gpu_check.sh                     # on a GPU machine
    python benchmarks/gpu_check.py --smoke           # the same code paths on the CPU, tiny sizes

--smoke makes its own tiny COCO data, uses 64x64 images, 2 steps and three models, and
writes to runs/gpu_check_smoke/ unless --out says otherwise; tests/test_gpu_check.py runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from gpu_check_data import find_data, make_tiny_coco, prepare_data  # noqa: E402
from gpu_check_probes import make_step_profiler, make_sync_counter  # noqa: E402

RESULTS = HERE / "results"
MIOU_MARGIN = 0.05  # the real-data floor: mIoU >= mIoU of an all-Background prediction + this
LOSS_DROP = 0.9  # ... and the last epoch's mean training loss <= this x the first epoch's
SECTIONS = {  # name: share of the budget, in the order they run (most important first)
    "train_throughput": 0.55,  # 8 timed rows (4 compiles, inductor's cache serving the repeats) + profiles
    "real_data": 0.22,
    "models": 0.15,  # 21 models, a median of 5 steps each
    "data_path": 0.08,
}
THROUGHPUT_MODELS = ("unet_r34", "fcn8s")
SMOKE_MODELS = ("Unet", "fcn8s")  # an smp model and a classic one (torchvision's baselines take 20 s on a CPU)


@dataclasses.dataclass
class Settings:
    smoke: bool
    device: str
    size: int
    batch: int
    steps: int
    warmup: int
    workers: int  # data loader processes of the training runs
    loader_workers: int  # ... of the data_path section: every CPU core
    train_data: str  # folder with annotations.json and images/
    val_data: str
    real_epochs: int
    models: list | None  # None: every registered model


def settings_for(args, train_data: Path, val_data: Path) -> Settings:
    import torch

    if args.smoke:
        # In-process loading for the training runs (starting workers costs seconds on a CPU); two for the loader alone.
        return Settings(True, "cpu", 64, 2, 2, 1, 0, min(2, os.cpu_count() or 1), str(train_data), str(val_data), 1, list(SMOKE_MODELS))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cores = os.cpu_count() or 1
    return Settings(False, device, args.size, args.batch, args.steps, args.warmup, cores, cores,
                    str(train_data), str(val_data), args.real_epochs, None)


# ------------------------------------------------------------------ sections (run in a child process)


def section_train_throughput(s: Settings, emit, deadline: float) -> None:
    import torch
    from train_throughput import coco_classes, naive_batches, plain_loop, random_batches, seglab_train

    # The plain loops use the real data's class count: the same head as the seglab row (and the
    # same compiled graph, which inductor's cache then serves to the later rows and sections).
    device, data = torch.device(s.device), Path(s.train_data)
    classes = coco_classes(data)
    loops = {
        "ceiling": lambda key: plain_loop(key, random_batches(s.batch, s.size, classes, device), device, classes, s.steps, s.warmup,
                                          fast=True, small=s.smoke),
        "plain_fp32": lambda key: plain_loop(key, random_batches(s.batch, s.size, classes, device), device, classes, s.steps, s.warmup,
                                             fast=False, small=s.smoke),
        "naive": lambda key: plain_loop(key, naive_batches(s.batch, s.size, s.workers, data), device, classes, s.steps, s.warmup,
                                        fast=False, small=s.smoke),
        "seglab": lambda key: seglab_train(key, device, s.size, s.batch, s.steps, s.warmup, s.workers, data, small=s.smoke),
    }
    done = {}
    for key in THROUGHPUT_MODELS:
        for loop, fn in loops.items():
            done[key, loop] = timed({"model": key, "loop": loop}, fn, key, deadline=deadline)
            emit(done[key, loop])
            free_memory()
    for key in THROUGHPUT_MODELS:  # after every model's figures: a profile must not cost a model its ratio
        ratio = done[key, "seglab"].get("img_per_s", 0) / done[key, "ceiling"].get("img_per_s", float("inf"))
        if ratio < 0.95 or s.smoke:  # where the difference goes (the smoke run profiles always, to keep the path alive)
            profiler = make_step_profiler(s.warmup, min(5, s.steps))
            emit(timed({"model": key, "loop": "seglab_profile", "seglab_vs_ceiling": ratio},
                       lambda: {**seglab_train(key, device, s.size, s.batch, s.steps, s.warmup, s.workers, data, small=s.smoke,
                                               callbacks=(profiler,)), **profiler.summary()}, deadline=deadline))
            free_memory()


def section_models(s: Settings, emit, deadline: float) -> None:
    from models import BASELINES, measure
    from seglab.models import MODELS

    steps, warmup = (1, 1) if s.smoke else (5, 2)  # 21 models: a median of 5 steps each fits the budget
    encoder, width = ("tu-test_resnet", 0.125) if s.smoke else ("resnet34", 1.0)  # smoke: tiny versions
    for name in s.models or (list(BASELINES) + MODELS.names()):
        emit(timed({"model": name}, lambda: _model_row(measure(name, s.size, s.batch, 12, encoder, steps, warmup, s.device, amp=True,
                                                              width=width)), deadline=deadline))
        free_memory()


def _model_row(r: dict) -> dict:
    return {"params_m": r["params_m"], "img_per_s": r["img_per_s"], "peak_gb": r["peak_mem_gb"] if not _cpu() else None}


def section_real_data(s: Settings, emit, deadline: float) -> None:
    gpu = s.device == "cuda"
    runs = {  # name: (precision, channels_last, compile); torch.compile runs on the GPU only (on a CPU it compiles C++ for minutes)
        "bf16+channels_last+compile": ("bf16", True, gpu),
        "fp16": ("16", False, False),
    }
    for name, (precision, channels_last, compile_) in runs.items():
        emit(timed({"run": name, "precision": precision, "channels_last": channels_last, "compile": compile_},
                   lambda: real_run(s, precision, channels_last, compile_, count_syncs=precision == "bf16"), deadline=deadline))
        free_memory()


def real_run(s: Settings, precision: str, channels_last: bool, compile_: bool, count_syncs: bool) -> dict:
    """A short `train` on the real data; the loss must fall and mIoU beat the all-Background floor."""
    import seglab.core.training as training
    from seglab.config import load_config
    from gpu_check_data import joint_coco
    from train_throughput import MODELS, SMALL

    work = Path(tempfile.mkdtemp(prefix="gpu_check_real_"))
    try:
        train_json, val_json, root = joint_coco(Path(s.train_data), Path(s.val_data), work)
        _, encoder, params = (SMALL if s.smoke else MODELS)["unet_r34"]
        cfg_file = work / "real.yaml"
        cfg_file.write_text(f"""
seed: 0
data: {{format: coco, root: '{root}', train: '{train_json}', val: '{val_json}', image_size: [{s.size}, {s.size}],
        batch_size: {s.batch}, num_workers: {s.workers}, cache_dir: '{work / "cache"}'}}
augment: {{train: [{{name: HorizontalFlip, p: 0.5}}]}}
model: {{arch: Unet, encoder: {encoder}, params: {json.dumps(params)}}}
loss: [{{name: ce}}, {{name: dice, weight: 0.5}}]
optim: {{name: adamw, lr: 0.001, weight_decay: 0.0001}}
schedule: {{name: cosine, warmup_epochs: 0}}
trainer: {{max_epochs: {s.real_epochs}, precision: '{precision}', channels_last: {str(channels_last).lower()},
          compile: {str(compile_).lower()}, accelerator: '{'gpu' if s.device == 'cuda' else 'cpu'}', progress_bar: false}}
logging: {{viz_every_n_epochs: 0, loggers: []}}
""")
        cfg = load_config(cfg_file)
        floor = all_background_miou(cfg) + MIOU_MARGIN
        counter = make_sync_counter() if count_syncs else None
        if counter:
            make_callbacks = training.make_callbacks
            training.make_callbacks = lambda *a, **k: make_callbacks(*a, **k) + [counter]
        try:
            t0 = time.perf_counter()
            training.train(cfg, work / "run")
            seconds = time.perf_counter() - t0
        finally:
            if counter:
                training.make_callbacks = make_callbacks
        history = [json.loads(line) for line in (work / "run" / "history.jsonl").read_text().splitlines()]
        first, last = history[0]["train_loss"], history[-1]["train_loss"]
        miou = max(h["mIoU"] for h in history)
        row = {"epochs": len(history), "seconds": seconds, "first_train_loss": first, "last_train_loss": last,
               "metric": "mIoU", "value": miou, "floor": floor,
               "loss_fell": last <= LOSS_DROP * first, "metric_above_floor": miou >= floor}
        # The floors are meant for the GPU run's epochs; the smoke run's single tiny epoch proves the path only.
        row["passed"] = None if s.smoke else bool(row["loss_fell"] and row["metric_above_floor"])
        if counter:
            row["syncs"] = counter.summary(cfg.trainer.log_every_n_steps)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def all_background_miou(cfg) -> float:
    """seglab's validation mIoU of a model that predicts Background everywhere."""
    import torch

    from seglab.data import build_dataset, resolve_labels
    from seglab.task import get_task

    labels = resolve_labels(cfg)
    metric = get_task(cfg.task).metric(labels)
    for sample in build_dataset(cfg, "val", labels, train=False, with_targets=True):
        target = torch.as_tensor(sample["target"])[None].long()
        metric.update(torch.zeros_like(target), target)
    metric.reduce()
    return float(metric.compute(list(labels.classes))["mIoU"])


def section_data_path(s: Settings, emit, deadline: float) -> None:
    from data_throughput import images_per_second, seglab_dataset

    data = Path(s.train_data)
    cache = Path(tempfile.mkdtemp(prefix="gpu_check_cache_"))
    try:
        dataset = seglab_dataset(data, data / "annotations.json", s.size, cache, cache_images=True)
        n = len(dataset)
        emit(timed({"pass": "cold (decodes JPEGs, fills the cache)", "workers": s.loader_workers, "images": n},
                   lambda: {"img_per_s": images_per_second(dataset, n, s.loader_workers, batch=s.batch, repeats=1)}, deadline=deadline))
        emit(timed({"pass": "warm (from the cache)", "workers": s.loader_workers, "images": n},
                   lambda: {"img_per_s": images_per_second(dataset, n, s.loader_workers, batch=s.batch, repeats=2)}, deadline=deadline))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


SECTION_FUNCS = {"train_throughput": section_train_throughput, "real_data": section_real_data,
                 "models": section_models, "data_path": section_data_path}


def timed(row: dict, fn, *args, deadline: float) -> dict:
    """`row` completed by fn(*args), or marked skipped (no time left) or failed (its error)."""
    if time.time() > deadline:
        return {**row, "skipped": "the section's time ran out"}
    t0 = time.perf_counter()
    try:
        return {**row, **fn(*args), "row_seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # one row's failure (out of memory, a compile error) must not lose the others
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        return {**row, "error": f"{type(e).__name__}: {first}", "row_seconds": round(time.perf_counter() - t0, 1)}


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        torch._dynamo.reset()  # compiled graphs hold their models' memory
    except Exception:
        pass


def _cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def run_child(args) -> None:
    settings = Settings(**json.loads(args.settings))
    rows = Path(args.rows)
    if settings.smoke:  # tiny tensors: more threads only contend (and the test suite shares the CPU)
        import torch

        torch.set_num_threads(1)

    def emit(row: dict) -> None:
        print(f"[{args.section}] {json.dumps(row)}", flush=True)
        with rows.open("a") as f:
            f.write(json.dumps(row) + "\n")

    SECTION_FUNCS[args.section](settings, emit, args.deadline)


# ------------------------------------------------------------------ the parent: budgets, results file


def run_section(name: str, settings: Settings, timeout: float, work: Path) -> dict:
    """Run one section in a child process killed (with its loader workers) at `timeout`;
    whatever rows it finished are kept."""
    rows_file = work / f"{name}.jsonl"
    margin = min(20.0, timeout * 0.15)  # the child stops starting rows this long before the kill
    cmd = [sys.executable, __file__, "--section", name, "--rows", str(rows_file), "--settings",
           json.dumps(dataclasses.asdict(settings)), "--deadline", str(time.time() + timeout - margin)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    status, note = "done", None
    try:
        code = proc.wait(timeout=timeout)
        if code != 0:
            status, note = "error", f"exit code {code} (its output is in the log above)"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status, note = "skipped", f"ran out of its {timeout:.0f} s budget; the rows it finished are kept"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    if status == "done" and any("skipped" in r for r in rows):
        status, note = "skipped", "ran out of time before its last rows (marked skipped)"
    return {"status": status, "note": note, "budget_s": round(timeout), "seconds": round(time.perf_counter() - t0, 1), "rows": rows}


def save(result: dict, path: Path, t0: float, complete: bool) -> None:
    """Write the results file (and its copy under $OUT)."""
    result["elapsed_s"], result["complete"] = round(time.time() - t0, 1), complete
    summarise(result)
    path.write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("OUT"):
        shutil.copy2(path, Path(os.environ["OUT"]) / path.name)


def environment(settings: Settings) -> dict:
    import platform

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpu_count": os.cpu_count(), "device": settings.device}
    if settings.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
    for package in ("lightning", "segmentation-models-pytorch", "timm", "albumentations", "pycocotools", "torchvision", "pydantic"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:  # reported, not fatal: the sections that need it record their own error
            env[package] = "missing"
    return env


def summarise(result: dict) -> None:
    """Ratios to the ceiling, and whether the loader keeps up with the GPU."""
    rows = result["sections"].get("train_throughput", {}).get("rows", [])
    ceilings = {r["model"]: r["img_per_s"] for r in rows if r["loop"] == "ceiling" and "img_per_s" in r}
    for r in rows:
        if "img_per_s" in r and r["model"] in ceilings:
            r["ratio"] = r["img_per_s"] / ceilings[r["model"]]
    consumption = {f"{r['model']} {r['loop']}": r["img_per_s"] for r in rows if r["loop"] in ("ceiling", "seglab") and "img_per_s" in r}
    for r in result["sections"].get("data_path", {}).get("rows", []):
        if "img_per_s" in r and consumption:
            fastest = max(consumption.values())
            r["gpu_consumption_img_per_s"] = consumption
            r["keeps_up_with_fastest"] = r["img_per_s"] >= fastest


def print_summary(result: dict) -> None:
    print(f"\n== GPU check on {result['gpu']} ({result['date']}), {result['elapsed_s']:.0f} s of {result['budget_s']} s ==")
    for name, sec in result["sections"].items():
        print(f"-- {name}: {sec['status']}" + (f" ({sec['note']})" if sec.get("note") else "") + f", {sec.get('seconds', 0):.0f} s")
        for r in sec.get("rows", []):
            keys = {k: v for k, v in r.items() if k not in ("gpu_consumption_img_per_s",)}
            print("   " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in keys.items()))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, made-up data: checks the code paths in well under a minute")
    p.add_argument("--budget", type=float, default=None, help="seconds for all sections together (default 500; smoke 240)")
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=15, help="timed steps per throughput row (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--real-epochs", type=int, default=4, help="epochs of the real-data runs")
    p.add_argument("--data", help="the trashbags folder (train/, valid/); default: the carried copy or ../shared/data/trashbags")
    p.add_argument("--out", help="results folder (default benchmarks/results; smoke: runs/gpu_check_smoke)")
    p.add_argument("--prepare-data", metavar="TARGET", help="copy a subset of the trashbags data to TARGET and exit")
    p.add_argument("--train-images", type=int, default=400, help="with --prepare-data: training images to copy")
    p.add_argument("--section", help=argparse.SUPPRESS)  # child process: one section
    p.add_argument("--rows", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:
        run_child(args)
        return 0
    if args.prepare_data:
        source = find_data(args.data)
        if source is None or source.resolve() == Path(args.prepare_data).resolve():
            print("error: the trashbags data was not found (give --data)", file=sys.stderr)
            return 2
        prepare_data(source, Path(args.prepare_data), args.train_images)
        return 0

    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.time()
    budget = args.budget or (240.0 if args.smoke else 500.0)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    if args.smoke:
        data = work / "tiny"
        make_tiny_coco(data / "train", 8, 64, seed=0)
        make_tiny_coco(data / "valid", 4, 64, seed=1)
    else:
        data = find_data(args.data)
        if data is None:
            print("error: the trashbags data was not found: give --data, or carry benchmarks/gpu_data "
                  "(python benchmarks/gpu_check.py --prepare-data benchmarks/gpu_data/trashbags)", file=sys.stderr)
            return 2
    settings = settings_for(args, data / "train", data / "valid")
    env = environment(settings)
    gpu = env.get("gpu", "cpu")
    result = {"schema": 1, "date": started.date().isoformat(), "started": started.isoformat(timespec="seconds"),
              "gpu": gpu, "smoke": args.smoke, "budget_s": budget, "settings": dataclasses.asdict(settings),
              "environment": env, "floors": {"miou_margin_over_all_background": MIOU_MARGIN, "loss_drop": LOSS_DROP},
              "sections": {}}
    if settings.device != "cuda" and not args.smoke:
        print("warning: no CUDA device: the figures are CPU figures (and labelled so)", file=sys.stderr)
    out = Path(args.out) if args.out else (ROOT / "runs" / "gpu_check_smoke" if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [name for name in SECTIONS if name in args.sections]
    part = "" if chosen == list(SECTIONS) else "-" + "-".join(chosen)  # a rerun of some sections keeps the full file
    path = out / f"{result['date']}-{slug(gpu)}{part}{'-smoke' if args.smoke else ''}.json"
    for i, name in enumerate(chosen):
        reserved = sum(SECTIONS[later] for later in chosen[i + 1:]) * budget
        timeout = budget - (time.time() - t0) - reserved
        if timeout < 5:
            result["sections"][name] = {"status": "skipped", "note": "no time left in the budget", "budget_s": 0, "rows": []}
            continue
        print(f"== {name} (budget {timeout:.0f} s)", flush=True)
        result["sections"][name] = run_section(name, settings, timeout, work)
        save(result, path, t0, complete=False)  # a run stopped from outside keeps the sections done so far
    shutil.rmtree(work, ignore_errors=True)
    save(result, path, t0, complete=True)
    print_summary(result)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
