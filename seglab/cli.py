"""The `seglab` command. Each subcommand parses its arguments and calls one function of
the engine; no command knows which task a run has. A `SeglabError` is printed as one
line (no traceback) with exit code 2."""

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


# ------------------------------------------------------------------ training


def cmd_train(args) -> None:
    from seglab.config import load_config
    from seglab.core.training import train

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
        monitor = best.get("monitor")
        value = best.get(monitor)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else value
        print(f"best {monitor}: epoch {best['epoch']}, {monitor} {shown}  -> {run_dir / 'metrics.json'}")


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
        args.overrides = list(args.overrides) + ([f"kfold.folds={args.folds}"] if args.folds else [])
        summary = run_kfold(_config(args), args.out, device=args.device)
        out = Path(args.out)
    print("\n" + format_kfold(summary))
    print(f"\nk-fold folder: {out}  (summary {out / 'kfold.json'}; ensemble of its folds: seglab ensemble {out})")


# ------------------------------------------------------------------ evaluating and predicting


def _members(args, specs: list[str]):
    """Loaded members (k-fold folders expanded) with the command line's TTA, and the config
    whose split is read."""
    from seglab.errors import ConfigError
    from seglab.inference.ensemble import resolve_members
    from seglab.inference.tta import parse_tta

    weights = None
    if getattr(args, "weights", None):
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights {args.weights!r}: expected comma-separated numbers") from None
    members, base = resolve_members(specs, weights, device=args.device)
    if args.no_tta or args.flips is not None or args.scales is not None:
        for m in members:
            m.tta = parse_tta(args.flips, args.scales, m.run.cfg.tta, off=args.no_tta)
    for m in members:
        bad = [f for f in m.tta.flips if f not in m.run.task.tta_flips]
        if bad:
            raise ConfigError(f"--flips: {bad} not supported by a {m.run.task.name} run (use {', '.join(m.run.task.tta_flips)})")
    return members, getattr(args, "data", None) or base


def _one_run(args) -> list[tuple[Path, str]]:
    return [(Path(args.run_dir), args.checkpoint)]


def _print_scores(scores: dict, out: str | None = None) -> None:
    from seglab.core.module import finite

    if out:
        from seglab.io import write_json

        write_json(Path(out), finite(scores))
    print(json.dumps(finite(scores), indent=2))


def _write_submission(members, split: str, out: str, fmt: str | None, data, batch_size) -> None:
    from seglab.errors import ConfigError
    from seglab.inference.predict import predictions, reference
    from seglab.submission import WRITERS, WriteContext

    run = members[0].run
    ref = reference(members, data)
    fmt = fmt or run.cfg.submission.format
    if fmt not in run.task.writers:
        raise ConfigError(f"--format {fmt}: not a {run.task.name} format (use {', '.join(run.task.writers)})")
    writer = WRITERS.get(fmt, "--format")
    context = WriteContext(list(ref.labels.classes), ref.cfg, split)
    count = writer(predictions(members, split, ref, batch_size), Path(out), context)
    print(f"wrote {count} predictions ({fmt}) to {out}")


def cmd_evaluate(args) -> None:
    from seglab.inference.predict import evaluate

    members, data = _members(args, _one_run(args))
    scores, _ = evaluate(members, args.split, data, args.original_size)
    scores["checkpoint"] = args.checkpoint
    _print_scores(scores)


def cmd_predict(args) -> None:
    members, data = _members(args, _one_run(args))
    _write_submission(members, args.split, args.out, args.format, data, None)


def cmd_ensemble(args) -> None:
    from seglab.inference.ensemble import describe
    from seglab.inference.predict import evaluate

    members, data = _members(args, args.members)
    print(f"ensemble of {len(members)} member(s):\n{describe(members)}", file=sys.stderr)
    if args.split != "test" and not args.format:
        scores, _ = evaluate(members, args.split, data, args.original_size, args.batch_size)
        _print_scores(scores, args.out)
        return
    if not args.out:
        raise SystemExit("seglab ensemble --split test: give --out (a file, or a folder for png)")
    _write_submission(members, args.split, args.out, args.format, data, args.batch_size)


def cmd_pseudo(args) -> None:
    from seglab.inference.pseudo import write_pseudo_labels

    members, data = _members(args, args.members)
    summary = write_pseudo_labels(members, args.out, args.split, args.threshold, args.min_confident, data, args.batch_size)
    print(json.dumps(summary, indent=2))
    print(f"add it to training with: data.extra_train=[{summary['path']}]")


