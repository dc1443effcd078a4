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
        monitor = best.get("monitor", "mIoU")
        value = best.get(monitor)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else value
        print(f"best {monitor}: epoch {best['epoch']}, {monitor} {shown}  -> {run_dir / 'metrics.json'}")


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
    if _task(args.run_dir) == "classification":
        from seglab.classification.inference import evaluate

        scores = evaluate([args.run_dir, *args.ensemble], args.split, args.checkpoint, args.device, args.tta)
        print(json.dumps(scores, indent=2))
        return
    from seglab.inference import evaluate

    _classification_only(args)
    scores = evaluate(args.run_dir, args.split, args.checkpoint, args.device, original_size=args.original_size,
                      tta=_tta(args, args.run_dir))
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
    if cfg.task == "multilabel" and not getattr(writer, "accepts_multilabel", False):
        from seglab.errors import ConfigError

        raise ConfigError(f"--format {fmt}: writes class maps; a multilabel run needs --format rle")
    extra = {}
    if getattr(writer, "needs_classes", False):  # the rle writer names each row's class
        from seglab.data.labels import LabelSpec

        extra["classes"] = list(LabelSpec.from_json(json.loads((Path(args.run_dir) / "labels.json").read_text())).classes)
    predictions = iter_predictions(args.run_dir, args.split, args.checkpoint, args.device, tta=_tta(args, args.run_dir))
    count = writer(predictions, Path(args.out), tuple(cfg.submission.size), **extra)
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
    if args.format == "maskstatus":
        from seglab.classification.synth import make_maskstatus_dataset

        paths = make_maskstatus_dataset(args.out, args.n_train or 60, args.n_test or 24, args.size or 64, args.seed)
        for split, path in paths.items():
            print(f"{split}: {path}")
        return
    from seglab.data.synth import make_coco_dataset

    if args.format == "polygons":
        from seglab.data.synth_polygons import make_polygon_dataset

        # --n-* count people (ID folders, two images each) in this layout.
        counts = [n if n is not None else d for n, d in zip((args.n_train, args.n_val, args.n_test), (24, 8, 4))]
        paths = make_polygon_dataset(args.out, *counts, args.size or 128, args.seed)
        for key, path in paths.items():
            print(f"{key}: {path}")
        return
    counts = [n if n is not None else d for n, d in zip((args.n_train, args.n_val, args.n_test), (48, 16, 8))]
    paths = make_coco_dataset(args.out, *counts, args.size or 128, args.seed)
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

        labels = resolve_labels(cfg)
        problems = validate_data(cfg, labels)
    else:
        from seglab.data import collect_problems

        labels, problems = collect_problems(cfg, deep=args.deep)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s); classes: {', '.join(labels.classes) if labels else 'unresolved'}")
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


def cmd_data_split(args) -> None:
    from seglab.data import open_source
    from seglab.data.splits import write_folds

    cfg = _config(args)
    source = open_source(cfg, args.split, None)
    stratify = [c.strip() for c in args.stratify.split(",") if c.strip()] if args.stratify else []
    summary = write_folds(source, cfg.data.format, args.out, args.folds, args.seed, args.group_by,
                          args.metadata, args.id_column, stratify, args.bins)
    print(f"{summary['images']} images, {summary['groups']} groups -> {summary['folds']} folds ({summary['table']})")
    for k, fold in enumerate(summary["per_fold"]):
        strata = f"  strata {fold['strata']}" if "strata" in fold else ""
        print(f"fold {k}: {fold['images']} images, {fold['groups']} groups{strata}")
    train, val = summary["files"][0]
    print(f"use fold 0: data.train={Path(train).resolve()} data.val={Path(val).resolve()}")


def cmd_data_rle_decode(args) -> None:
    from seglab.rle import decode_to_pngs

    count = decode_to_pngs(args.csv, args.out, tuple(args.size))
    print(f"wrote {count} masks (one PNG per image x class) under {args.out}")


