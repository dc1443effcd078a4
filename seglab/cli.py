"""The `seglab` command. Each subcommand parses its arguments and calls one function;
a `SeglabError` is printed as one line (no traceback) with exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path


def _config(args):
    from seglab.config import load_config

    return load_config(args.config, args.overrides)


def cmd_train(args) -> None:
    from seglab.config import load_config
    from seglab.training import train

    if args.resume:
        run_dir = Path(args.resume)
        if args.config and args.config != str(run_dir):
            args.overrides = [args.config] + args.overrides  # `train --resume RUN key=value`
        cfg = load_config(run_dir / "config.yaml", args.overrides)
    else:
        if not args.config:
            raise SystemExit("seglab train: give a CONFIG (or --resume RUN_DIR)")
        cfg = _config(args)
        run_dir = Path(args.out or Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    started = time.time()
    best = train(cfg, run_dir, resume=bool(args.resume))
    print(f"\nrun folder: {run_dir}  ({time.time() - started:.0f} s)")
    if best:
        print(f"best {best.get('monitor', 'mIoU')}: epoch {best['epoch']}, mIoU {best['mIoU']:.4f}  -> {run_dir / 'metrics.json'}")


def cmd_evaluate(args) -> None:
    from seglab.inference import evaluate

    scores = evaluate(args.run_dir, args.split, args.checkpoint, args.device)
    print(json.dumps(scores, indent=2))


def cmd_predict(args) -> None:
    from seglab.config import load_config
    from seglab.inference import iter_predictions
    from seglab.submission import WRITERS

    cfg = load_config(Path(args.run_dir) / "config.yaml")
    fmt = args.format or cfg.submission.format
    writer = WRITERS.get(fmt, "--format")
    count = writer(iter_predictions(args.run_dir, args.split, args.checkpoint, args.device), Path(args.out), tuple(cfg.submission.size))
    print(f"wrote {count} predictions ({fmt}) to {args.out}")


def cmd_data_synth(args) -> None:
    from seglab.data.synth import make_coco_dataset

    paths = make_coco_dataset(args.out, args.n_train, args.n_val, args.n_test, args.size, args.seed)
    for split, path in paths.items():
        print(f"{split}: {path}")


def cmd_data_inspect(args) -> None:
    from seglab.data.inspect import format_inspection, inspect_coco

    report = inspect_coco(args.json, args.root, args.paint_order)
    print(json.dumps(report, indent=2) if args.json_output else format_inspection(report))


def cmd_data_validate(args) -> None:
    from seglab.data import resolve_labels, validate_data

    cfg = _config(args)
    labels = resolve_labels(cfg)
    problems = validate_data(cfg, labels)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s); classes: {', '.join(labels.classes)}")
    if problems:
        raise SystemExit(1)


def cmd_report(args) -> None:
    from seglab.report import write_report

    print(f"report: {write_report(args.run_dir)}")


def cmd_runs(args) -> None:
    from seglab.runs import diff_runs, runs_table

    if args.dirs and args.dirs[0] == "diff":
        if len(args.dirs) != 3:
            raise SystemExit("usage: seglab runs diff RUN_A RUN_B")
        print(diff_runs(args.dirs[1], args.dirs[2]))
    else:
        print(runs_table(args.dirs[0] if args.dirs else "runs"))


def cmd_viz_gt(args) -> None:
    from seglab.config import DataConfig
    from seglab.data.sources import CocoSource
    from seglab.visualization import draw_ground_truth

    path = Path(args.json)
    data_cfg = DataConfig(root=args.root or str(path.parent), train=str(path.resolve()), paint_order=args.paint_order)
    source = CocoSource(data_cfg, "train", CocoSource.resolve_labels(data_cfg))
    samples = ((source.sample_id(i), source.load_image(i), source.load_mask(i)) for i in range(len(source)))
    paths = draw_ground_truth(samples, args.out, list(source.labels.classes), source.labels.ignore_index, limit=args.limit)
    print(f"wrote {len(paths)} ground-truth overlays to {args.out}")


def cmd_viz_aug(args) -> None:
    from seglab.data.preview import augmented_samples
    from seglab.visualization import draw_augmented

    cfg = _config(args)
    labels, samples = augmented_samples(cfg, args.n, args.seed)
    paths = draw_augmented(samples, args.out, list(labels.classes), labels.ignore_index)
    print(f"wrote {len(paths)} augmented samples (augment.train, then augment.batch on them as one batch) to {args.out}")


def cmd_models(args) -> None:
    from seglab.models import describe_models

    print(f"{'model':<14} {'params':>12}  parts (parameters)  [{args.classes} classes, smp encoder {args.encoder}]")
    for row in describe_models(args.classes, args.encoder):
        if "error" in row:
            print(f"{row['name']:<14} {'-':>12}  {row['error']}")
            continue
        parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in row["parts"].items())
        print(f"{row['name']:<14} {row['params'] / 1e6:>11.2f}M  {parts}")


def cmd_config(args) -> None:
    from seglab.config import to_yaml

    print(to_yaml(_config(args)), end="")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seglab", description="Config-driven segmentation experiment lab")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run from a config")
    t.add_argument("config", nargs="?", help="YAML config")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides")
    t.add_argument("--out", help="run folder (default runs/<config>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="metrics of a trained run on a labelled split (JSON)")
    e.add_argument("run_dir")
    e.add_argument("--split", default="val")
    e.add_argument("--checkpoint", default="best", help="best, last, or a .ckpt path")
    e.add_argument("--device")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="write a submission for a split")
    pr.add_argument("run_dir")
    pr.add_argument("--split", default="test")
    pr.add_argument("--out", required=True, help="CSV file (coco_csv) or folder (png)")
    pr.add_argument("--format", help="coco_csv or png (default: the config's submission.format)")
    pr.add_argument("--checkpoint", default="best")
    pr.add_argument("--device")
    pr.set_defaults(func=cmd_predict)

    d = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    s = d.add_parser("synth", help="write the built-in example dataset (COCO, competition-A layout)")
    s.add_argument("--out", required=True)
    s.add_argument("--n-train", type=int, default=48)
    s.add_argument("--n-val", type=int, default=16)
    s.add_argument("--n-test", type=int, default=8)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_data_synth)
    i = d.add_parser("inspect", help="class counts, pixel shares, overlaps, sizes and problems of a COCO file")
    i.add_argument("json")
    i.add_argument("--root", help="image root (default: the JSON's folder)")
    i.add_argument("--paint-order", default="area_desc")
    i.add_argument("--json", dest="json_output", action="store_true", help="print the report as JSON")
    i.set_defaults(func=cmd_data_inspect)
    v = d.add_parser("validate", help="list every data problem a config's splits have")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    v.set_defaults(func=cmd_data_validate)

    r = sub.add_parser("report", help="write RUN_DIR/report/index.html (static, opens from disk)")
    r.add_argument("run_dir")
    r.set_defaults(func=cmd_report)

    rs = sub.add_parser("runs", help="list runs under a folder (default runs/), or `runs diff A B`")
    rs.add_argument("dirs", nargs="*", help="[DIR] or diff RUN_A RUN_B")
    rs.set_defaults(func=cmd_runs)

    vz = sub.add_parser("viz", help="visual checks").add_subparsers(dest="viz_command", required=True)
    g = vz.add_parser("gt", help="draw ground-truth overlays of a COCO file (check labels before training)")
    g.add_argument("json")
    g.add_argument("--out", required=True)
    g.add_argument("--root", help="image root (default: the JSON's folder)")
    g.add_argument("--paint-order", default="area_desc")
    g.add_argument("--limit", type=int, help="at most this many images")
    g.set_defaults(func=cmd_viz_gt)
    a = vz.add_parser("aug", help="save training samples as the model sees them after augment.train and augment.batch")
    a.add_argument("config")
    a.add_argument("overrides", nargs="*")
    a.add_argument("--out", required=True)
    a.add_argument("--n", type=int, default=8, help="samples (one batch for augment.batch)")
    a.add_argument("--seed", type=int, default=0, help="augmentation seed: another value shows other draws")
    a.set_defaults(func=cmd_viz_aug)

    m = sub.add_parser("models", help="list the registered models, their parts and parameter counts")
    m.add_argument("--classes", type=int, default=12)
    m.add_argument("--encoder", default="resnet34", help="encoder used for the smp architectures")
    m.set_defaults(func=cmd_models)

    c = sub.add_parser("config", help="print a config with defaults filled in (validates it)")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    from seglab.errors import SeglabError

    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    # `key=value` overrides may come after options too (`train cfg.yaml --out RUN lr=...`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [a for a in extra if a.startswith("-") or "=" not in a]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        args.func(args)
    except SeglabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
