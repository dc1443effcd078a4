"""Commands that use trained runs: evaluate, predict, ensemble, pseudo, tune-thresholds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from seglab.cli.common import add_members_flags, add_run_flags


def _members(args, specs: list[str]):
    """Loaded members (k-fold folders expanded) with the command line's TTA, and the reference
    (the data config whose split is read, with the command line's `data.*` overrides)."""
    from seglab.errors import ConfigError
    from seglab.inference.ensemble import resolve_members
    from seglab.inference.predict import reference, reference_path
    from seglab.inference.tta import parse_tta

    overrides = list(getattr(args, "overrides", []) or [])
    # `ensemble A B data.root=X`: the members' nargs="+" also took the overrides.
    overrides += [s for s in specs if isinstance(s, str) and "=" in s and not Path(s).exists()]
    specs = [s for s in specs if s not in overrides]
    stray = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("data.")]
    if stray:
        raise ConfigError(f"{stray[0]}: only data.* keys can be overridden here (the run's model and training settings "
                          f"are fixed); e.g. data.root=/other/path data.test=test.json")
    if getattr(args, "data", None) and not Path(args.data).exists():
        raise ConfigError(f"--data {args.data}: not found (give a config file or a run folder)")

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
    data = getattr(args, "data", None) or base
    ref = reference(members, data, overrides)
    args.inputs = {"members": [m.name for m in members], "split": args.split,
                   "data_config": str(reference_path(members, data)), "data_overrides": overrides}
    return members, ref


def _record_inputs(args, out: str) -> None:
    """What a written output was made from (runs, split, data config and overrides), in a
    JSON beside it: OUT.csv -> OUT.inputs.json, folder OUT -> OUT.inputs.json."""
    from seglab.io import write_json

    path = Path(out)
    name = path.name if path.is_dir() or not path.suffix else path.stem
    write_json(path.parent / f"{name}.inputs.json", args.inputs)


def _one_run(args) -> list[tuple[Path, str]]:
    return [(Path(args.run_dir), args.checkpoint)]


def _print_scores(scores: dict, out: str | None = None) -> None:
    from seglab.core.module import finite

    if out:
        from seglab.io import write_json

        write_json(Path(out), finite(scores))
    print(json.dumps(finite(scores), indent=2))


def _write_submission(members, split: str, out: str, fmt: str | None, data, batch_size, palette: bool = False) -> None:
    from seglab.errors import ConfigError
    from seglab.inference.predict import predictions, reference
    from seglab.submission import WRITERS, WriteContext

    run = members[0].run
    ref = reference(members, data)
    fmt = fmt or run.cfg.submission.format
    if fmt not in run.task.writers:
        raise ConfigError(f"--format {fmt}: not a {run.task.name} format (use {', '.join(run.task.writers)})")
    writer = WRITERS.get(fmt, "--format")
    if palette and fmt != "png":
        raise ConfigError(f"--palette colours PNG class maps; add --format png (the format is {fmt})")
    context = WriteContext(list(run.submission_labels.classes), ref.cfg, split, run.task.kind, palette)  # submission.classes, merged
    stream = not_over_inputs(predictions(members, split, ref, batch_size), Path(out), _input_files(members, ref.cfg))
    count = writer(stream, Path(out), context)
    print(f"wrote {count} predictions ({fmt}) to {out}")


def _input_files(members, cfg) -> list[Path]:
    """Files an output must never replace: the split files and every member's run files."""
    from seglab.data import SPLITS

    files = [cfg.data.split_path(s) for s in SPLITS] + [cfg.data.resolve(p) for p in cfg.data.extra_train]
    for m in members:
        files += [m.run.path / "config.yaml", m.run.path / "labels.json"]
    return [f for f in files if f is not None]


def not_over_inputs(stream, out: Path, inputs: list[Path]):
    """The predictions, stopping before `out` would replace an input file (a split file, a
    run's files, or an image the predictions read)."""
    from seglab.paths import refuse_input_as_output

    refuse_input_as_output(out, inputs)
    for p in stream:
        refuse_input_as_output(out, [p.image_path])
        yield p


def cmd_evaluate(args) -> None:
    from seglab.inference.predict import evaluate

    members, data = _members(args, _one_run(args))
    scores, _ = evaluate(members, args.split, data, args.original_size)
    scores["checkpoint"] = args.checkpoint
    scores["data_config"], scores["data_overrides"] = args.inputs["data_config"], args.inputs["data_overrides"]
    _print_scores(scores)


def cmd_predict(args) -> None:
    members, data = _members(args, _one_run(args))
    _write_submission(members, args.split, args.out, args.format, data, None, args.palette)
    _record_inputs(args, args.out)


def cmd_ensemble(args) -> None:
    from seglab.inference.ensemble import describe
    from seglab.inference.predict import evaluate

    members, data = _members(args, args.members)
    print(f"ensemble of {len(members)} member(s):\n{describe(members)}", file=sys.stderr)
    if args.split != "test" and not args.format:
        if args.out:
            from seglab.inference.predict import reference
            from seglab.paths import refuse_input_as_output

            data = reference(members, data)
            refuse_input_as_output(Path(args.out), _input_files(members, data.cfg))
        scores, _ = evaluate(members, args.split, data, args.original_size, args.batch_size)
        scores["data_config"], scores["data_overrides"] = args.inputs["data_config"], args.inputs["data_overrides"]
        _print_scores(scores, args.out)
        return
    if not args.out:
        raise SystemExit("seglab ensemble --split test: give --out (a file, or a folder for png)")
    _write_submission(members, args.split, args.out, args.format, data, args.batch_size, args.palette)
    _record_inputs(args, args.out)


