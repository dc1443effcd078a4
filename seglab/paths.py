"""File names that come from data files, and folders of per-image outputs.

A file name read from an annotation file, a CSV or a split list is relative to a known
folder (data.root, the image folder); an absolute name or one climbing out with `..`
is refused by validation and by the readers (`data.allow_outside_root: true` lets the
readers read it, never write next to it). Per-image outputs (png predictions, decoded
RLE masks) go under `--out` by the same confined relative names, into a temporary
sibling folder that replaces `--out` only when complete: a killed run leaves nothing
that looks finished, stale files never mix in, and an input file is never written over.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from seglab.errors import DataError, SeglabError
from seglab.io import umask

OUTPUT_MARKER = ".seglab-output.json"  # names a folder written (whole) by seglab


def outside_problem(name: str) -> str | None:
    """Why the relative file name `name` would leave its folder, or None when it stays inside."""
    if not isinstance(name, str) or not name.strip():
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    posix = PurePosixPath(name.replace("\\", "/"))  # data made on Windows uses backslashes
    if posix.is_absolute() or PureWindowsPath(name).drive:
        return "is an absolute path"
    if ".." in posix.parts:
        return "climbs out of its folder ('..')"
    return None


ESCAPES = ("is an absolute path", "climbs out of its folder ('..')")


def _allowed(folder: Path, name: str, problem: str | None, allow_outside) -> bool:
    """`allow_outside`: True reads anywhere (data.allow_outside_root); a tuple of folders reads
    inside those only (a seglab-written extra set naming images of the config's own splits)."""
    if problem is None:
        return True
    if problem not in ESCAPES or not allow_outside:
        return False
    if allow_outside is True:
        return True
    target = Path(os.path.realpath(Path(folder) / name.replace("\\", "/")))
    return any(target.is_relative_to(os.path.realpath(t)) for t in allow_outside)


def inside(folder: Path, name: str, where: str, allow_outside=False) -> Path:
    """`folder / name`, refusing a name that leaves `folder` unless `allow_outside` allows it."""
    problem = outside_problem(name)
    if not _allowed(folder, name, problem, allow_outside):
        raise DataError(f"{where}: file name {name!r} {problem}; names in data files are read relative to {folder} "
                        "(set data.allow_outside_root=true to read such files anyway)")
    return Path(folder) / name


def outside_root_problem(name, where: str, allow_outside=False, folder: Path = Path(".")) -> str | None:
    """The validation line for a file name leaving its folder, or None."""
    problem = outside_problem(name) if isinstance(name, str) else None
    if _allowed(folder, name, problem, allow_outside):
        return None
    return f"{where}: file name {name!r} {problem} (names are relative to the data folder; data.allow_outside_root=true reads them anyway)"


def split_folders(data_cfg) -> list[str]:
    """The folders the config's own splits live in (a split file's folder, or the split
    folder): where a seglab-written extra set (data.extra_train) may read images from."""
    folders = []
    for split in ("train", "val", "test"):
        path = data_cfg.split_path(split)
        if path is not None:
            path = Path(os.path.normpath(path))
            folders.append(str(path.parent if path.is_file() or (path.suffix and not path.is_dir()) else path))
    return folders


def confined_name(name: str) -> str:
    """A relative output name for a sample id read from outside the root (with
    data.allow_outside_root): its anchor and `..` parts dropped, so it lands inside --out."""
    parts = PurePosixPath(name.replace("\\", "/").replace(":", "_")).parts
    kept = [p for p in parts if p not in ("/", "..", ".", "")]
    return "/".join(kept) or "_"


def same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or (Path(a).exists() and Path(b).exists() and os.path.samefile(a, b))
    except OSError:
        return False


def refuse_input_as_output(out: Path, inputs, what: str = "--out") -> None:
    """Stop before an output file would replace an input (the split file, an image, a config)."""
    for path in inputs:
        if path is not None and same_file(out, path):
            raise SeglabError(f"{what} {out}: is an input file ({path}); choose another output path (nothing was written)")


class OutputFolder:
    """Per-image files written into a temporary sibling of `out`, put in place by `commit()`.

    `out` must be new, empty, or an earlier seglab output folder (it is then replaced
    whole, so no stale file survives); anything else is refused before any work. Each
    file has a confined relative name; two outputs with the same name are an error.
    Use as a context manager: leaving it by an exception removes the temporary folder.
    """

    def __init__(self, out: str | Path, command: str):
        self.out, self.command = Path(out), command
        if self.out.exists() and not self.out.is_dir():
            raise SeglabError(f"{self.out}: exists and is not a folder; choose a folder for --out")
        if self.out.is_dir() and any(self.out.iterdir()) and not (self.out / OUTPUT_MARKER).is_file():
            raise SeglabError(f"{self.out}: folder is not empty and was not written by seglab; "
                              "choose a new or empty --out (nothing was written)")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._remove_partials_of_dead_processes()
            self.tmp = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.partial-{os.getpid()}-"))
            os.chmod(self.tmp, 0o777 & ~umask())
        except OSError as e:
            raise SeglabError(f"{self.out.parent}: cannot write here ({e.strerror})") from None
        self.used: dict[str, str] = {}
        self.count = 0

    def _remove_partials_of_dead_processes(self) -> None:
        """A killed run leaves its hidden `.OUT.partial-PID-*` folder; remove those whose process is gone."""
        from seglab.core.runlock import _alive

        for partial in self.out.parent.glob(f".{self.out.name}.partial-*"):
            pid = partial.name.rsplit(".partial-", 1)[1].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(partial, ignore_errors=True)

    def path(self, relative: str, where: str) -> Path:
        """Where the output named `relative` (POSIX-style, inside `out`) is written now."""
        problem = outside_problem(relative)
        if problem:
            raise DataError(f"{where}: output name {relative!r} {problem}; nothing is written outside {self.out}")
        rel = PurePosixPath(relative.replace("\\", "/")).as_posix()
        if rel in self.used:
            raise DataError(f"{where}: output {rel!r} would also be written for {self.used[rel]!r}; "
                            "two inputs map to one output name (rename one of them)")
        self.used[rel] = where
        target = self.tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def commit(self) -> None:
        from seglab.io import write_json

        write_json(self.tmp / OUTPUT_MARKER, {"written_by": f"seglab {self.command}", "files": len(self.used)})
        old = None
        if self.out.exists():
            old = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.old-"))
            os.replace(self.out, old / "out")
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None:
            self.commit()
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def marker(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None


def require_run_folder(run_dir: str | Path) -> Path:
    """`run_dir` as a Path, or one line saying it is not a run folder (commands that read a
    run check this first, so that a typo creates nothing)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SeglabError(f"{run_dir}: not a run folder (no config.yaml)")
    return run_dir
