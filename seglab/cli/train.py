"""`seglab train` and `seglab kfold`."""

from __future__ import annotations

import time
from pathlib import Path

from seglab.cli.common import add_config_args, load_cli_config


def cmd_train(args) -> None:
    from seglab.core.resuming import resume_config
    from seglab.core.training import train

    resumed = None
    if args.resume:
        run_dir = Path(args.resume)
        if args.config and args.config != str(run_dir):
            args.overrides = [args.config] + args.overrides  # `train --resume RUN key=value`
        cfg, done = resume_config(run_dir, args.overrides)
        resumed = {"overrides": args.overrides, "from_epoch": done}
    else:
        if not args.config:
            raise SystemExit("seglab train: give a CONFIG (or --resume RUN_DIR)")
        cfg = load_cli_config(args)
        run_dir = Path(args.out or Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    started = time.time()
    best = train(cfg, run_dir, resume=bool(args.resume), resumed=resumed)
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
        summary = run_kfold(load_cli_config(args), args.out, device=args.device)
        out = Path(args.out)
    print("\n" + format_kfold(summary))
    print(f"\nk-fold folder: {out}  (summary {out / 'kfold.json'}; ensemble of its folds: seglab ensemble {out})")


def register(sub) -> None:
    t = sub.add_parser("train", help="train one run from a config")
    add_config_args(t, optional=True)
    t.add_argument("--out", help="run folder (default runs/<config>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint; overrides after it are recorded in RUN_DIR/config.yaml (default: a new run)")
    t.set_defaults(func=cmd_train)

    k = sub.add_parser("kfold", help="k-fold cross-validation: folds, one run per fold, out-of-fold scores")
    add_config_args(k, "YAML config (its data.train is split)", optional=True)
    k.add_argument("--folds", type=int, help="number of folds (default: the config's kfold.folds)")
    k.add_argument("--out", help="k-fold folder: folds.csv, fold_K/ runs, kfold.json (required unless --resume; no default)")
    k.add_argument("--resume", metavar="OUT", help="continue a stopped k-fold (finished folds are skipped; default: a new k-fold)")
    k.add_argument("--device", help="device for the fold evaluations (default: cuda when available)")
    k.set_defaults(func=cmd_kfold)
