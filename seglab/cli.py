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


def _tta(args, run_dir=None):
    """The TTA the flags ask for over the run's own `tta` section; None = the run's own."""
    if not (args.no_tta or args.flips is not None or args.scales is not None):
        return None
    from seglab.config import load_config
    from seglab.tta import parse_tta

    base = load_config(Path(run_dir) / "config.yaml").tta if run_dir else None
    return parse_tta(args.flips, args.scales, base, off=args.no_tta)


def _add_tta_flags(p) -> None:
    p.add_argument("--flips", help="TTA flips, comma-separated: h,v,hv ('none' = no flip); default: the run's tta.flips")
    p.add_argument("--scales", help="TTA scales, comma-separated, e.g. 0.75,1,1.25; default: the run's tta.scales")
    p.add_argument("--no-tta", action="store_true", help="plain prediction, whatever the run's tta section says")


def cmd_evaluate(args) -> None:
    from seglab.inference import evaluate

    scores = evaluate(args.run_dir, args.split, args.checkpoint, args.device, tta=_tta(args, args.run_dir))
    print(json.dumps(scores, indent=2))


def cmd_predict(args) -> None:
    from seglab.config import load_config
    from seglab.inference import iter_predictions
    from seglab.submission import WRITERS

    cfg = load_config(Path(args.run_dir) / "config.yaml")
    fmt = args.format or cfg.submission.format
    writer = WRITERS.get(fmt, "--format")
    predictions = iter_predictions(args.run_dir, args.split, args.checkpoint, args.device, tta=_tta(args, args.run_dir))
    count = writer(predictions, Path(args.out), tuple(cfg.submission.size))
    print(f"wrote {count} predictions ({fmt}) to {args.out}")


def cmd_kfold(args) -> None:
    from seglab.kfold import format_kfold, run_kfold

    if args.resume:
        if args.config or args.overrides or args.folds:
            raise SystemExit("seglab kfold --resume OUT takes no CONFIG, overrides or --folds (the saved config is used)")
        summary = run_kfold(None, args.resume, resume=True, device=args.device)
        out = Path(args.resume)
    else:
        if not args.config or not args.out:
            raise SystemExit("seglab kfold: give CONFIG and --out DIR (or --resume OUT)")
        overrides = list(args.overrides) + ([f"kfold.folds={args.folds}"] if args.folds else [])
        from seglab.config import load_config

        summary = run_kfold(load_config(args.config, overrides), args.out, device=args.device)
        out = Path(args.out)
    print("\n" + format_kfold(summary))
    print(f"\nk-fold folder: {out}  (summary {out / 'kfold.json'})")


def _members(args):
    from seglab.ensemble import resolve_members

    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    tta = _tta(args)
    members, base = resolve_members(args.members, weights, tta)
    return members, args.data or base


def cmd_ensemble(args) -> None:
    from seglab.ensemble import describe, evaluate_members, iter_ensemble_predictions, reference, write_scores

    members, data = _members(args)
    print(f"ensemble of {len(members)} member(s):\n{describe(members)}", file=sys.stderr)
    if args.split != "test" and not args.format:
        scores, _ = evaluate_members(members, args.split, data, args.device, args.batch_size)
        if args.out:
            write_scores(Path(args.out), scores)
        print(json.dumps(scores, indent=2))
        return
    if not args.out:
        raise SystemExit("seglab ensemble --split test: give --out (CSV file or PNG folder)")
    from seglab.ensemble import load_members
    from seglab.submission import WRITERS

    members = load_members(members, args.device)
    ref_cfg, _ = reference(members, data)
    fmt = args.format or ref_cfg.submission.format
    writer = WRITERS.get(fmt, "--format")
    predictions = iter_ensemble_predictions(members, args.split, data, args.device, args.batch_size)
    count = writer(predictions, Path(args.out), tuple(ref_cfg.submission.size))
    print(f"wrote {count} ensemble predictions ({fmt}) to {args.out}")


def cmd_pseudo(args) -> None:
    from seglab.pseudo import write_pseudo_labels

    members, data = _members(args)
    summary = write_pseudo_labels(members, args.out, args.split, args.threshold, args.min_confident, data, args.device, args.batch_size)
    print(json.dumps(summary, indent=2))
    print(f"add it to training with: data.extra_train=[{summary['path']}]")


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
    _add_tta_flags(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="write a submission for a split")
    pr.add_argument("run_dir")
    pr.add_argument("--split", default="test")
    pr.add_argument("--out", required=True, help="CSV file (coco_csv) or folder (png)")
    pr.add_argument("--format", help="coco_csv or png (default: the config's submission.format)")
    pr.add_argument("--checkpoint", default="best")
    pr.add_argument("--device")
    _add_tta_flags(pr)
    pr.set_defaults(func=cmd_predict)

    k = sub.add_parser("kfold", help="k-fold cross-validation: splits, one run per fold, out-of-fold scores")
    k.add_argument("config", nargs="?", help="YAML config (its data.train is split)")
    k.add_argument("overrides", nargs="*", help="key.path=value overrides")
    k.add_argument("--folds", type=int, help="number of folds (default: the config's kfold.folds)")
    k.add_argument("--out", help="k-fold folder: folds/, fold_K/ runs, kfold.json")
    k.add_argument("--resume", metavar="OUT", help="continue a stopped k-fold (finished folds are skipped)")
    k.add_argument("--device", help="device for the fold evaluations")
    k.set_defaults(func=cmd_kfold)

    member_help = "run folders (RUN, RUN:last, RUN:best, RUN:file.ckpt) or k-fold folders (all their folds)"
    en = sub.add_parser("ensemble", help="average the probabilities of several runs; evaluate or write a submission")
    en.add_argument("members", nargs="+", help=member_help)
    en.add_argument("--weights", help="comma-separated weight per member (a k-fold folder's weight is shared by its folds)")
    en.add_argument("--split", default="val", help="val (metrics) or test (submission)")
    en.add_argument("--out", help="submission (CSV file or PNG folder) for test; metrics JSON for a labelled split")
    en.add_argument("--format", help="submission format (default: the reference config's); forces writing predictions")
    en.add_argument("--data", help="config (or run folder) whose split is read; default the first member's (a k-fold's base config)")
    en.add_argument("--batch-size", type=int)
    en.add_argument("--device")
    _add_tta_flags(en)
    en.set_defaults(func=cmd_ensemble)

    ps = sub.add_parser("pseudo", help="pseudo-label a split from confident (ensemble) predictions, as a COCO JSON")
    ps.add_argument("members", nargs="+", help=member_help)
    ps.add_argument("--weights", help="comma-separated weight per member")
    ps.add_argument("--split", default="test")
    ps.add_argument("--out", required=True, help="output .json file, or a folder (pseudo.json inside)")
    ps.add_argument("--threshold", type=float, default=0.9, help="pixels whose winning probability is below this become ignore")
    ps.add_argument("--min-confident", type=float, default=0.5, help="drop images with a smaller share of confident pixels")
    ps.add_argument("--data", help="config (or run folder) whose split is read; default the first member's")
    ps.add_argument("--batch-size", type=int)
    ps.add_argument("--device")
    _add_tta_flags(ps)
    ps.set_defaults(func=cmd_pseudo)

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