def cmd_tune_thresholds(args) -> None:
    from seglab.inference.thresholds import DEFAULT_GRID, tune_thresholds
    from seglab.inference.tta import parse_tta

    grid = [float(v) for v in args.grid.split(",")] if args.grid else DEFAULT_GRID
    tta = None
    if args.no_tta or args.flips is not None or args.scales is not None:
        from seglab.core.run import read_run_files

        tta = parse_tta(args.flips, args.scales, read_run_files(args.run_dir)[0].tta, off=args.no_tta)
    record = tune_thresholds(args.run_dir, args.split, args.checkpoint, args.device, grid, args.original_size,
                             save=not args.dry_run, tta=tta)
    width = max(12, *(len(c) for c in record["thresholds"]))
    print(f"{'class':<{width}}  threshold  Dice before  Dice after")
    for c, t in record["thresholds"].items():
        print(f"{c:<{width}}  {t:9.2f}  {record['per_class_dice_before'][c]:11.4f}  {record['per_class_dice_after'][c]:10.4f}")
    print(f"mean Dice on {args.split} at {record['resolution']}"
          f"{' (post-processed)' if record['postprocessed'] else ''}: {record['dice_before']:.4f} -> {record['dice_after']:.4f}"
          + (f"  (saved {record['path']})" if "path" in record else "  (not saved: --dry-run)"))


# ------------------------------------------------------------------ data


def cmd_data_synth(args) -> None:
    if args.format == "maskstatus":
        from seglab.data.synth.maskstatus import make_maskstatus_dataset

        paths = make_maskstatus_dataset(args.out, args.n_train or 60, args.n_test or 24, args.size or 64, args.seed)
    elif args.format == "polygons":
        from seglab.data.synth.polygons import make_polygon_dataset

        # --n-* count people (ID folders, two images each) in this layout.
        counts = [n if n is not None else d for n, d in zip((args.n_train, args.n_val, args.n_test), (24, 8, 4))]
        paths = make_polygon_dataset(args.out, *counts, args.size or 128, args.seed)
    else:
        from seglab.data.synth.coco import make_coco_dataset

        counts = [n if n is not None else d for n, d in zip((args.n_train, args.n_val, args.n_test), (48, 16, 8))]
        paths = make_coco_dataset(args.out, *counts, args.size or 128, args.seed)
    for key, path in paths.items():
        print(f"{key}: {path}")


def cmd_data_inspect(args) -> None:
    from seglab.data.inspect import format_inspection, inspect_coco

    report = inspect_coco(args.json, args.root, args.paint_order)
    print(json.dumps(report, indent=2) if args.json_output else format_inspection(report))


def cmd_data_validate(args) -> None:
    from seglab.core.training import config_problems
    from seglab.data import collect_problems

    cfg = _config(args)
    labels, problems = collect_problems(cfg, deep=args.deep)
    problems = config_problems(cfg) + problems
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s); classes: {', '.join(labels.classes) if labels else 'unresolved'}")
    if problems:
        raise SystemExit(1)


def cmd_data_split(args) -> None:
    from seglab.task import get_task
    from seglab.data import resolve_labels
    from seglab.data.sources import SOURCES
    from seglab.data.splits import assign_folds

    cfg = _config(args)
    labels = resolve_labels(cfg)
    pool = SOURCES.get(cfg.data.format, "data.format")(cfg.data, args.split, labels)
    folds = assign_folds(pool, labels, get_task(cfg.task), cfg, args.folds, args.seed)
    path = folds.write(Path(args.out) / "folds.csv")
    print(f"{len(folds.ids)} samples, {len(set(folds.groups))} groups -> {folds.k} folds, {folds.strategy} ({path})")
    for k, fold in enumerate(folds.summary()):
        strata = f"  strata {fold['strata']}" if "strata" in fold else ""
        print(f"fold {k}: {fold['images']} samples, {fold['groups']} groups{strata}")
    print(f"validate on fold 0: data.folds={path.resolve()} data.fold=0")


def cmd_data_rle_decode(args) -> None:
    from seglab.submission.rle import decode_to_pngs

    count = decode_to_pngs(args.csv, args.out, tuple(args.size))
    print(f"wrote {count} masks (one PNG per image x class) under {args.out}")


# ------------------------------------------------------------------ looking at runs


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
    from seglab.data.sources.coco import CocoSource
    from seglab.visualization.figures import draw_ground_truth

    path = Path(args.json)
    data_cfg = DataConfig(root=args.root or str(path.parent), train=str(path.resolve()), paint_order=args.paint_order)
    source = CocoSource(data_cfg, "train", CocoSource.resolve_labels(data_cfg))
    samples = ((source.sample_id(i), source.load_image(i), source.load_target(i)) for i in range(len(source)))
    paths = draw_ground_truth(samples, args.out, list(source.labels.classes), source.labels.ignore_index, limit=args.limit)
    print(f"wrote {len(paths)} ground-truth overlays to {args.out}")


def cmd_viz_aug(args) -> None:
    from seglab.data.preview import augmented_samples
    from seglab.visualization.figures import draw_augmented

    cfg = _config(args)
    names, samples = augmented_samples(cfg, args.n, args.seed)
    paths = draw_augmented(samples, args.out, names, cfg.data.ignore_index)
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
    from seglab.core.training import config_problems
    from seglab.errors import DataValidationError

    cfg = _config(args)
    problems = config_problems(cfg)
    if problems:
        raise DataValidationError(problems)
    print(to_yaml(cfg), end="")


# ------------------------------------------------------------------ the parser


