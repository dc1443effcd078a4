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


def _task(run_dir) -> str:
    from seglab.config import load_config

    return load_config(Path(run_dir) / "config.yaml").task if (Path(run_dir) / "config.yaml").is_file() else "multiclass"


def _classification_only(args) -> None:
    from seglab.errors import ConfigError

    if args.ensemble or args.tta is not None:
        raise ConfigError("--ensemble and --tta apply to classification runs only")


def cmd_train(args) -> None:
    from seglab.config import load_config

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
    if cfg.task == "classification":
        from seglab.classification.training import train
    else:
        from seglab.training import train
    started = time.time()
    best = train(cfg, run_dir, resume=bool(args.resume))
    print(f"\nrun folder: {run_dir}  ({time.time() - started:.0f} s)")
    if best:
        key = best.get("monitor", "mIoU")
        print(f"best {key}: epoch {best['epoch']}, {key} {best[key]:.4f}  -> {run_dir / 'metrics.json'}")


def cmd_evaluate(args) -> None:
    if _task(args.run_dir) == "classification":
        from seglab.classification.inference import evaluate

        scores = evaluate([args.run_dir, *args.ensemble], args.split, args.checkpoint, args.device, args.tta)
        print(json.dumps(scores, indent=2))
        return
    from seglab.inference import evaluate

    _classification_only(args)
    scores = evaluate(args.run_dir, args.split, args.checkpoint, args.device)
    print(json.dumps(scores, indent=2))


def cmd_predict(args) -> None:
    from seglab.config import load_config
    from seglab.inference import iter_predictions
    from seglab.submission import WRITERS

    cfg = load_config(Path(args.run_dir) / "config.yaml")
    if cfg.task == "classification":
        from seglab.classification.inference import predict

        count = predict([args.run_dir, *args.ensemble], args.split, args.out, args.format, args.checkpoint, args.device, args.tta)
        print(f"wrote {count} rows ({args.format or cfg.submission.format}) to {args.out}")
        return
    _classification_only(args)
    fmt = args.format or cfg.submission.format
    writer = WRITERS.get(fmt, "--format")
    count = writer(iter_predictions(args.run_dir, args.split, args.checkpoint, args.device), Path(args.out), tuple(cfg.submission.size))
    print(f"wrote {count} predictions ({fmt}) to {args.out}")


def cmd_data_synth(args) -> None:
    if args.format == "maskstatus":
        from seglab.classification.synth import make_maskstatus_dataset

        paths = make_maskstatus_dataset(args.out, args.n_train or 60, args.n_test or 24, args.size or 64, args.seed)
        for split, path in paths.items():
            print(f"{split}: {path}")
        return
    from seglab.data.synth import make_coco_dataset

    paths = make_coco_dataset(args.out, args.n_train or 48, args.n_val, args.n_test or 8, args.size or 128, args.seed)
    for split, path in paths.items():
        print(f"{split}: {path}")


def cmd_data_inspect(args) -> None:
    from seglab.data.inspect import format_inspection, inspect_coco

    report = inspect_coco(args.json, args.root, args.paint_order)
    print(json.dumps(report, indent=2) if args.json_output else format_inspection(report))


def cmd_data_validate(args) -> None:
    cfg = _config(args)
    if cfg.task == "classification":
        from seglab.classification.data import resolve_labels, validate_data
    else:
        from seglab.data import resolve_labels, validate_data
    labels = resolve_labels(cfg)
    problems = validate_data(cfg, labels)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s); classes: {', '.join(labels.classes)}")
    if problems:
        raise SystemExit(1)


def cmd_models(args) -> None:
    from seglab.models import describe_models

    for name, doc in describe_models():
        print(f"{name:<16} {doc}")


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
    e.add_argument("--ensemble", nargs="+", default=[], metavar="RUN", help="classification: more runs whose probabilities are averaged")
    e.add_argument("--tta", nargs="*", choices=["hflip", "vflip"], help="classification: TTA views (default: the run's classification.tta)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="write a submission for a split")
    pr.add_argument("run_dir")
    pr.add_argument("--split", default="test")
    pr.add_argument("--out", required=True, help="CSV file (coco_csv) or folder (png)")
    pr.add_argument("--format", help="coco_csv or png; classification: maskstatus, id_label, probs or pseudo (default: the config's submission.format)")
    pr.add_argument("--checkpoint", default="best")
    pr.add_argument("--device")
    pr.add_argument("--ensemble", nargs="+", default=[], metavar="RUN", help="classification: more runs whose probabilities are averaged")
    pr.add_argument("--tta", nargs="*", choices=["hflip", "vflip"], help="classification: TTA views (default: the run's classification.tta)")
    pr.set_defaults(func=cmd_predict)

    d = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    s = d.add_parser("synth", help="write the built-in example dataset (COCO, competition-A layout; or mask status, competition C)")
    s.add_argument("--out", required=True)
    s.add_argument("--format", choices=["coco", "maskstatus"], default="coco")
    s.add_argument("--n-train", type=int, help="training images (coco, default 48) or persons (maskstatus, 7 images each, default 60)")
    s.add_argument("--n-val", type=int, default=16, help="validation images (coco only; maskstatus validation is a fold of persons)")
    s.add_argument("--n-test", type=int, help="test images (coco, default 8) or eval persons (maskstatus, default 24)")
    s.add_argument("--size", type=int, help="image side in pixels (default 128 coco, 64 maskstatus)")
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

    m = sub.add_parser("models", help="list the registered models")
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
    args = build_parser().parse_args(argv)
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
