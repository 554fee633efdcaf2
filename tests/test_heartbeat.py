"""Heartbeats: one long-lived thread renews every lease of the process; requests and a lost lease are reported."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.procs import wait_for
from runbook_sqlite.store import SQLiteStore

from runner.engine.runtime import Heartbeat
from runner.store.records import Flags, Lease
from tests.store_contract import ME, OTHER, alive, new_run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/journal.db")
    yield s
    s.close()


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "runbook-heartbeats")


def test_one_thread_renews_every_lease_of_the_process(store: SQLiteStore) -> None:
    leases = [store.acquire(store.create_run(new_run())[0].id, ME, 30, force=False, is_alive=alive) for _ in range(8)]
    first = {lease.run_id: store.get_run(lease.run_id).lease_expires_at or 0 for lease in leases}
    beats = [Heartbeat(store, lease, lambda _f: None, lambda: None, interval=0.02) for lease in leases]
    for beat in beats:
        beat.__enter__()
    try:
        wait_for(lambda: all((store.get_run(r).lease_expires_at or 0) > t for r, t in first.items()), 30, "every lease to be renewed")
        assert _threads() == 1, "one heartbeat thread however many runs are held"
    finally:
        for beat in beats:
            beat.__exit__(None, None, None)
    with Heartbeat(store, leases[0], lambda _f: None, lambda: None, interval=0.02):
        assert _threads() == 1, "the thread is reused, not started per drive"


def test_requests_and_a_lost_lease_are_reported(store: SQLiteStore) -> None:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    flags: list[Flags] = []
    lost = threading.Event()
    with Heartbeat(store, lease, flags.append, lost.set, interval=0.02):
        store.request(run.id, "pause", actor="t", reason="")
        wait_for(lambda: bool(flags), 30, "the pause request to be reported")
        assert flags[0].pause_requested
        store.acquire(run.id, OTHER, 30, force=True, is_alive=alive)
        assert lost.wait(30), "a lease taken over is reported lost"


def test_leaving_waits_for_a_renewal_in_progress(store: SQLiteStore) -> None:
    """After ``__exit__`` returns, no callback of that heartbeat runs (the drive has released its lease by then)."""
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    renewing, proceed = threading.Event(), threading.Event()

    class Slow(SQLiteStore):
        def renew(self, lease: Lease) -> Flags:
            renewing.set()
            proceed.wait(30)
            return Flags(pause_requested=True)

    slow = Slow(store.url)
    reported: list[Flags] = []
    beat = Heartbeat(slow, lease, reported.append, lambda: None, interval=0.01)
    beat.__enter__()
    assert renewing.wait(30)
    leaving = threading.Thread(target=beat.__exit__, args=(None, None, None))
    leaving.start()
    leaving.join(timeout=0.3)
    assert leaving.is_alive(), "exit waits while this lease's renewal runs"
    proceed.set()
    leaving.join(timeout=30)
    assert not leaving.is_alive() and reported == [Flags(pause_requested=True)]
    slow.close()