def _add_tta_flags(p) -> None:
    p.add_argument("--flips", help="TTA flips, comma-separated: h,v,hv ('none' = no flip); default: the run's tta.flips")
    p.add_argument("--scales", help="TTA scales, comma-separated, e.g. 0.75,1,1.25; default: the run's tta.scales")
    p.add_argument("--no-tta", action="store_true", help="plain prediction, whatever the run's tta section says")


def _add_run_flags(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", default="best", help="best, last, or a .ckpt path")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    _add_tta_flags(p)


def _add_members_flags(p, split: str) -> None:
    p.add_argument("members", nargs="+", help="run folders (RUN, RUN:last, RUN:best, RUN:file.ckpt) or k-fold folders (all their folds)")
    p.add_argument("--weights", help="comma-separated weight per member (a k-fold folder's weight is shared by its folds)")
    p.add_argument("--split", default=split)
    p.add_argument("--data", help="config (or run folder) whose split is read; default the first member's (a k-fold's base config)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    _add_tta_flags(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seglab", description="Config-driven experiment lab: segmentation (multi-class, multi-label) and classification")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run from a config")
    t.add_argument("config", nargs="?", help="YAML config")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides")
    t.add_argument("--out", help="run folder (default runs/<config>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="scores of a trained run on a labelled split (JSON)")
    _add_run_flags(e)
    e.add_argument("--split", default="val")
    e.add_argument("--original-size", action="store_true", help="score at each image's original size (exactly what predict writes)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="write a submission for a split")
    _add_run_flags(pr)
    pr.add_argument("--split", default="test")
    pr.add_argument("--out", required=True, help="a file (CSV formats) or a folder (png)")
    pr.add_argument("--format", help="a writer the run's task has: coco_csv, png, rle; id_label, maskstatus, probs (default: submission.format)")
    pr.set_defaults(func=cmd_predict)

    k = sub.add_parser("kfold", help="k-fold cross-validation: folds, one run per fold, out-of-fold scores")
    k.add_argument("config", nargs="?", help="YAML config (its data.train is split)")
    k.add_argument("overrides", nargs="*", help="key.path=value overrides")
    k.add_argument("--folds", type=int, help="number of folds (default: the config's kfold.folds)")
    k.add_argument("--out", help="k-fold folder: folds.csv, fold_K/ runs, kfold.json")
    k.add_argument("--resume", metavar="OUT", help="continue a stopped k-fold (finished folds are skipped)")
    k.add_argument("--device", help="device for the fold evaluations")
    k.set_defaults(func=cmd_kfold)

    en = sub.add_parser("ensemble", help="average the probabilities of several runs; evaluate or write a submission")
    _add_members_flags(en, "val")
    en.add_argument("--out", help="submission for test; scores JSON for a labelled split")
    en.add_argument("--format", help="submission format (default: the first member's); forces writing predictions")
    en.add_argument("--original-size", action="store_true", help="score at each image's original size")
    en.set_defaults(func=cmd_ensemble)

    ps = sub.add_parser("pseudo", help="pseudo-label a split from confident (ensemble) predictions, for data.extra_train")
    _add_members_flags(ps, "test")
    ps.add_argument("--out", required=True, help="output file (.json for segmentation, .csv for classification) or a folder")
    ps.add_argument("--threshold", type=float, default=0.9, help="confidence a decision needs to be kept")
    ps.add_argument("--min-confident", type=float, default=0.5, help="segmentation: drop images with a smaller share of confident decisions")
    ps.set_defaults(func=cmd_pseudo)

    th = sub.add_parser("tune-thresholds", help="per-class thresholds maximising Dice on a split; saved to RUN/thresholds.json")
    _add_run_flags(th)
    th.add_argument("--split", default="val")
    th.add_argument("--grid", help="comma-separated thresholds (default 0.05,0.10,...,0.95)")
    th.add_argument("--original-size", action="store_true", help="search at each image's original size")
    th.add_argument("--dry-run", action="store_true", help="print, do not save")
    th.set_defaults(func=cmd_tune_thresholds)

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
    v = d.add_parser("validate", help="list every problem a config and its splits have")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--deep", action="store_true", help="decode every image fully (finds truncated or corrupt files; slower)")
    v.set_defaults(func=cmd_data_validate)
    sp = d.add_parser("split", help="k folds of a split (groups kept together, stratified) -> OUT/folds.csv for data.folds/data.fold")
    sp.add_argument("config")
    sp.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. kfold.metadata=meta.xlsx 'kfold.stratify=[sex,age]'")
    sp.add_argument("--folds", type=int, help="number of folds (default: kfold.folds)")
    sp.add_argument("--out", required=True, help="folder for folds.csv")
    sp.add_argument("--split", default="train", help="which configured split is the pool (default train)")
    sp.add_argument("--seed", type=int, help="default: the config's seed")
    sp.set_defaults(func=cmd_data_split)
    rd = d.add_parser("rle-decode", help="turn an image_name,class,rle CSV back into one PNG mask per image x class")
    rd.add_argument("csv")
    rd.add_argument("--out", required=True)
    rd.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"), help="original image size")
    rd.set_defaults(func=cmd_data_rle_decode)

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

    m = sub.add_parser("models", help="list the registered segmentation models, their parts and parameter counts")
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
