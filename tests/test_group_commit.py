"""Group commit (runner/store/groupcommit.py): units of many threads share transactions, and nothing is reported
done before its transaction commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from runbook_sqlite.store import SQLiteStore

from runner.store.groupcommit import GroupCommit
from tests.store_contract import new_run


class FakeStore:
    """Records transactions and savepoints; ``fail_commit`` makes the next outermost batch fail as it ends."""

    def __init__(self) -> None:
        self.depth = 0
        self.log: list[str] = []
        self.fail_commit = False

    @contextmanager
    def batch(self) -> Iterator[None]:
        outer = self.depth == 0
        self.log.append("begin" if outer else "savepoint")
        self.depth += 1
        try:
            yield
        except BaseException:
            self.log.append("rollback" if outer else "rollback to savepoint")
            raise
        finally:
            self.depth -= 1
        if outer and self.fail_commit:
            self.fail_commit = False
            self.log.append("commit failed")
            raise OSError("disk full")
        self.log.append("commit" if outer else "release")


def _run_all(group: GroupCommit, units: list[Callable[[], Any]]) -> list[Any]:
    out: list[Any] = [None] * len(units)

    def one(i: int) -> None:
        try:
            out[i] = group.run(units[i])
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(units))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return out


def _blocked_first(group: GroupCommit, others: int) -> Callable[[], str]:
    """A first unit that holds its group open until ``others`` units are queued behind it."""

    def first() -> str:
        deadline = time.monotonic() + 30
        while len(group._queue) < others and time.monotonic() < deadline:
            time.sleep(0.005)
        return "first"

    return first


def _leading(group: GroupCommit, first: Callable[[], str]) -> threading.Thread:
    """Start ``first`` on a thread of its own and return once it leads a group (the others then queue behind it)."""
    thread = threading.Thread(target=lambda: group.run(first))
    thread.start()
    deadline = time.monotonic() + 30
    while not group._leading and time.monotonic() < deadline:
        time.sleep(0.001)
    assert group._leading
    return thread


def test_a_lone_unit_is_one_transaction_without_a_savepoint() -> None:
    store = FakeStore()
    group = GroupCommit(store)  # type: ignore[arg-type]
    assert group.run(lambda: 42) == 42
    assert store.log == ["begin", "commit"]
    with pytest.raises(KeyError):
        group.run(lambda: {}["missing"])
    assert store.log[2:] == ["begin", "rollback"]
    assert (group.groups, group.units) == (1, 1), "the failed lone unit committed nothing"


def test_units_queued_behind_a_group_share_the_next_transaction_each_in_a_savepoint() -> None:
    store = FakeStore()
    group = GroupCommit(store)  # type: ignore[arg-type]
    first = _blocked_first(group, 5)
    first_thread = _leading(group, first)
    results = _run_all(group, [lambda i=i: i for i in range(5)])
    first_thread.join(timeout=60)
    assert results == [0, 1, 2, 3, 4]
    assert (group.groups, group.units) == (2, 6)
    assert store.log == ["begin", "commit", "begin", *["savepoint", "release"] * 5, "commit"]


def test_a_failing_unit_in_a_group_is_rolled_back_alone() -> None:
    store = FakeStore()
    group = GroupCommit(store)  # type: ignore[arg-type]
    first = _blocked_first(group, 3)
    first_thread = _leading(group, first)

    def bad() -> None:
        raise ValueError("this unit only")

    results = _run_all(group, [lambda: "a", bad, lambda: "c"])
    first_thread.join(timeout=60)
    assert sorted(map(str, results)) == ["a", "c", "this unit only"]
    assert store.log.count("rollback to savepoint") == 1 and store.log[-1] == "commit"


def test_when_the_commit_fails_every_unit_of_the_group_gets_the_error() -> None:
    store = FakeStore()
    group = GroupCommit(store)  # type: ignore[arg-type]
    first = _blocked_first(group, 4)
    first_thread = _leading(group, first)

    def arm_then(value: str) -> Callable[[], str]:
        def unit() -> str:
            store.fail_commit = True  # the group these units are in fails as it commits
            return value

        return unit

    results = _run_all(group, [arm_then(x) for x in "abcd"])
    first_thread.join(timeout=60)
    assert all(isinstance(r, OSError) for r in results), results
    assert group.units == 1, "only the first group committed"


def test_more_units_than_a_group_holds_are_all_written_and_the_lead_passes_on() -> None:
    store = FakeStore()
    group = GroupCommit(store, max_group=3)  # type: ignore[arg-type]
    first = _blocked_first(group, 10)
    first_thread = _leading(group, first)
    results = _run_all(group, [lambda i=i: i for i in range(10)])
    first_thread.join(timeout=60)
    assert results == list(range(10))
    assert group.units == 11 and group.groups == 1 + 4  # 10 queued units in groups of at most 3
    assert group._leading is False and group._queue == []


def test_sqlite_executors_commits_and_deliveries_share_transactions(tmp_path: Path) -> None:
    """On a real journal: concurrent commits form groups (fewer transactions than units) and all of them land."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/journal.db")
    try:
        start = threading.Barrier(16)
        ids: list[str] = []

        def create() -> None:
            start.wait(timeout=60)
            for _ in range(25):
                ids.append(store.grouped(lambda: store.create_run(new_run())[0].id))

        threads = [threading.Thread(target=create) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(ids) == 400 and {r.id for r in store.list_runs(limit=1000)} == set(ids)
        assert store.group.units == 400 and store.group.groups < 400, (store.group.groups, store.group.units)
    finally:
        store.close()


def test_a_thread_that_stops_waiting_with_the_lead_passes_it_on() -> None:
    """A waiting thread interrupted (KeyboardInterrupt in a main thread) after it was given the lead: the next waiting
    thread leads instead, so the queue never stalls; an abandoned unit that no group took never runs."""
    from runner.store.groupcommit import _Unit

    store = FakeStore()
    group = GroupCommit(store)  # type: ignore[arg-type]
    ran: list[str] = []
    gone, waiting, dropped = _Unit(lambda: ran.append("gone")), _Unit(lambda: ran.append("waiting")), _Unit(lambda: ran.append("x"))
    group._leading, group._queue = True, [gone, waiting, dropped]
    group._abandon(dropped)
    gone.lead = True
    group._abandon(gone)
    assert waiting.lead and waiting.done.is_set() and group._queue == [waiting]
    group._lead()  # what the woken thread does
    assert ran == ["waiting"] and group._leading is False and group._queue == []
