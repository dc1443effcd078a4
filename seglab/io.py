"""Files in and out: atomic output (write to a temporary file beside the target, then
rename), and reading JSON and YAML that names its problems.

A crash, a kill or a full disk never leaves a half-written checkpoint, metrics file
or submission in place of a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import yaml

from seglab.errors import DataError, SeglabError


def _why_not_writable(folder: Path, error: OSError) -> str:
    """The OS reason, or the clearer one when a file stands where a folder should be."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            return f"{parent} is a file, not a folder" if not parent.is_dir() else error.strerror or str(error)
    return error.strerror or str(error)


def umask() -> int:
    """The process's umask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(fd: int) -> None:
    """Give a file made by `mkstemp` (always 0600) the mode `open()` would have: 0666 less the umask,
    so configs, metrics, checkpoints and submissions are as readable as any file the user makes."""
    os.fchmod(fd, 0o666 & ~umask())


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        new_file_mode(fd)
    except OSError as e:
        raise SeglabError(f"{path}: cannot write here ({_why_not_writable(path.parent, e)})") from None
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise SeglabError(f"{path}: write failed ({e.strerror}); the previous file, if any, is untouched") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def append_jsonl(path: str | Path, obj) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, allow_nan=False, default=_json_default) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a killed process
    return rows


def check_writable(folder: str | Path) -> None:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise SeglabError(f"{folder}: output folder is not writable ({_why_not_writable(folder, e)})") from None


def read_json(path: str | Path, what: str = "file") -> tuple[object, bytes]:
    """A JSON document and its raw bytes (for cache keys); every way the file can be
    broken is a DataError naming it (with line and column for syntax errors)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    data = path.read_bytes()
    try:
        return json.loads(data), data
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a {what}") from None
    except ValueError as e:  # e.g. an integer of thousands of digits (Python's int parsing limit)
        raise DataError(f"{path}: not a usable JSON {what} ({str(e).split(';')[0][:100]})") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML would keep the
    last silently): configs and corrections files."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)
