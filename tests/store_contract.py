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


def test_listing_by_creation_time_and_starter(store: Store) -> None:
    """``since`` is inclusive, ``until`` exclusive, on the store's own ``created_at``; ``started_by`` is exact, or a
    prefix when it ends with ``*`` (case-sensitive, and ``%``/``_`` are plain characters). Newest first is by id."""
    starters = ["alice@web", "alert:am/disk", "alert:am/cpu", "ALERT:x", "bob_100%"]
    runs = [store.create_run(new_run(started_by=who))[0] for who in starters]
    assert len({r.created_at for r in runs}) == len(runs), "five creations, five distinct times on the store's clock"
    runs.sort(key=lambda r: r.created_at)

    def listed(**kw: Any) -> list[str]:
        return [r.id for r in store.list_runs(**kw)]

    def newest_first(*picked: Any) -> list[str]:
        return sorted((r.id for r in picked), reverse=True)

    assert listed(since=runs[2].created_at) == newest_first(*runs[2:]), "since is inclusive"
    assert listed(until=runs[2].created_at) == newest_first(*runs[:2]), "until is exclusive"
    assert listed(since=runs[1].created_at, until=runs[3].created_at) == newest_first(runs[1], runs[2])
    assert listed(since=runs[-1].created_at + 3600) == []
    by = {r.started_by: r for r in runs}
    assert listed(started_by="alice@web") == [by["alice@web"].id]
    assert listed(started_by="alice") == [], "exact unless it ends with *"
    assert listed(started_by="alert:*") == newest_first(by["alert:am/disk"], by["alert:am/cpu"]), "a prefix, case-sensitive"
    assert listed(started_by="bob_1*") == [by["bob_100%"].id]
    assert listed(started_by="bob%*") == [] and listed(started_by="b_b*") == [], "no LIKE wildcards"
    assert listed(started_by="*") == newest_first(*runs), "'*' alone: anyone"
    assert listed(started_by="alert:*", since=by["alert:am/cpu"].created_at) == [by["alert:am/cpu"].id]
    page = store.list_runs(started_by="alert:*", limit=1)
    assert listed(started_by="alert:*", limit=1, before=page[-1].id) == newest_first(by["alert:am/disk"], by["alert:am/cpu"])[1:]


# ---------------------------------------------------------------------- notifications (the outbox, runner/notify/outbox.py)


def _leased_run(store: Store, **kw: Any) -> Any:
    run, _ = store.create_run(new_run(**kw))
    return store.acquire(run.id, ME, 30, force=False, is_alive=alive)


def test_an_event_that_notifies_is_journaled_with_its_outbox_row(store: Store) -> None:
    lease = _leased_run(store)
    approval = NewEvent("step.waiting", "a", data={"kind": "approval", "reason": "waiting for 1 approval(s): drain?", "not_before": 1.0})
    first, _ = store.commit(lease, events=[NewEvent("step.started", "a"), approval, NewEvent("step.waiting", "b", data={"kind": "wait"})])
    (row,) = store.list_notifications(run_id=lease.run_id)
    assert (row.key, row.kind, row.seq, row.step_id, row.runbook, row.state, row.attempts, row.channels) == (
        f"{lease.run_id}:{first + 1}",
        "waiting_approval",
        first + 1,
        "a",
        "rb",
        "pending",
        0,
        {},
    )
    assert row.data == {"kind": "approval", "reason": "waiting for 1 approval(s): drain?", "event": "step.waiting"}
    assert row.next_at <= time.time() and row.holder is None
    unknown = NewEvent("run.waiting", "b", data={"kind": "decision", "reason": "step 'b' needs a decision"})
    store.commit(
        lease, events=[unknown, NewEvent("run.failed", "b", data={"reason": "boom"}, actor="tester")], run={"state": RunState.FAILED}
    )
    rows = store.list_notifications(run_id=lease.run_id)
    assert sorted(r.kind for r in rows) == ["failed", "unknown", "waiting_approval"]
    failed = next(r for r in rows if r.kind == "failed")
    assert failed.data == {"reason": "boom", "event": "run.failed", "actor": "tester"} and failed.step_id == "b"
    lease2 = _leased_run(store)
    store.commit(lease2, events=[NewEvent("run.succeeded", data={"steps": 2})], run={"state": RunState.SUCCEEDED})
    assert [(r.kind, r.data) for r in store.list_notifications(run_id=lease2.run_id)] == [
        ("succeeded", {"steps": 2, "event": "run.succeeded"})]  # fmt: skip


def test_an_outbox_row_is_written_only_with_its_event(store: Store) -> None:
    """Same transaction: a fenced-off commit writes neither the event nor its notification."""
    lease = _leased_run(store)
    store.acquire(lease.run_id, OTHER, 30, force=True, is_alive=alive)
    with pytest.raises(LeaseLost):
        store.commit(lease, events=[NewEvent("run.failed", data={"reason": "late"})], run={"state": RunState.FAILED})
    assert store.list_notifications(run_id=lease.run_id) == [] and [e.type for e in store.events(lease.run_id)] == ["run.created"]


def test_a_sub_runbook_run_notifies_through_its_parent_only(store: Store) -> None:
    parent = _leased_run(store)
    child = _leased_run(store, parent_run_id=parent.run_id, parent_step_id="a")
    store.commit(child, events=[NewEvent("run.failed", data={"reason": "child broke"})], run={"state": RunState.FAILED})
    store.commit(parent, events=[NewEvent("run.failed", "a", data={"reason": "sub-runbook failed"})], run={"state": RunState.FAILED})
    assert store.list_notifications(run_id=child.run_id) == []
    assert [r.kind for r in store.list_notifications()] == ["failed"] and store.list_notifications()[0].run_id == parent.run_id


