"""`seglab data ...`: dataset tools."""

from __future__ import annotations

import json
from pathlib import Path

from seglab.cli.common import add_config_args, load_cli_config


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

    report = inspect_coco(args.json, args.root, args.paint_order, corrections=args.corrections)
    print(json.dumps(report, indent=2) if args.json_output else format_inspection(report))


def cmd_data_validate(args) -> None:
    from seglab.core.training import config_problems
    from seglab.data import collect_problems
    from seglab.data.summary import label_map_lines, not_a_config_hint, split_counts, void_lines

    not_a_config_hint(args.config)
    cfg = load_cli_config(args)
    labels, problems = collect_problems(cfg, deep=args.deep)
    problems = config_problems(cfg) + problems
    for p in problems:
        print(p)
    if cfg.data.corrections:
        from seglab.data import corrections_summary
        from seglab.errors import SeglabError

        try:
            applied = corrections_summary(cfg, labels)[0]
            print(f"corrections applied ({cfg.data.corrections}): " + (", ".join(f"{k} {n}" for k, n in applied.items()) or "none"))
        except SeglabError:
            pass  # already listed among the problems
    if labels is not None:
        for line in label_map_lines(labels) + [split_counts(cfg, labels)] + void_lines(cfg, labels):
            print(line)
    print(f"{len(problems)} problem(s); classes: {', '.join(labels.classes) if labels else 'unresolved'}")
    if problems:
        raise SystemExit(1)


def cmd_data_split(args) -> None:
    from seglab.data import resolve_labels
    from seglab.data.sources import SOURCES
    from seglab.data.splits import assign_folds
    from seglab.task import get_task

    cfg = load_cli_config(args)
    labels = resolve_labels(cfg)
    pool = SOURCES.get(cfg.data.format, "data.format")(cfg.data, args.split, labels)
    folds = assign_folds(pool, labels, get_task(cfg.task), cfg, args.folds, args.seed)
    path = folds.write(Path(args.out) / "folds.csv")
    print(f"{len(folds.ids)} samples, {len(set(folds.groups))} groups -> {folds.k} folds, {folds.strategy} ({path})")
    for k, fold in enumerate(folds.summary()):
        strata = f"  strata {fold['strata']}" if "strata" in fold else ""
        print(f"fold {k}: {fold['images']} samples, {fold['groups']} groups{strata}")
    print(f"validate on fold 0: data.folds={path.resolve()} data.fold=0")


def cmd_data_corrections_template(args) -> None:
    from seglab.core.run import load_run
    from seglab.inference.ensemble import is_kfold_dir, kfold_runs
    from seglab.inference.suspects import find_suspects, write_template

    path = Path(args.run)
    kfold = is_kfold_dir(path)
    suspects = []
    for run_dir in kfold_runs(path) if kfold else [path]:  # k-fold: each fold on its held-out images (out of fold)
        run = load_run(run_dir, args.checkpoint, args.device)
        suspects += find_suspects(run, "val" if kfold else args.split, args.top, not args.no_panels)
    suspects = sorted(suspects, key=lambda s: -s.loss)[: args.top]
    out = Path(args.out) if args.out else path / "corrections_template.yaml"
    panels = None if args.no_panels else out.parent / f"{out.stem}_panels"
    what = f"{path} ({'out-of-fold' if kfold else args.split} predictions, checkpoint {args.checkpoint})"
    write_template(suspects, out, what, panels)
    records = sum(len(s.records) for s in suspects)
    print(f"{len(suspects)} images, {records} candidate record(s), all commented out -> {out}"
          + (f" (panels in {panels})" if panels and suspects else ""))


def cmd_data_rle_decode(args) -> None:
    from seglab.submission.rle import decode_to_pngs

    count = decode_to_pngs(args.csv, args.out, tuple(args.size))
    print(f"wrote {count} masks (one PNG per image x class) under {args.out}")


def cmd_data_cache(args) -> None:
    from seglab.data.cache_build import build_caches

    cfg = load_cli_config(args)
    if args.workers is not None and args.workers < 1:
        from seglab.errors import SeglabError

        raise SeglabError(f"--workers {args.workers}: use 1 or more processes")
    summary = build_caches(cfg, args.workers)
    splits = ", ".join(f"{split} {n}" for split, n in summary["samples"].items())
    where = cfg.data.cache_dir or "the default cache folder (~/.cache/seglab or $SEGLAB_CACHE)"
    new = summary["new_files"]
    print(f"cached {sum(summary['samples'].values())} samples ({splits}) in {summary['seconds']:.1f} s "
          f"with {summary['workers']} worker(s) under {where}: {new} new cache file{'s' * (new != 1)}")
    if new == 0:
        print("nothing new to cache: every entry was there already, or this config reads nothing that is "
              "cached (full-size multi-label polygon masks are rasterised at load; data.image_size with "
              "data.cache_images caches resized images and masks)")


