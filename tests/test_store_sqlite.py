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


def test_a_version_1_journal_is_upgraded_and_keeps_numbering_its_events(tmp_path: Path) -> None:
    """Version 1 numbered events from ``runs.last_seq``; version 2 from the events table. A journal written by
    version 1 (here: its counter left behind the events, as a version-2 writer leaves it) keeps its runs and
    numbers new events after the existing ones; a journal newer than this code is refused."""
    import sqlite3

    from runner.errors import StoreError
    from runner.store.records import NewEvent, RunState
    from tests.store_contract import ME, alive, new_run

    url = f"sqlite:///{tmp_path}/j.db"
    old = SQLiteStore(url)
    run, _ = old.create_run(new_run())
    lease = old.acquire(run.id, ME, 30, force=False, is_alive=alive)
    old.commit(lease, events=[NewEvent("step.started", step_id="a"), NewEvent("step.finished", step_id="a")])
    old.close()
    with sqlite3.connect(tmp_path / "j.db") as conn:
        conn.execute("UPDATE runs SET last_seq=1")
        conn.execute("PRAGMA user_version=1")
    store = SQLiteStore(url)
    assert store._conn().execute("PRAGMA user_version").fetchone()[0] == 3
    got = store.get_run(run.id)
    assert got.last_seq == 3 and got.state == RunState.QUEUED
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    first, _ = store.commit(lease, events=[NewEvent("step.started", step_id="b")])
    event = store.request(run.id, "pause", actor="someone", reason="stop")
    assert first == 4 and event.seq == 5
    assert [e.seq for e in store.events(run.id)] == [1, 2, 3, 4, 5]
    store.close()
    with sqlite3.connect(tmp_path / "j.db") as conn:
        conn.execute("PRAGMA user_version=4")
    with pytest.raises(StoreError, match="schema version 4"):
        SQLiteStore(url)


def test_a_step_commit_leaves_the_run_row_alone_but_the_run_shows_the_change(tmp_path: Path) -> None:
    import sqlite3
    import time

    from runner.store.records import NewEvent, StepPatch, StepState
    from tests.store_contract import ME, alive, new_run

    store = SQLiteStore(f"sqlite:///{tmp_path}/j.db")
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    with sqlite3.connect(tmp_path / "j.db") as conn:
        before = conn.execute("SELECT updated_at FROM runs").fetchone()
    time.sleep(0.01)
    store.commit(lease, events=[NewEvent("step.started", step_id="a")], steps=[StepPatch("a", 0, StepState.RUNNING, 1)])
    with sqlite3.connect(tmp_path / "j.db") as conn:
        assert conn.execute("SELECT updated_at FROM runs").fetchone() == before  # not rewritten
    got = store.get_run(run.id)
    last = store.events(run.id)[-1]
    assert got.last_seq == last.seq and got.updated_at == last.ts > before[0]
    store.close()


def test_a_journal_from_before_the_snapshot_table_is_upgraded(tmp_path: Path) -> None:
    """Early version-1 journals kept the snapshot and step hashes in ``runs`` (no ``run_specs`` rows)."""
    import sqlite3

    from tests.store_contract import new_run

    url = f"sqlite:///{tmp_path}/j.db"
    store = SQLiteStore(url)
    run, _ = store.create_run(new_run(spec={"name": "rb", "steps": []}))
    store.close()
    with sqlite3.connect(tmp_path / "j.db") as conn:  # rewrite it into the early layout
        conn.execute("ALTER TABLE runs ADD COLUMN step_hashes TEXT NOT NULL DEFAULT '{}'")
        conn.execute("ALTER TABLE runs ADD COLUMN spec TEXT NOT NULL DEFAULT '{}'")
        conn.execute("UPDATE runs SET (step_hashes, spec) = (SELECT step_hashes, spec FROM run_specs WHERE run_id = runs.id)")
        conn.execute("DELETE FROM run_specs")
        conn.execute("PRAGMA user_version=1")
    store = SQLiteStore(url)
    assert store.get_spec(run.id) == {"name": "rb", "steps": []}
    assert store.get_step_hashes(run.id) == {"a": "1", "b": "2"}
    store.close()


# ---------------------------------------------------------------------- the live-work queue and retention (issue 19)