def cmd_pseudo(args) -> None:
    from seglab.inference.pseudo import write_pseudo_labels

    members, data = _members(args, args.members)
    from seglab.inference.predict import reference
    from seglab.paths import refuse_input_as_output

    ref = reference(members, data)
    refuse_input_as_output(Path(args.out), _input_files(members, ref.cfg))
    data = ref
    summary = write_pseudo_labels(members, args.out, args.split, args.threshold, args.min_confident, data, args.batch_size)
    _record_inputs(args, args.out)
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


def cmd_tune_postprocess(args) -> None:
    from seglab.errors import SeglabError
    from seglab.inference.tta import parse_tta
    from seglab.inference.tune_postprocess import DEFAULT_KERNELS, format_record, tune_postprocess

    try:
        kernels = [int(v) for v in args.kernels.split(",")] if args.kernels else DEFAULT_KERNELS
    except ValueError:
        raise SeglabError(f"--kernels {args.kernels!r}: comma-separated kernel sizes in pixels, e.g. 3,5") from None
    tta = None
    if args.no_tta or args.flips is not None or args.scales is not None:
        from seglab.core.run import read_run_files

        tta = parse_tta(args.flips, args.scales, read_run_files(args.run_dir)[0].tta, off=args.no_tta)
    record = tune_postprocess(args.run_dir, args.split, args.checkpoint, args.device, kernels, args.min_gain,
                              args.original_size, save=not args.dry_run, tta=tta)
    print(format_record(record))
    print(f"saved {record['path']}: evaluate and predict use it from now on" if "path" in record else "not saved: --dry-run")


def _add_data_flags(p) -> None:
    p.add_argument("overrides", nargs="*", help="data.key=value overrides of the data config, e.g. data.root=/elsewhere")
    p.add_argument("--data", help="config (or run folder) whose split is read (default: the run's own config)")


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="scores of a trained run on a labelled split (JSON)")
    add_run_flags(e)
    e.add_argument("--split", default="val", help="a labelled split: train, val or test")
    _add_data_flags(e)
    e.add_argument("--original-size", action="store_true", help="score at each image's original size (exactly what predict writes)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="write a submission for a split")
    add_run_flags(pr)
    pr.add_argument("--split", default="test", help="which configured split to predict: train, val or test")
    _add_data_flags(pr)
    pr.add_argument("--out", required=True, help="a file (CSV formats) or a folder (png)")
    pr.add_argument("--format", help="a writer the run's task has: coco_csv, png, rle; id_label, maskstatus, probs (default: submission.format)")
    pr.add_argument("--palette", action="store_true", help="with --format png: colour-palette PNGs (class indices unchanged, "
                                                          "coloured in any viewer) instead of grey index PNGs")
    pr.set_defaults(func=cmd_predict)

    en = sub.add_parser("ensemble", help="average the probabilities of several runs; evaluate or write a submission")
    add_members_flags(en, "val")
    en.add_argument("--out", help="submission for test; scores JSON for a labelled split (default: scores printed only)")
    en.add_argument("--format", help="submission format (default: the first member's); forces writing predictions")
    en.add_argument("--original-size", action="store_true", help="score at each image's original size")
    en.add_argument("--palette", action="store_true", help="with --format png: colour-palette PNGs (class indices unchanged)")
    en.set_defaults(func=cmd_ensemble)

    ps = sub.add_parser("pseudo", help="pseudo-label a split from confident (ensemble) predictions, for data.extra_train")
    add_members_flags(ps, "test")
    ps.add_argument("--out", required=True, help="output file (.json for segmentation, .csv for classification) or a folder")
    ps.add_argument("--threshold", type=float, default=0.9, help="confidence a decision needs to be kept")
    ps.add_argument("--min-confident", type=float, default=0.5, help="segmentation: drop images with a smaller share of confident decisions")
    ps.set_defaults(func=cmd_pseudo)

    th = sub.add_parser("tune-thresholds", help="per-class thresholds maximising Dice on a split; saved to RUN/thresholds.json")
    add_run_flags(th)
    th.add_argument("--split", default="val", help="a labelled split to tune on")
    th.add_argument("--grid", help="comma-separated thresholds (default 0.05,0.10,...,0.95)")
    th.add_argument("--original-size", action="store_true", help="search at each image's original size")
    th.add_argument("--dry-run", action="store_true", help="print, do not save")
    th.set_defaults(func=cmd_tune_thresholds)

    tp = sub.add_parser("tune-postprocess", help="per class, the post-processing steps (opening, closing, fill holes, "
                                                 "largest component) that raise its score on a split; saved to RUN/postprocess.json")
    add_run_flags(tp)
    tp.add_argument("--split", default="val", help="a labelled split to tune on")
    tp.add_argument("--kernels", help="opening/closing kernel sizes to try, in pixels (default 3,5)")
    tp.add_argument("--min-gain", type=float, default=0.0, help="keep a step only when it raises the class's score by more than this")
    tp.add_argument("--original-size", action="store_true", help="tune at each image's original size (the size predict writes at)")
    tp.add_argument("--dry-run", action="store_true", help="print, do not save")
    tp.set_defaults(func=cmd_tune_postprocess)
