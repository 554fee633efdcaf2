"""The SQLite store passes the store contract, and keeps its file private and its writes durable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_sqlite.store import SQLiteStore
from runner.errors import ConfigError
from runner.store.base import Store
from tests.store_contract import *  # noqa: F403


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/journal.db")
    yield s
    s.close()


def test_file_is_private_and_wal(tmp_path: Path) -> None:
    s = SQLiteStore(f"sqlite:///{tmp_path}/sub/dir/j.db")
    path = tmp_path / "sub" / "dir" / "j.db"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert s._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


@pytest.mark.parametrize("url", ["sqlite://host/x.db", "sqlite:///", "sqlite:///x.db?synchronous=sometimes"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLiteStore(url)


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    SQLiteStore("sqlite:///rel.db").close()
    assert (tmp_path / "rel.db").exists()
    SQLiteStore(f"sqlite:///{tmp_path}/abs.db?synchronous=full").close()
    assert (tmp_path / "abs.db").exists()


def test_acknowledged_commits_survive_kill_9_of_the_writer(tmp_path: Path) -> None:
    """A writer process commits rows and reports each; it is killed; every reported row is there."""
    url = f"sqlite:///{tmp_path}/j.db"
    script = f"""
import sys
from runbook_sqlite.store import SQLiteStore
from tests.store_contract import new_run
s = SQLiteStore({url!r})
for i in range(100000):
    run, _ = s.create_run(new_run())
    print(run.id, flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) == 300:
            proc.kill()
            break
    proc.communicate()
    s = SQLiteStore(url)
    stored = {r.id for r in s.list_runs(limit=1000000)}
    s.close()
    assert set(acked) <= stored


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    """The engine uses a new heartbeat thread per drive: a long-running worker must not accumulate connections."""
    import threading

    s = SQLiteStore(f"sqlite:///{tmp_path}/j.db")
    s.create_run(new_run())  # noqa: F405

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def use() -> None:
        s.list_runs()

    for _ in range(5):  # warm-up: the main thread's connection, the WAL and shm files
        t = threading.Thread(target=use)
        t.start()
        t.join()
    before = fds()
    for _ in range(100):
        t = threading.Thread(target=use)
        t.start()
        t.join()
    assert fds() - before < 5, "each finished thread's connection must be closed"
    s.close()
