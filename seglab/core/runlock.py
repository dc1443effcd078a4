"""A run folder belongs to one process at a time.

`train` (and `--resume`) claims the folder by creating `RUN/.seglab.lock` with O_EXCL
(atomic: of two processes starting together, exactly one succeeds); the file names the
holder (pid, host, start time). A second process finds it and stops with one line. A
lock left by a process that no longer runs (killed, machine rebooted) is recognised by
its pid and taken over, and the console says so. A lock from another host cannot be
checked from here: it is reported with the command that removes it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from seglab.errors import SeglabError

log = logging.getLogger("seglab")

LOCK_NAME = ".seglab.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def helper_process() -> bool:
    """A DDP worker (rank > 0) runs inside the folder its rank-0 process claimed."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


class RunLock:
    def __init__(self, run_dir: str | Path, command: str = "train"):
        self.run_dir, self.command = Path(run_dir), command
        self.path = self.run_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> "RunLock":
        if helper_process():
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            return self  # nothing can be written there: the preflight lists why, with the other problems
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError:
                return self  # a read-only folder: no run can be written there either; the preflight says so
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": self.command}
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            self.held, self.mine = True, me
            return self
        raise SeglabError(f"{self.run_dir}: could not claim the run folder ({self.path} keeps reappearing); is another seglab starting here?")

    def _take_over_if_stale(self) -> None:
        holder = _read(self.path)
        if holder is None:
            # Being written this very moment (O_EXCL succeeded, content not yet there), or not ours to judge.
            time.sleep(0.2)
            holder = _read(self.path)
            if holder is None:
                raise SeglabError(f"{self.run_dir}: locked by {self.path}, which names no process; "
                                  f"if no seglab runs here, delete it (rm {self.path})")
        here = holder.get("host") == socket.gethostname()
        if not here:
            raise SeglabError(f"{self.run_dir}: in use by process {holder['pid']} on host {holder.get('host')} "
                              f"(since {holder.get('started')}); if that run is over, delete {self.path}")
        if _alive(holder["pid"]):
            raise SeglabError(f"{self.run_dir}: in use by seglab {holder.get('command', '')} (process {holder['pid']}, "
                              f"since {holder.get('started')}); wait for it to finish or choose another --out")
        # Stale: move it aside atomically; only the process whose rename took the stale file goes on.
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process took it over first; the next attempt sees its lock
        if _read(aside) != holder:  # we moved a fresh lock another process had just made: put it back
            os.rename(aside, self.path)
            return
        os.unlink(aside)
        log.warning("%s: taking over the lock of process %s (started %s), which is no longer running",
                    self.run_dir, holder["pid"], holder.get("started"))

    def release(self) -> None:
        if self.held and _read(self.path) == self.mine:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
