"""Commands that look at runs and data: report, runs, viz, models, config."""

from __future__ import annotations

from pathlib import Path

from seglab.cli.common import add_config_args, add_run_flags, load_cli_config


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

    cfg = load_cli_config(args)
    names, samples = augmented_samples(cfg, args.n, args.seed)
    paths = draw_augmented(samples, args.out, names, cfg.data.ignore_index)
    print(f"wrote {len(paths)} augmented samples (augment.train, then augment.batch on them as one batch) to {args.out}")


def cmd_viz_pred(args) -> None:
    from seglab.cli.infer import _members
    from seglab.visualization.predictions import draw_predictions

    members, ref = _members(args, [(Path(args.run_dir), args.checkpoint)])
    out = Path(args.out) if args.out else Path(args.run_dir) / "viz" / f"pred_{args.split}"
    paths = draw_predictions(members, args.split, ref, out, args.limit)
    print(f"wrote {len(paths)} prediction picture(s) of {args.split} to {out}")


def cmd_models(args) -> None:
    from seglab.models import describe_models

    # Each model is built to count its parameters (tens of seconds for all): rows print as they come.
    print(f"{'model':<14} {'params':>12}  parts (parameters)  [{args.classes} classes, smp encoder {args.encoder}]", flush=True)
    for row in describe_models(args.classes, args.encoder):
        if "error" in row:
            print(f"{row['name']:<14} {'-':>12}  {row['error']}", flush=True)
            continue
        parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in row["parts"].items())
        print(f"{row['name']:<14} {row['params'] / 1e6:>11.2f}M  {parts}", flush=True)


def cmd_config(args) -> None:
    from seglab.config import to_yaml
    from seglab.core.training import config_problems
    from seglab.errors import DataValidationError

    cfg = load_cli_config(args)
    problems = config_problems(cfg)
    if problems:
        raise DataValidationError(problems)
    print(to_yaml(cfg), end="")


def register(sub) -> None:
    r = sub.add_parser("report", help="write RUN_DIR/report/index.html (static, opens from disk)")
    r.add_argument("run_dir", help="a run folder (written by seglab train)")
    r.set_defaults(func=cmd_report)

    rs = sub.add_parser("runs", help="list runs under a folder (default runs/), or `runs diff A B`")
    rs.add_argument("dirs", nargs="*", help="[DIR] or diff RUN_A RUN_B")
    rs.set_defaults(func=cmd_runs)

    vz = sub.add_parser("viz", help="visual checks").add_subparsers(dest="viz_command", required=True)
    g = vz.add_parser("gt", help="draw ground-truth overlays of a COCO file (check labels before training)")
    g.add_argument("json", help="a COCO annotation file")
    g.add_argument("--out", required=True, help="folder for the overlays (required)")
    g.add_argument("--root", help="image root (default: the JSON's folder)")
    g.add_argument("--paint-order", default="area_desc", help="which overlapping annotation wins a pixel: area_desc, annotation_order or class_index")
    g.add_argument("--limit", type=int, help="at most this many images (default: all)")
    g.set_defaults(func=cmd_viz_gt)
    a = vz.add_parser("aug", help="save training samples as the model sees them after augment.train and augment.batch")
    add_config_args(a)
    a.add_argument("--out", required=True, help="folder for the pictures (required)")
    a.add_argument("--n", type=int, default=8, help="samples (one batch for augment.batch)")
    a.add_argument("--seed", type=int, default=0, help="augmentation seed: another value shows other draws")
    a.set_defaults(func=cmd_viz_aug)

    vp = vz.add_parser("pred", help="draw a trained run's predictions on a split's images, with the errors where it has labels")
    add_run_flags(vp)
    vp.add_argument("--split", default="val", help="which configured split: train, val or test")
    vp.add_argument("--out", help="folder for the pictures (default: RUN/viz/pred_SPLIT)")
    vp.add_argument("--limit", type=int, default=16, help="at most this many images")
    vp.add_argument("overrides", nargs="*", help="data.key=value overrides of the data config, e.g. data.root=/elsewhere")
    vp.add_argument("--data", help="config (or run folder) whose split is read (default: the run's own config)")
    vp.set_defaults(func=cmd_viz_pred)

    m = sub.add_parser("models", help="list the registered segmentation models, their parts and parameter counts")
    m.add_argument("--classes", type=int, default=12, help="number of output classes of the models built")
    m.add_argument("--encoder", default="resnet34", help="encoder used for the smp architectures")
    m.set_defaults(func=cmd_models)

    c = sub.add_parser("config", help="print a config with defaults filled in (validates it)")
    add_config_args(c)
    c.set_defaults(func=cmd_config)
