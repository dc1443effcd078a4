"""The `seglab` command. Each subcommand parses its arguments and calls one function of
the engine; no command knows which task a run has. A `SeglabError` is printed as one
line (no traceback) with exit code 2.

Each module of this package holds a group of commands and a `register(subparsers)` that
adds their parsers; a new command group is one module and one entry in COMMAND_GROUPS."""

from __future__ import annotations

import argparse
import os
import sys

from seglab.cli import data, infer, look, train, weights

COMMAND_GROUPS = (train, infer, data, look, weights)


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it (options
    whose default is "not given" say what happens then in their own words)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _with_defaults_shown(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_defaults_shown(child)


def build_parser() -> argparse.ArgumentParser:
    from seglab import __version__

    p = argparse.ArgumentParser(prog="seglab", description="Config-driven experiment lab: segmentation (multi-class, multi-label) and classification")
    p.add_argument("--version", action="version", version=f"seglab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    _with_defaults_shown(p)
    return p


def _quiet_broken_pipe() -> None:
    """`seglab runs diff A B | head`: the reader left; stop quietly, as `cat` does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout at exit: let that go nowhere
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    from seglab.console import setup_console
    from seglab.errors import SeglabError

    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    setup_console()
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
        print(f"error: {worker_message(str(e))}", file=sys.stderr)
        return 2
    except SystemExit as e:
        if not isinstance(e.code, str):  # argparse and --help: their own code
            raise
        print(f"error: {e.code.removeprefix('error: ')}", file=sys.stderr)  # a usage message: like any other mistake
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 141  # 128 + SIGPIPE, what a shell reports for a command cut off by its pipe
    except OSError as e:  # the safety net: a file the specific checks did not foresee (read-only, disk full...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:
        message = library_message(e)
        if message is None:
            raise  # a bug in seglab: the traceback is what a report needs
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 141
    return 0


def worker_message(text: str) -> str:
    """A SeglabError raised in a DataLoader worker comes back wrapped in the worker's traceback
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): its own line."""
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.startswith("seglab.errors.") else last


def library_message(error: Exception) -> str | None:
    """One line for the libraries' own exceptions that can reach a user: Lightning's
    configuration errors, and a seglab error wrapped by a DataLoader worker."""
    name = f"{type(error).__module__}.{type(error).__name__}"
    if name.endswith("MisconfigurationException"):
        return f"trainer settings: {str(error).strip().splitlines()[0]} (see trainer.* in the config)"
    if "Original Traceback" in str(error) and "seglab.errors." in str(error):
        return worker_message(str(error))
    return None


if __name__ == "__main__":
    sys.exit(main())
