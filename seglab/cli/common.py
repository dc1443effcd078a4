"""What several commands share: a config with overrides (its arguments and loading), and the run / TTA flags."""

from __future__ import annotations


def load_cli_config(args):
    """The command's CONFIG with its overrides; a config seglab wrote (RUN/config.yaml) is read
    in today's keys, as the run itself would be."""
    from seglab.config import load_config
    from seglab.config.loading import saved_config

    return load_config(args.config, args.overrides, saved=saved_config(args.config))


def add_config_args(p, config_help: str = "YAML config", overrides_help: str = "key.path=value overrides",
                    optional: bool = False) -> None:
    """CONFIG [key.path=value ...]: what `load_cli_config` reads (`optional`: a command that
    may resume instead)."""
    p.add_argument("config", nargs="?" if optional else None, help=config_help)
    p.add_argument("overrides", nargs="*", help=overrides_help)


def add_tta_flags(p) -> None:
    p.add_argument("--flips", help="TTA flips, comma-separated: h,v,hv ('none' = no flip); default: the run's tta.flips")
    p.add_argument("--scales", help="TTA scales, comma-separated, e.g. 0.75,1,1.25; default: the run's tta.scales")
    p.add_argument("--no-tta", action="store_true", help="plain prediction, whatever the run's tta section says")


def add_run_flags(p) -> None:
    p.add_argument("run_dir", help="a run folder (written by seglab train)")
    p.add_argument("--checkpoint", default="best", help="best, last, or a .ckpt path")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    add_tta_flags(p)


def add_members_flags(p, split: str) -> None:
    p.add_argument("members", nargs="+", help="run folders (RUN, RUN:last, RUN:best, RUN:file.ckpt) or k-fold folders (all their folds), "
                                               "then data.KEY=VALUE overrides of the data config, e.g. data.root=/elsewhere")
    p.add_argument("--weights", help="comma-separated weight per member (a k-fold folder's weight is shared by its folds; default: equal weights)")
    p.add_argument("--split", default=split, help="which configured split to read: train, val or test")
    p.add_argument("--data", help="config (or run folder) whose split is read; default the first member's (a k-fold's base config)")
    p.set_defaults(overrides=[])  # data.KEY=VALUE among the members: see split_members
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the data config's val_batch_size or batch_size)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    add_tta_flags(p)