def test_alert_decisions_that_notify_get_outbox_rows_once(store: Store) -> None:
    from runner.alerts import NewDecision

    run, _ = store.create_run(new_run())
    labels = {"labels": {"alertname": "DiskFull", "team": "db"}}
    decisions = [NewDecision("d9", 0, "generic", "over_budget", route="disk", dedupe_key="k", reason="budget 1", alert=labels),
                 NewDecision("d9", 1, "generic", "started", route="disk", run_id=run.id),
                 NewDecision("d9", 2, "generic", "breaker_open", route="disk", run_id=run.id, reason="3 failed runs"),
                 NewDecision("d9", 3, "generic", "cooled_down", route="disk", reason="cooldown")]  # fmt: skip
    stored = store.record_decisions(decisions)
    store.record_decisions(decisions)  # a retried delivery adds nothing
    rows = sorted(store.list_notifications(), key=lambda r: r.key)
    assert [(r.key, r.kind, r.run_id) for r in rows] == sorted(
        [(f"decision:{stored[0].id}", "storm_refused", None), (f"decision:{stored[2].id}", "breaker_open", run.id),
         (f"decision:{stored[3].id}", "storm_refused", None)])  # fmt: skip
    over = next(r for r in rows if r.key == f"decision:{stored[0].id}")
    assert over.data["route"] == "disk" and over.data["labels"] == {"alertname": "DiskFull", "team": "db"}
    assert over.data["decision"] == "over_budget" and over.data["reason"] == "budget 1"


def test_notification_claims_are_leased_fenced_and_released(store: Store) -> None:
    from runner.notify.records import ChannelStatus

    lease = _leased_run(store)
    store.commit(lease, events=[NewEvent("run.failed", data={"reason": "x"})], run={"state": RunState.FAILED})
    (rec,) = store.claim_notifications("d1", 30, limit=10)
    assert rec.claim == 1 and rec.holder == "d1" and rec.lease_expires_at is not None
    assert store.claim_notifications("d2", 30) == [], "a claimed notification is nobody else's"
    sent = {"hook": ChannelStatus(state="sent", attempts=1, detail="HTTP 200", at=1.0), "mail": ChannelStatus(attempts=1, detail="421")}
    assert store.update_notification(rec.key, 1, channels=sent, state="pending", attempts=0, ttl=30)
    assert not store.update_notification(rec.key, 0, channels={}, state="delivered", attempts=0), "a stale claim writes nothing"
    assert store.update_notification(
        rec.key, 1, channels=sent, state="pending", attempts=1, next_at=time.time() + 3600, last_error="mail: 421"
    )
    assert store.claim_notifications("d2", 30) == [], "not due yet"
    (row,) = store.list_notifications(states=["pending"])
    assert row.holder is None and row.lease_expires_at is None and row.attempts == 1 and row.last_error == "mail: 421"
    assert row.channels == sent
    assert store.update_notification(rec.key, 1, channels=sent, state="pending", attempts=1, next_at=time.time() - 1)
    (again,) = store.claim_notifications("d2", 30, run_ids=[lease.run_id])
    assert again.claim == 2 and again.channels == sent
    assert not store.update_notification(rec.key, 1, channels={}, state="delivered", attempts=2), "d1 was fenced off"
    done = {**sent, "mail": ChannelStatus(state="sent", attempts=2, detail="250")}
    assert store.update_notification(rec.key, 2, channels=done, state="delivered", attempts=2)
    (final,) = store.list_notifications(run_id=lease.run_id)
    assert final.state == "delivered" and final.finished_at is not None and final.holder is None and final.channels == done
    assert store.claim_notifications("d3", 30) == [] and store.list_notifications(states=["pending"]) == []


def test_an_expired_notification_claim_is_taken_over(store: Store) -> None:
    lease = _leased_run(store)
    store.commit(lease, events=[NewEvent("run.cancelled", data={"reason": "stop"})], run={"state": RunState.CANCELLED})
    assert [r.claim for r in store.claim_notifications("dead", 0.2)] == [1]
    time.sleep(0.4)
    assert [r.claim for r in store.claim_notifications("alive", 30)] == [2]
    assert store.claim_notifications("third", 30, run_ids=["01NOPE"]) == []


def test_concurrent_notification_claimers_never_share_one(store: Store) -> None:
    for _ in range(24):
        lease = _leased_run(store)
        store.commit(lease, events=[NewEvent("run.failed", data={"reason": "x"})], run={"state": RunState.FAILED})
    got: list[str] = []
    lock = threading.Lock()

    def deliverer(n: int) -> None:
        while claimed := store.claim_notifications(f"d{n}", 30, limit=2):
            with lock:
                got.extend(r.key for r in claimed)

    threads = [threading.Thread(target=deliverer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 24 and len(set(got)) == 24
    page1 = store.list_notifications(limit=10)
    page2 = store.list_notifications(limit=30, before=page1[-1].created_at)
    assert [r.key for r in page1 + page2] == [r.key for r in store.list_notifications(limit=30)], "newest first, paged by created_at"


__all__ = [name for name in dir() if name.startswith("test_")] + ["new_run"]
