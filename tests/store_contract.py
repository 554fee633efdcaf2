"""The contract every journal store must pass.

A store's test module imports these tests and provides a ``store`` fixture yielding a fresh, empty
store (``tests/test_store_sqlite.py`` does it for SQLite)::

    from tests.store_contract import *  # noqa: F403

    @pytest.fixture
    def store(tmp_path): ...
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from runner.engine.runtime import new_run_id
from runner.errors import LeaseHeld, LeaseLost, LockHeld, RunNotFound
from runner.store.base import Store
from runner.store.progress import ChildLink, Gate, GateStatus, Phase, Recovery, RollbackProgress, StepProgress, TargetRecord, WaitKind
from runner.store.records import Holder, NewEvent, NewRun, RunState, StepPatch, StepState

ME = Holder(host="host-a", boot_id="boot-1", pid=100, start_time=5, kind="test")
OTHER = Holder(host="host-b", boot_id="boot-2", pid=200, start_time=7, kind="test")


def alive(_: Holder) -> bool | None:
    return None  # remote: cannot tell


def dead(_: Holder) -> bool | None:
    return False


def new_run(**kw: Any) -> NewRun:
    defaults: dict[str, Any] = dict(
        id=new_run_id(), runbook="rb", params={"x": 1}, started_by="tester", content_hash="h", step_hashes={"a": "1", "b": "2"},
        spec={"name": "rb"}, file="rb.yaml", step_ids=["a", "b"],
    )  # fmt: skip
    defaults.update(kw)
    return NewRun(**defaults)


def test_create_and_read(store: Store) -> None:
    run, created = store.create_run(new_run(trigger={"source": "test"}))
    assert created and run.state == RunState.QUEUED and run.params == {"x": 1} and run.trigger == {"source": "test"}
    assert store.get_run(run.id) == run
    assert [s.step_id for s in store.get_steps(run.id)] == ["a", "b"]
    assert all(s.state == StepState.PENDING for s in store.get_steps(run.id))
    events = store.events(run.id)
    assert [e.type for e in events] == ["run.created"] and events[0].seq == 1 and events[0].actor == "tester"
    assert store.find_run_ids(run.id[:8]) == [run.id]
    with pytest.raises(RunNotFound):
        store.get_run("01NOPE")


def test_the_runbook_snapshot_is_kept_apart_from_the_run(store: Store) -> None:
    spec = {"name": "rb", "steps": [{"id": "a", "action": {"type": "shell", "config": {"command": ["true"]}}}]}
    run, _ = store.create_run(new_run(spec=spec))
    assert store.get_spec(run.id) == spec
    assert "spec" not in run.model_dump() and run.step_hashes == {"a": "1", "b": "2"}
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    edited = {**spec, "steps": [*spec["steps"], {"id": "b", "action": {"type": "shell", "config": {"command": ["false"]}}}]}
    store.commit(lease, run={"spec": edited, "step_hashes": {"a": "1", "b": "3"}})
    assert store.get_spec(run.id) == edited and store.get_run(run.id).step_hashes == {"a": "1", "b": "3"}
    with pytest.raises(RunNotFound):
        store.get_spec("01NOPE")


def test_idempotency_key_returns_the_existing_run(store: Store) -> None:
    first, created = store.create_run(new_run(idempotency_key="k1"))
    again, created_again = store.create_run(new_run(idempotency_key="k1"))
    assert created and not created_again and again.id == first.id
    assert len(store.list_runs()) == 1


def test_lock_keys(store: Store) -> None:
    a, _ = store.create_run(new_run(lock_key="host:a"))
    with pytest.raises(LockHeld) as info:
        store.create_run(new_run(lock_key="host:a"))
    assert info.value.run_id == a.id
    store.create_run(new_run(lock_key="host:b"))
    lease = store.acquire(a.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.SUCCEEDED, "finished_at": time.time()})
    store.create_run(new_run(lock_key="host:a"))  # released by the terminal state


def test_leases_and_fencing(store: Store) -> None:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    assert lease.fence == 1 and lease.took_over is None
    assert store.get_run(run.id).holder == ME
    with pytest.raises(LeaseHeld):
        store.acquire(run.id, OTHER, 30, force=False, is_alive=alive)
    taken = store.acquire(run.id, OTHER, 30, force=True, is_alive=alive)
    assert taken.fence == 2 and "forced" in (taken.took_over or "")
    with pytest.raises(LeaseLost):
        store.commit(lease, events=[NewEvent("late")])
    with pytest.raises(LeaseLost):
        store.renew(lease)
    assert "late" not in [e.type for e in store.events(run.id)], "a fenced-off write leaves no trace"
    store.release(taken)
    assert store.get_run(run.id).holder is None
    again = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    assert again.took_over is None and again.fence == 3


def test_dead_or_expired_holders_are_taken_over(store: Store) -> None:
    run, _ = store.create_run(new_run())
    store.acquire(run.id, OTHER, 30, force=False, is_alive=alive)
    taken = store.acquire(run.id, ME, 30, force=False, is_alive=dead)
    assert "no longer running" in (taken.took_over or "") and taken.previous == OTHER
    run2, _ = store.create_run(new_run())
    store.acquire(run2.id, OTHER, 0.05, force=False, is_alive=alive)
    time.sleep(0.1)
    expired = store.acquire(run2.id, ME, 30, force=False, is_alive=alive)
    assert "expired" in (expired.took_over or "")


PROGRESS = StepProgress(
    phase=Phase.VERIFYING, waiting=WaitKind.APPROVAL, gate=Gate(status=GateStatus.PENDING, state={"since_seq": 4}),
    recovery=Recovery.CHECK, child=ChildLink(run_id="01CHILD", attempt=2), rollback=RollbackProgress(done=["", "web1"]),
    local={"d": 1, "ü": [1.5, None]},
    targets={"web2": TargetRecord(state="not_started", attempts=3, output={"x": 1}, reason="r", started_at=1.25,
                                  progress=StepProgress(waiting=WaitKind.TIME, local={"polls": 2}))},
)  # fmt: skip
"""Typed progress using every field: what a store writes must come back equal."""


def test_commit_is_atomic_and_ordered(store: Store) -> None:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    first, flags = store.commit(
        lease, events=[NewEvent("step.started", step_id="a", attempt=1), NewEvent("step.finished", step_id="a", data={"k": [1, "ü"]})],
        run={"state": RunState.RUNNING, "cursor": "a", "options": {"agent": True}},
        steps=[StepPatch("a", 0, StepState.SUCCEEDED, attempts=1, output={"stdout": "ok"}, reason="exit 0", data=PROGRESS.to_json())],
    )  # fmt: skip
    assert first == 2 and not flags.pause_requested
    got = store.get_run(run.id)
    assert got.state == RunState.RUNNING and got.cursor == "a" and got.options == {"agent": True} and got.last_seq == 3
    step = store.get_steps(run.id)[0]
    assert (step.state, step.attempts, step.output, step.reason, step.progress) == (
        StepState.SUCCEEDED,
        1,
        {"stdout": "ok"},
        "exit 0",
        PROGRESS,
    )
    assert [e.type for e in store.events(run.id, after=1)] == ["step.started", "step.finished"]
    assert store.events(run.id, after=1, types=["step.finished"])[0].data == {"k": [1, "ü"]}
    store.commit(lease, steps=[StepPatch("c", 2, StepState.PENDING)])  # upsert of a step added by an edit
    assert [s.step_id for s in store.get_steps(run.id)] == ["a", "b", "c"]


def test_outside_requests_are_seen_by_the_executor(store: Store) -> None:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.WAITING})
    ev = store.request(run.id, "approve", actor="alice", reason="ok", data={"step_id": "a", "comment": "go"})
    assert ev.type == "request.approve" and ev.step_id == "a" and ev.actor == "alice" and ev.data["comment"] == "go"
    assert store.get_run(run.id).wake_at is not None, "a decision wakes a waiting run for workers"
    store.request(run.id, "pause", actor="bob", reason="")
    assert store.renew(lease).pause_requested
    store.request(run.id, "cancel", actor="bob", reason="")
    _, flags = store.commit(lease, events=[NewEvent("x")])
    assert flags.cancel_requested and flags.pause_requested
    assert store.flags(lease).cancel_requested
    with pytest.raises(RunNotFound):
        store.request("01NOPE", "pause", actor="x", reason="")


def test_claim_queued_waiting_due_and_orphaned_runs(store: Store) -> None:
    queued, _ = store.create_run(new_run())
    waiting, _ = store.create_run(new_run())
    lease = store.acquire(waiting.id, OTHER, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.WAITING, "wake_at": time.time() + 3600})
    store.release(lease)
    orphan, _ = store.create_run(new_run())
    lease = store.acquire(orphan.id, OTHER, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.RUNNING})
    claimed = store.claim(ME, 30, is_alive=alive, limit=10)
    assert [lease.run_id for lease in claimed] == [queued.id], "not yet due, and the live remote holder keeps its run"
    assert store.claim(ME, 30, is_alive=alive, limit=10) == [], "a claimed run is not claimed again"
    orphaned = store.claim(ME, 30, is_alive=dead, limit=10)
    assert [lease.run_id for lease in orphaned] == [orphan.id]
    lease = store.acquire(waiting.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, run={"wake_at": time.time() - 1})
    store.release(lease)
    assert [lease.run_id for lease in store.claim(ME, 30, is_alive=alive)] == [waiting.id]


def test_a_run_created_for_its_executor_cannot_be_claimed(store: Store) -> None:
    run, _ = store.create_run(new_run(holder=ME, lease_ttl=30))
    assert store.get_run(run.id).holder == ME
    assert store.claim(OTHER, 30, is_alive=alive, limit=10) == [], "no worker can take it before its creator does"
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    assert lease.took_over is None and lease.fence == 2


def test_concurrent_claims_never_share_a_run(store: Store) -> None:
    ids = {store.create_run(new_run())[0].id for _ in range(20)}
    got: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        holder = Holder(host=f"w{n}", boot_id="b", pid=n, start_time=1, kind="worker")
        while True:
            leases = store.claim(holder, 30, is_alive=alive, limit=1)
            if not leases:
                return
            with lock:
                got.extend(lease.run_id for lease in leases)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == sorted(ids)


def test_alert_deliveries_and_decisions(store: Store) -> None:
    """At-least-once intake: a delivery is recorded once, re-processing adds no decision, routes see their runs."""
    from runner.alerts import NewDecision

    active, _ = store.create_run(new_run())
    done, _ = store.create_run(new_run())
    lease = store.acquire(done.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.SUCCEEDED, "finished_at": time.time()})
    first = store.begin_delivery("d1", "alertmanager", "sha-1")
    assert (first.id, first.source, first.state, first.seen, first.result) == ("d1", "alertmanager", "processing", 1, None)
    assert store.begin_delivery("d1", "alertmanager", "sha-1").seen == 2, "a duplicate delivery is counted, not re-created"
    decisions = [NewDecision("d1", 0, "alertmanager", "started", route="r", dedupe_key="k1", run_id=active.id, alert={"a": 1}),
                 NewDecision("d1", 1, "alertmanager", "breaker_open", route="r", dedupe_key="k2", run_id=done.id),
                 NewDecision("d1", 2, "alertmanager", "no_route", reason="nothing matched")]  # fmt: skip
    stored = store.record_decisions(decisions)
    assert [d.decision for d in stored] == ["started", "breaker_open", "no_route"]
    assert [d.id for d in store.record_decisions(decisions)] == [d.id for d in stored], "re-processing adds nothing"
    store.finish_delivery("d1", {"runs": 1, "nested": {"ok": [True, None]}})
    again = store.begin_delivery("d1", "alertmanager", "sha-1")
    assert again.state == "done" and again.result == {"runs": 1, "nested": {"ok": [True, None]}}
    assert [d.decision for d in store.list_decisions()] == ["no_route", "breaker_open", "started"], "newest first"
    assert [d.decision for d in store.list_decisions(route="r", limit=1)] == ["breaker_open"]
    assert [d.decision for d in store.list_decisions(before=stored[1].id)] == ["started"]
    assert [d.decision for d in store.list_decisions(run_id=active.id)] == ["started"]
    assert store.list_decisions(run_id=active.id)[0].alert == {"a": 1}
    assert [(r.dedupe_key, r.state) for r in store.route_runs("r")] == [("k2", "succeeded"), ("k1", "queued")]
    assert [r.dedupe_key for r in store.route_runs("r", active_only=True)] == ["k1"]
    assert [r.dedupe_key for r in store.route_runs("r", dedupe_key="k2")] == ["k2"]
    assert store.route_runs("r", since=time.time() + 3600) == []


def test_listing_counting_and_queue_depth(store: Store) -> None:
    runs = [store.create_run(new_run(runbook="a" if i % 2 else "b"))[0] for i in range(5)]
    lease = store.acquire(runs[0].id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.FAILED})
    newest_first = [r.id for r in store.list_runs()]
    assert newest_first == sorted((r.id for r in runs), reverse=True)
    assert [r.id for r in store.list_runs(runbook="a")] == sorted((r.id for r in runs if r.runbook == "a"), reverse=True)
    assert [r.id for r in store.list_runs(states=[RunState.FAILED])] == [runs[0].id]
    page1 = store.list_runs(limit=2)
    page2 = store.list_runs(limit=2, before=page1[-1].id)
    assert [r.id for r in page1 + page2] == newest_first[:4]
    assert store.count_runs() == {("b", "failed"): 1, ("a", "queued"): 2, ("b", "queued"): 2}
    assert store.queue_depth() == 4
    child, _ = store.create_run(new_run(parent_run_id=runs[1].id, parent_step_id="a"))
    assert [r.id for r in store.list_runs(parent=runs[1].id)] == [child.id]


__all__ = [name for name in dir() if name.startswith("test_")] + ["new_run"]