def register(sub) -> None:
    d = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    s = d.add_parser("synth", help="write a built-in example dataset: COCO (competition A), polygons (B) or mask status (C)")
    s.add_argument("--out", required=True, help="folder to write the data set into (required)")
    s.add_argument("--format", choices=("coco", "polygons", "maskstatus"), default="coco",
                   help="polygons: hand-bone layout, --n-* count people; maskstatus: --n-train/--n-test count persons")
    s.add_argument("--n-train", type=int, help="default 48 images (coco) / 24 people (polygons) / 60 persons (maskstatus)")
    s.add_argument("--n-val", type=int, help="default 16 images / 8 people (maskstatus: validation is a fold of persons)")
    s.add_argument("--n-test", type=int, help="default 8 images / 4 people / 24 persons")
    s.add_argument("--size", type=int, help="image side in pixels (default 128; 64 for maskstatus)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the drawn shapes")
    s.set_defaults(func=cmd_data_synth)
    i = d.add_parser("inspect", help="class counts, pixel shares, overlaps, sizes and problems of a COCO file")
    i.add_argument("json", help="a COCO annotation file")
    i.add_argument("--root", help="image root (default: the JSON's folder)")
    i.add_argument("--paint-order", default="area_desc", help="which overlapping annotation wins a pixel: area_desc, annotation_order or class_index")
    i.add_argument("--corrections", help="a corrections file (data.corrections) applied before counting; its records are counted per kind (default: none)")
    i.add_argument("--json", dest="json_output", action="store_true", help="print the report as JSON")
    i.set_defaults(func=cmd_data_inspect)
    v = d.add_parser("validate", help="list every problem a config and its splits have")
    add_config_args(v, "YAML config (a COCO JSON file? use `seglab data inspect FILE`)")
    v.add_argument("--deep", action="store_true", help="decode every image and label map fully (truncated or corrupt files, label values outside the class map; slower)")
    v.set_defaults(func=cmd_data_validate)
    sp = d.add_parser("split", help="k folds of a split (groups kept together, stratified) -> OUT/folds.csv for data.folds/data.fold")
    add_config_args(sp, overrides_help="key.path=value overrides, e.g. kfold.metadata=meta.xlsx 'kfold.stratify=[sex,age]'")
    sp.add_argument("--folds", type=int, help="number of folds (default: kfold.folds)")
    sp.add_argument("--out", required=True, help="folder for folds.csv")
    sp.add_argument("--split", default="train", help="which configured split is the pool (default train)")
    sp.add_argument("--seed", type=int, help="default: the config's seed")
    sp.set_defaults(func=cmd_data_split)
    c = d.add_parser("cache", help="fill the mask (and, with data.image_size, resized image) caches of every split up front, on every core")
    add_config_args(c, overrides_help="key.path=value overrides (the caches are those a run with them reads)")
    c.add_argument("--workers", type=int, help="processes (default: every core)")
    c.set_defaults(func=cmd_data_cache)
    ct = d.add_parser("corrections-template", help="candidate label mistakes of a trained run (highest loss), as a commented-out corrections file with panels")
    ct.add_argument("run", help="a run folder, or a k-fold folder (each fold judged on its held-out images)")
    ct.add_argument("--split", default="val", help="labelled split to judge (default val; k-fold: each fold's val)")
    ct.add_argument("--top", type=int, default=20, help="how many images (default 20)")
    ct.add_argument("--checkpoint", default="best", help="best, last or a .ckpt path (default best)")
    ct.add_argument("--out", help="the template file (default RUN/corrections_template.yaml)")
    ct.add_argument("--no-panels", action="store_true", help="skip the picture of each image")
    ct.add_argument("--device", help="e.g. cpu or cuda:0 (default: cuda when available)")
    ct.set_defaults(func=cmd_data_corrections_template)
    rd = d.add_parser("rle-decode", help="turn an image_name,class,rle CSV back into one PNG mask per image x class")
    rd.add_argument("csv", help="image_name,class,rle CSV")
    rd.add_argument("--out", required=True, help="folder for the PNG masks (required)")
    rd.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("H", "W"), help="original image size")
    rd.set_defaults(func=cmd_data_rle_decode)
