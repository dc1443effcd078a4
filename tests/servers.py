"""Real servers for the tests that need one, started by the tests themselves and stopped after.

PostgreSQL: a throw-away cluster in a temporary folder, reachable only through a unix socket in
that folder (no TCP port, nothing shared with the machine's own server). `initdb` refuses to run
as root, so as root the cluster belongs to the `postgres` system user; the tests connect through
the socket with local "trust" authentication, as role `postgres`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (PATH first, then Debian's versioned folders), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def _as_cluster_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def postgres_server(database: str = "seglab") -> Iterator[str]:
    """Start a private PostgreSQL cluster; yields a SQLAlchemy URL (psycopg2 driver) to `database`."""
    folder = postgres_bin()
    if folder is None:
        raise RuntimeError("initdb/pg_ctl not found")
    home = Path(tempfile.mkdtemp(prefix="seglab-pg-"))
    data = home / "data"
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    run = lambda *argv: subprocess.run(_as_cluster_owner([str(folder / argv[0]), *argv[1:]]),  # noqa: E731
                                       check=True, capture_output=True, text=True, timeout=120)
    try:
        run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-c listen_addresses='' -k {home} -c fsync=off -c max_connections=50"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "-t", "60", "start")
        try:
            run("createdb", "-h", str(home), "-U", "postgres", database)
            yield f"postgresql+psycopg2://postgres@/{database}?host={home}"
        finally:
            subprocess.run(_as_cluster_owner([str(folder / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)