def cmd_tune_thresholds(args) -> None:
    from seglab.thresholds import DEFAULT_GRID, tune_thresholds

    grid = [float(v) for v in args.grid.split(",")] if args.grid else DEFAULT_GRID
    record = tune_thresholds(args.run_dir, args.split, args.checkpoint, args.device, grid, args.original_size, save=not args.dry_run)
    width = max(12, *(len(c) for c in record["thresholds"]))
    print(f"{'class':<{width}}  threshold  Dice before  Dice after")
    for c, t in record["thresholds"].items():
        print(f"{c:<{width}}  {t:9.2f}  {record['per_class_dice_before'][c]:11.4f}  {record['per_class_dice_after'][c]:10.4f}")
    print(f"mean Dice on {args.split}: {record['dice_before']:.4f} -> {record['dice_after']:.4f}"
          + (f"  (saved {record['path']})" if "path" in record else "  (not saved: --dry-run)"))


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
    e.add_argument("--original-size", action="store_true", help="score predictions at each image's original size (what predict writes)")
    _add_tta_flags(e)
    e.add_argument("--ensemble", nargs="+", default=[], metavar="RUN", help="classification: more runs whose probabilities are averaged")
    e.add_argument("--tta", nargs="*", choices=["hflip", "vflip"], help="classification: TTA views (default: the run's classification.tta)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="write a submission for a split")
    pr.add_argument("run_dir")
    pr.add_argument("--split", default="test")
    pr.add_argument("--out", required=True, help="CSV file (coco_csv) or folder (png)")
    pr.add_argument("--format", help="coco_csv, png or rle; classification: maskstatus, id_label, probs or pseudo (default: the config's submission.format)")
    pr.add_argument("--checkpoint", default="best")
    pr.add_argument("--device")
    _add_tta_flags(pr)
    pr.add_argument("--ensemble", nargs="+", default=[], metavar="RUN", help="classification: more runs whose probabilities are averaged")
    pr.add_argument("--tta", nargs="*", choices=["hflip", "vflip"], help="classification: TTA views (default: the run's classification.tta)")
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
    s = d.add_parser("synth", help="write a built-in example dataset: COCO (competition A), polygons (B) or mask status (C)")
    s.add_argument("--out", required=True)
    s.add_argument("--format", choices=("coco", "polygons", "maskstatus"), default="coco",
                   help="polygons: hand-bone layout, --n-* count people; maskstatus: --n-train/--n-test count persons")
    s.add_argument("--n-train", type=int, help="default 48 images (coco) / 24 people (polygons) / 60 persons (maskstatus)")
    s.add_argument("--n-val", type=int, help="default 16 images / 8 people (maskstatus: validation is a fold of persons)")
    s.add_argument("--n-test", type=int, help="default 8 images / 4 people / 24 persons")
    s.add_argument("--size", type=int, help="image side in pixels (default 128; 64 for maskstatus)")
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
    v.add_argument("--deep", action="store_true", help="decode every image fully (finds truncated or corrupt files; slower)")
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

    _add_multilabel_commands(sub, d)

    m = sub.add_parser("models", help="list the registered models, their parts and parameter counts")
    m.add_argument("--classes", type=int, default=12)
    m.add_argument("--encoder", default="resnet34", help="encoder used for the smp architectures")
    m.set_defaults(func=cmd_models)

    c = sub.add_parser("config", help="print a config with defaults filled in (validates it)")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=cmd_config)
    return p


def _add_multilabel_commands(sub, d) -> None:
    sp = d.add_parser("split", help="k folds keeping each person (ID folder) together; optional stratification on a metadata table")
    sp.add_argument("config")
    sp.add_argument("overrides", nargs="*")
    sp.add_argument("--folds", type=int, default=5)
    sp.add_argument("--out", required=True, help="folder for the fold files")
    sp.add_argument("--split", default="train", help="which configured split is the pool (default train)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--group-by", default="folder", choices=("folder", "none"), help="folder: the ID folder; none: plain k-fold")
    sp.add_argument("--metadata", help="CSV or XLSX table with one row per ID")
    sp.add_argument("--id-column", default="ID")
    sp.add_argument("--stratify", help="comma-separated metadata columns (numeric ones are binned), e.g. sex,age")
    sp.add_argument("--bins", type=int, default=3, help="quantile bins for numeric stratification columns")
    sp.set_defaults(func=cmd_data_split)
    rd = d.add_parser("rle-decode", help="turn an image_name,class,rle CSV back into one PNG mask per image x class")
    rd.add_argument("csv")
    rd.add_argument("--out", required=True)
    rd.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"), help="original image size")
    rd.set_defaults(func=cmd_data_rle_decode)

    th = sub.add_parser("tune-thresholds", help="per-class thresholds maximising Dice on a split; saved to RUN/thresholds.json")
    th.add_argument("run_dir")
    th.add_argument("--split", default="val")
    th.add_argument("--checkpoint", default="best")
    th.add_argument("--device")
    th.add_argument("--grid", help="comma-separated thresholds (default 0.05,0.10,...,0.95)")
    th.add_argument("--original-size", action="store_true", help="search at each image's original size")
    th.add_argument("--dry-run", action="store_true", help="print, do not save")
    th.set_defaults(func=cmd_tune_thresholds)


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