def test_finished_runs_never_enter_the_live_work_index(tmp_path: Path) -> None:
    """Claims read an index holding only live work: history adds nothing to what a claim looks at."""
    import time

    from runbook_sqlite import _queue

    from runner.store.records import RunState
    from tests.store_contract import OTHER, alive, new_run

    store = SQLiteStore(f"sqlite:///{tmp_path}/j.db")
    for i in range(200):
        run, _ = store.create_run(new_run())
        lease = store.acquire(run.id, OTHER, 30, force=False, is_alive=alive)
        store.commit(lease, run={"state": RunState.SUCCEEDED if i % 2 else RunState.FAILED, "finished_at": time.time()})
        store.release(lease)
    live = [store.create_run(new_run())[0].id for _ in range(3)]
    conn = store._conn()
    in_index = conn.execute("SELECT id FROM runs INDEXED BY runs_ready WHERE ready_at IS NOT NULL").fetchall()
    assert sorted(r[0] for r in in_index) == sorted(live)
    for query, args in ((_queue.CLAIM_CANDIDATES, (time.time(), 9)), (_queue.READY_PROBE, (time.time(),))):
        plan = " ".join(str(tuple(r)) for r in conn.execute(f"EXPLAIN QUERY PLAN {query}", args))
        assert "USING INDEX runs_ready" in plan and "TEMP B-TREE" not in plan, plan
    plan = " ".join(str(tuple(r)) for r in conn.execute(f"EXPLAIN QUERY PLAN {_queue.RUNNING_HELD}", (time.time(),)))
    assert "USING INDEX runs_running" in plan, plan
    store.close()


def test_an_older_journal_gets_the_live_work_index_in_place(tmp_path: Path) -> None:
    """A journal written before the index (same user_version) gets the column and indexes when opened."""
    import sqlite3

    from tests.store_contract import ME, alive, new_run

    url = f"sqlite:///{tmp_path}/j.db"
    store = SQLiteStore(url)
    queued = [store.create_run(new_run())[0].id for _ in range(3)]
    store.close()
    with sqlite3.connect(tmp_path / "j.db") as conn:  # back to the earlier layout
        for index in ("runs_ready", "runs_running", "locks_by_run"):
            conn.execute(f"DROP INDEX {index}")
        conn.execute("ALTER TABLE runs DROP COLUMN ready_at")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    store = SQLiteStore(url)
    conn = store._conn()
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"runs_ready", "runs_running", "locks_by_run"} <= names
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version, "the step is additive: the format version is not bumped"
    assert [lease.run_id for lease in store.claim(ME, 30, is_alive=alive, limit=5)] == queued
    store.close()


def test_threads_wait_for_the_writer_in_process_not_in_sqlites_busy_handler(tmp_path: Path) -> None:
    """With SQLite's busy timeout at 0, concurrent writers of one process would fail with "database is locked";
    they queue on the store's in-process lock instead."""
    import threading

    from tests.store_contract import new_run

    class NoBusyWait(SQLiteStore):
        def _conn(self):  # type: ignore[no-untyped-def]
            conn = super()._conn()
            conn.execute("PRAGMA busy_timeout=0")
            return conn

    store = NoBusyWait(f"sqlite:///{tmp_path}/j.db")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(30):
                run, _ = store.create_run(new_run())
                with store.batch():
                    store.begin_delivery(f"d-{run.id}", "test", "sha")
                    store.request(run.id, "pause", actor="t", reason="")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(store.list_runs(limit=1000)) == 240
    store.close()


def _fill(store: SQLiteStore, n: int, *, finished: bool = True) -> list[str]:
    import time

    from runner.store.records import NewEvent, RunState
    from tests.store_contract import OTHER, alive, new_run

    ids = []
    for _ in range(n):
        run, _ = store.create_run(new_run(params={"blob": "x" * 4000}))
        if finished:
            lease = store.acquire(run.id, OTHER, 30, force=False, is_alive=alive)
            store.commit(lease, events=[NewEvent("step.finished", step_id="a", data={"out": "y" * 2000})],
                         run={"state": RunState.SUCCEEDED, "finished_at": time.time()})  # fmt: skip
            store.release(lease)
        ids.append(run.id)
    return ids


