"""A throwaway PostgreSQL server for tests and benchmarks of workers sharing a study.

The server is Debian's ``postgresql`` package (scripts/bootstrap.sh installs it), run
in a temporary folder on a Unix socket only, so nothing outside the machine can reach
it and nothing of it outlives the ``with`` block.

Example:
    >>> with postgres_server() as url:
    ...     autoprune.search(..., storage=url)
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PostgresMissing(RuntimeError):
    """Debian's postgresql package is not installed."""


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresMissing("PostgreSQL is not installed: run scripts/bootstrap.sh (installs Debian's postgresql)")
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def postgres_server(max_connections: int = 100) -> Iterator[str]:
    """Start a server with one database, ``autoprune``, and yield its SQLAlchemy URL."""
    bindir = _bin()
    root = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
    (root / "sock").mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "sock", "postgres")
    port = 55432 + os.getpid() % 1000
    try:
        subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U",
                                     "postgres"]), check=True, capture_output=True)
        opts = f"-k {root / 'sock'} -c listen_addresses='' -p {port} -c max_connections={max_connections}"
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-o", opts, "-w",
                                     "-l", str(root / "log"), "start"]), check=True, capture_output=True)
        subprocess.run(_as_postgres([str(bindir / "createdb"), "-h", str(root / "sock"), "-p", str(port),
                                     "-U", "postgres", "autoprune"]), check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@/autoprune?host={root / 'sock'}&port={port}"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
