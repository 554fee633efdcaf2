"""The two journal stores for ``store_bench.py``: a fresh journal of each kind, and a throwaway PostgreSQL cluster.

A SQLite journal is a new file; a PostgreSQL journal is a new schema (``?schema=bench_N``) created before the
measured part, so that no sample pays for creating tables (SQLite's file is created inside the measured time:
a few hundred microseconds, the same at every N, so the per-step slope does not see it).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

__all__ = ["Cluster", "fresh_store", "pg_cluster", "quiet_moment", "tree_cpu_seconds"]

_counter = itertools.count(1)


@dataclass
class Cluster:
    """Where the PostgreSQL journals go: a base URL, and the postmaster's pid when the benchmark started it."""

    url: str
    postmaster: int | None
    description: str


@contextmanager
def pg_cluster(url: str | None):  # type: ignore[no-untyped-def]
    """``url`` as given, or a throwaway cluster started with the test harness (``initdb`` as the ``postgres`` user)."""
    if url:
        yield Cluster(url, None, f"external {url.split('@')[-1]}")
        return
    sys.path.insert(0, str(REPO / "tests"))
    from harness.postgres import pg_bin, start_postgres

    bin_dir = pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binaries (apt-get install postgresql), and no --pg URL given")
    directory = Path(tempfile.mkdtemp(prefix="rb-bench-pg-", dir="/tmp"))
    server = start_postgres(directory, bin_dir)
    try:
        version = (bin_dir.parent.name, "fsync=off, synchronous_commit=on, 127.0.0.1 TCP")
        yield Cluster(server.dsn(), server.postmaster_pid(), f"PostgreSQL {version[0]} throwaway cluster ({version[1]})")
    finally:
        server.stop()
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def fresh_store(kind: str, workdir: Path, cluster: Cluster | None) -> str:
    """The URL of a new, empty journal of ``kind`` (``sqlite`` or ``postgresql``), its tables created."""
    if kind == "sqlite":
        return f"sqlite:///{workdir}/journal.db"
    assert cluster is not None
    sep = "&" if "?" in cluster.url else "?"
    url = f"{cluster.url}{sep}schema=bench_{os.getpid()}_{next(_counter)}"
    from runbook_postgres.store import PostgresStore

    PostgresStore(url).close()  # create the tables outside the measured time
    return url


def drop_store(kind: str, url: str) -> None:
    """Drop a PostgreSQL journal's schema (a SQLite journal goes with its directory)."""
    if kind != "postgresql":
        return
    import psycopg
    from psycopg import sql

    base, _, query = url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds used so far by ``pid`` and its children (live ones, and reaped ones through ``cutime``)."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p: int) -> list[str] | None:
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as f:
                return f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None

    total = 0.0
    own = stat(pid)
    if own is not None:
        total += sum(int(v) for v in own[11:15]) / tick  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat(int(entry))) is not None and fields[1] == str(pid):
            total += sum(int(v) for v in fields[11:13]) / tick
    return total


def describe(kind: str, cluster: Cluster | None) -> dict[str, Any]:
    """What a store kind is, for the report."""
    if kind == "sqlite":
        import sqlite3

        return {"store": "sqlite", "what": f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL (the default journal)"}
    return {"store": "postgresql", "what": cluster.description if cluster else "?"}


def quiet_moment(*, busy: float = 0.25, window: float = 0.5, timeout: float = 30.0) -> bool:
    """Wait until the machine was nearly idle for ``window`` seconds (all CPUs together busy less than ``busy`` of
    one CPU, this process's own work included), at most ``timeout`` seconds; True if it was.

    A sample that starts in such a moment is less likely to share the CPUs with other work, which the PostgreSQL
    server's figures cannot otherwise be checked for (its backends exit with the client, their waiting unread).
    """
    import time

    from _measure import busy_seconds

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = busy_seconds()
        if before is None:
            return True
        time.sleep(window)
        after = busy_seconds()
        if after is not None and (after - before) / window < busy:
            return True
    return False