def test_prune_gives_the_space_back_on_a_new_journal(tmp_path: Path) -> None:
    import time

    from runner.store.retention import PruneRules

    path = tmp_path / "j.db"
    store = SQLiteStore(f"sqlite:///{path}")
    assert store._conn().execute("PRAGMA auto_vacuum").fetchone()[0] == 2, "new journals are created with incremental vacuum"
    _fill(store, 400)
    live = _fill(store, 5, finished=False)
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = os.path.getsize(path)
    report = store.prune(PruneRules(older_than=60, now=time.time() + 3600))
    assert report.runs == 400 and report.vacuum == "incremental"
    assert os.path.getsize(path) < before / 4, (before, os.path.getsize(path))
    assert report.bytes_after is not None and report.bytes_before is not None and report.bytes_after < report.bytes_before
    assert {r.id for r in store.list_runs(limit=100)} == set(live)
    store.close()


def test_prune_switches_an_older_journal_to_incremental_vacuum_once(tmp_path: Path) -> None:
    import sqlite3
    import time

    from runner.store.retention import PruneRules

    path = tmp_path / "j.db"
    with sqlite3.connect(path) as conn:  # a journal created before incremental vacuum: auto_vacuum=NONE
        conn.execute("CREATE TABLE early (x)")
    store = SQLiteStore(f"sqlite:///{path}")
    assert store._conn().execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    _fill(store, 300)
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = os.path.getsize(path)
    dry = store.prune(PruneRules(older_than=60, now=time.time() + 3600), dry_run=True)
    assert dry.runs == 300 and dry.vacuum == "none" and os.path.getsize(path) == before
    report = store.prune(PruneRules(older_than=60, now=time.time() + 3600))
    assert report.vacuum == "full" and store._conn().execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert os.path.getsize(path) < before / 4
    store.close()


def test_writes_of_another_process_wake_idle_workers(tmp_path: Path) -> None:
    """Two store objects on one journal stand for two processes: a run queued through one wakes a worker waiting
    on the other at once (not at its next poll); a listener that is gone is forgotten by the next sender."""
    import threading

    from harness.procs import wait_for

    from tests.store_contract import new_run

    url = f"sqlite:///{tmp_path}/j.db"
    server, worker = SQLiteStore(url), SQLiteStore(url)
    stale = tmp_path / ".j.db.wake" / "999999-deadbeef"
    woken: list[bool] = []
    seen = worker.work.generation()
    waiter = threading.Thread(target=lambda: woken.append(worker.work.wait(seen, timeout=60)))
    waiter.start()
    wake_dir = tmp_path / ".j.db.wake"
    wait_for(lambda: wake_dir.exists() and any(wake_dir.iterdir()), 30, "the worker to listen (its first wait starts it)")
    stale.touch()
    server.create_run(new_run())
    waiter.join(timeout=60)
    assert woken == [True], "the other process's worker woke"
    assert not stale.exists(), "a marker nobody listens behind is removed"
    worker.close()
    assert list((tmp_path / ".j.db.wake").iterdir()) == [], "a closed store leaves no marker"
    server.close()


def test_a_long_running_process_checkpoints_on_a_thread_of_its_own(tmp_path: Path) -> None:
    """After ``long_running()`` no commit checkpoints (``wal_autocheckpoint=0``); the checkpointer thread copies the
    WAL into the journal instead, so the WAL does not grow without end."""
    import threading

    from harness.procs import wait_for

    from tests.store_contract import new_run

    path = tmp_path / "j.db"
    store = SQLiteStore(f"sqlite:///{path}")
    store.long_running()
    assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    writer = threading.Thread(target=lambda: [store.create_run(new_run(params={"blob": "x" * 20000})) for _ in range(600)])
    writer.start()
    writer.join(timeout=120)
    assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    wait_for(lambda: os.path.getsize(path) > 8 << 20, 60, "the checkpointer to copy the WAL into the journal")
    assert any(t.name == "runbook-sqlite-checkpoint" for t in threading.enumerate())
    store.close()
    assert not any(t.name == "runbook-sqlite-checkpoint" for t in threading.enumerate()), "closing stops it"
