"""pytest plugin: a throwaway PostgreSQL cluster for tests.

Register it in ``tests/conftest.py`` with ``pytest_plugins = [..., "harness.postgres"]``.

Fixtures:

``postgres`` (session)
    A PostgreSQL cluster of its own: ``initdb`` into a fresh directory under /tmp (as the ``postgres``
    OS user when running as root: ``initdb`` and ``postgres`` refuse root), listening on
    127.0.0.1:<free port> with its unix socket in that directory, started with ``pg_ctl -w`` and
    stopped with ``pg_ctl -m fast stop`` at the end of the session; the directory is then deleted.
    ``fsync=off`` (a throwaway cluster) but ``synchronous_commit=on``: with it off, a kill -9 of the
    server can lose acknowledged commits.
``pg_dsn``
    A fresh, empty database on that cluster for one test (``postgresql://rb@127.0.0.1:PORT/t_N``),
    dropped (``WITH (FORCE)``) when the test ends.

PostgreSQL's server binaries come from ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql``
package) or ``RUNBOOK_TEST_PG_BIN``. The fixtures skip locally when they are missing and fail when ``CI``
is set.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.procs import free_port, pid_alive, require

__all__ = ["PostgresServer", "pg_bin", "pg_dsn", "postgres", "start_postgres"]

OS_USER = "postgres"
DB_USER = "rb"
_PREFIX = "rb-pg-"
_CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
max_connections = 100
fsync = off                 # throwaway cluster: survives kill -9 of the server (page cache), not an OS crash
full_page_writes = off
synchronous_commit = on     # keep: with it off, kill -9 of the server lost acknowledged commits
log_min_messages = warning
"""
_counter = itertools.count(1)


def pg_bin() -> Path | None:
    """The newest PostgreSQL server ``bin`` directory on this machine (``RUNBOOK_TEST_PG_BIN`` wins)."""
    if os.environ.get("RUNBOOK_TEST_PG_BIN"):
        return Path(os.environ["RUNBOOK_TEST_PG_BIN"])

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)

    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()), key=version)
    return found[-1] if found else None


def _as_owner(*argv: str) -> list[str]:
    """``argv`` run as the cluster owner: the ``postgres`` OS user when we are root."""
    return ["runuser", "-u", OS_USER, "--", *argv] if os.geteuid() == 0 else list(argv)


def _owner_exists() -> bool:
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def _run(argv: list[str], timeout: float = 60) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``dsn()`` connects as the superuser ``rb`` (trust auth)."""

    directory: Path
    bin: Path
    port: int

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.directory / "data"

    def dsn(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` over TCP on 127.0.0.1."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def postmaster_pid(self) -> int:
        """PID of the running postmaster."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def execute(self, statement: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            conn.execute(statement)  # test-only DDL built from safe names

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t_{os.getpid()}_{next(_counter)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting anyone still connected (a killed worker's session, say)."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """``pg_ctl -m fast stop``, then ``immediate`` if that did not finish."""
        for mode in ("fast", "immediate"):
            if not (self.data / "postmaster.pid").exists():
                return
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run(_as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"), timeout=40)


def start_postgres(directory: Path, bin_dir: Path) -> PostgresServer:
    """``initdb`` a cluster in ``directory/data`` and start it with ``pg_ctl -w``."""
    if os.geteuid() == 0:
        shutil.chown(directory, OS_USER)
    directory.chmod(0o700)
    _run(_as_owner(str(bin_dir / "initdb"), "-D", str(directory / "data"), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"))  # fmt: skip
    port = free_port()
    with open(directory / "data" / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(_CONFIG.format(port=port, sockets=directory))
    server = PostgresServer(directory, bin_dir, port)
    _run(_as_owner(str(bin_dir / "pg_ctl"), "-D", str(server.data), "-l", str(directory / "server.log"), "-w", "-t", "30", "start"))
    return server


def cleanup_stale_clusters() -> None:
    """Stop and delete clusters left under /tmp by a test session that died (even by SIGKILL)."""
    for path in Path("/tmp").glob(f"{_PREFIX}*-*"):
        owner = path.name[len(_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or pid_alive(int(owner)):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((path / "data" / "postmaster.pid").read_text().split()[0])
            if str(path) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown of the postmaster and its backends
        shutil.rmtree(path, ignore_errors=True)


def _psycopg_available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole session."""
    bin_dir = pg_bin()
    require(bin_dir is not None and (bin_dir / "initdb").exists(), "PostgreSQL server binaries (apt-get install postgresql)")
    require(_owner_exists(), f"the '{OS_USER}' OS user and runuser (PostgreSQL refuses to run as root)")
    require(_psycopg_available(), "psycopg (pip install 'runbook[postgres]')")
    assert bin_dir is not None
    cleanup_stale_clusters()
    directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir="/tmp"))  # owner PID: see cleanup
    server = None
    try:
        server = start_postgres(directory, bin_dir)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test; its ``postgresql://`` URL."""
    name = postgres.create_database()
    try:
        yield postgres.dsn(name)
    finally:
        postgres.drop_database(name)
