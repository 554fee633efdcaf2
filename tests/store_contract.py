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
from runner.store.records import Holder, JSONText, NewEvent, NewRun, RunState, StepPatch, StepState

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


def test_an_encoded_snapshot_is_stored_as_the_document_it_encodes(store: Store) -> None:
    chunks = [b'{"name":"rb","note":"caf\xc3\xa9",', b'"steps":[', b'{"id":"a"}', b",", b'{"id":"b"}', b"]}"]
    run, _ = store.create_run(new_run(spec=JSONText(chunks)))
    assert store.get_spec(run.id) == {"name": "rb", "note": "café", "steps": [{"id": "a"}, {"id": "b"}]}
    assert store.get_step_hashes(run.id) == {"a": "1", "b": "2"}
    other, _ = store.create_run(new_run(spec={"name": "rb"}))  # the statement run again with other values
    assert store.get_spec(other.id) == {"name": "rb"} and store.get_spec(run.id)["note"] == "café"


def test_the_runbook_snapshot_is_kept_apart_from_the_run(store: Store) -> None:
    spec = {"name": "rb", "steps": [{"id": "a", "action": {"type": "shell", "config": {"command": ["true"]}}}]}
    run, _ = store.create_run(new_run(spec=spec))
    assert store.get_spec(run.id) == spec
    assert "spec" not in run.model_dump() and "step_hashes" not in run.model_dump()
    assert store.get_step_hashes(run.id) == {"a": "1", "b": "2"}
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    edited = {**spec, "steps": [*spec["steps"], {"id": "b", "action": {"type": "shell", "config": {"command": ["false"]}}}]}
    store.commit(lease, run={"spec": edited, "step_hashes": {"a": "1", "b": "3"}})
    assert store.get_spec(run.id) == edited and store.get_step_hashes(run.id) == {"a": "1", "b": "3"}
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


# ---------------------------------------------------------------------- the live-work queue (issue 19)


def _settle(store: Store, run_id: str, holder: Holder = OTHER, **cols: Any) -> None:
    """Give the run the columns ``cols`` under a lease of ``holder`` and release it."""
    lease = store.acquire(run_id, holder, 30, force=True, is_alive=alive)
    store.commit(lease, run=cols)
    store.release(lease)


def test_claimable_runs_are_exactly_the_live_work(store: Store) -> None:
    """Every kind of run, and whether a claim may take it (the rule the live-work index encodes)."""
    now = time.time()
    cases: dict[str, tuple[dict[str, Any], bool]] = {
        "queued": ({}, True),
        "queued, pause requested": ({"pause_requested": True}, False),
        "waiting, due": ({"state": RunState.WAITING, "wake_at": now - 1}, True),
        "waiting, not due": ({"state": RunState.WAITING, "wake_at": now + 3600}, False),
        "waiting for a decision": ({"state": RunState.WAITING, "wake_at": None}, False),
        "waiting, due, pause requested": ({"state": RunState.WAITING, "wake_at": now - 1, "pause_requested": True}, False),
        "waiting, cancel requested": ({"state": RunState.WAITING, "wake_at": None, "cancel_requested": True}, True),
        "paused": ({"state": RunState.PAUSED}, False),
        "paused, cancel requested": ({"state": RunState.PAUSED, "cancel_requested": True}, True),
        "interrupted": ({"state": RunState.INTERRUPTED}, False),
        "interrupted, cancel requested": ({"state": RunState.INTERRUPTED, "cancel_requested": True}, True),
        "running, nobody holds it": ({"state": RunState.RUNNING}, True),
        "succeeded": ({"state": RunState.SUCCEEDED, "finished_at": now}, False),
        "failed": ({"state": RunState.FAILED, "finished_at": now}, False),
        "cancelled": ({"state": RunState.CANCELLED, "finished_at": now}, False),
    }
    ids = {}
    for name, (cols, _) in cases.items():
        run, _ = store.create_run(new_run(runbook=name.replace(" ", "-").replace(",", "")))
        if cols:
            _settle(store, run.id, **cols)
        ids[run.id] = name
    parent = next(i for i, n in ids.items() if n == "succeeded")
    store.create_run(new_run(parent_run_id=parent, parent_step_id="a"))  # a queued sub-runbook run: its parent drives it
    claimed = [ids.get(lease.run_id, "sub-runbook run") for lease in store.claim(ME, 30, is_alive=alive, limit=100)]
    assert sorted(claimed) == sorted(name for name, (_, claimable) in cases.items() if claimable)
    assert store.claim(ME, 30, is_alive=alive, limit=100) == [], "claimed runs are held until their lease ends"


def test_claims_take_the_oldest_ready_run_first_and_skip_a_held_lock(store: Store) -> None:
    first, _ = store.create_run(new_run(lock_key="host:a"))
    _settle(store, first.id, state=RunState.FAILED, finished_at=time.time())  # a failed run gives its lock key up
    second, _ = store.create_run(new_run(lock_key="host:a"))  # ... which a new run takes
    lease = store.acquire(first.id, OTHER, 30, force=False, is_alive=alive, take_lock=False)
    store.commit(lease, run={"state": RunState.QUEUED})  # a retry queued while the other run holds the key
    store.release(lease)
    third, _ = store.create_run(new_run())
    assert [lease.run_id for lease in store.claim(ME, 30, is_alive=alive)] == [second.id], "the oldest run whose lock is free"
    assert [lease.run_id for lease in store.claim(ME, 30, is_alive=alive, limit=5)] == [third.id], "the locked run is skipped"


def test_a_claim_reports_why_it_took_a_run_over(store: Store) -> None:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, OTHER, 0.05, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.RUNNING})
    time.sleep(0.1)
    [taken] = store.claim(ME, 30, is_alive=alive)
    assert taken.previous == OTHER and "expired" in (taken.took_over or "") and taken.previous_state == RunState.RUNNING
    assert taken.fence == lease.fence + 1
    with pytest.raises(LeaseLost):
        store.commit(lease, events=[NewEvent("late")])


def _requires(store: Store, feature: str) -> None:
    """Mark the test an expected failure for a store that does not implement ``feature`` yet (it is optional; the
    built-in stores implement ``batch``, so for them its tests must pass)."""
    if feature == "batch" and type(store).batch is Store.batch and type(store).__name__ not in ("SQLiteStore", "PostgresStore"):
        pytest.xfail(f"{type(store).__name__} commits each call on its own (Store.batch not implemented)")
    if feature == "signal" and not type(store).signals_work:
        pytest.xfail(f"{type(store).__name__} does not signal Store.work (its workers poll)")


def test_work_signal_wakes_idle_workers(store: Store) -> None:
    """Writes that leave a run claimable signal ``store.work``; a waiting worker wakes; other writes do not signal."""
    _requires(store, "signal")
    signal = store.work
    assert store.work is signal, "one signal per store object"
    seen = signal.generation()
    waiting, _ = store.create_run(new_run())
    assert signal.generation() != seen, "a queued run signals"
    seen = signal.generation()
    store.create_run(new_run(holder=ME, lease_ttl=30))
    store.create_run(new_run(parent_run_id=waiting.id, parent_step_id="a"))
    assert signal.generation() == seen, "a run created for its executor, or a sub-runbook run, is nobody else's work"
    lease = store.acquire(waiting.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.WAITING, "wake_at": None})
    store.release(lease)
    assert signal.generation() == seen, "a run waiting for a decision is not work"
    store.request(waiting.id, "approve", actor="alice", reason="ok", data={"step_id": "a"})
    assert signal.generation() != seen, "a decision wakes the waiting run for workers"
    lease = store.acquire(waiting.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, run={"state": RunState.QUEUED})
    seen = signal.generation()
    store.release(lease)
    assert signal.generation() != seen, "a run released in a claimable state signals"
    woken: list[bool] = []
    mark = signal.generation()
    waiter = threading.Thread(target=lambda: woken.append(signal.wait(mark, timeout=60)))
    waiter.start()
    store.create_run(new_run())
    waiter.join(timeout=60)
    assert woken == [True], "a worker sleeping on the signal is woken by a run queued in another thread"
    assert signal.wait(signal.generation(), timeout=0.01) is False, "nothing new: the wait times out"


# ---------------------------------------------------------------------- batches (issue 19)


def test_a_batch_commits_together_and_sees_its_own_writes(store: Store) -> None:
    from runner.alerts import NewDecision

    _requires(store, "batch")
    seen_elsewhere: list[int] = []
    with store.batch():
        store.begin_delivery("b1", "alertmanager", "sha")
        run, created = store.create_run(new_run(idempotency_key="batch-key"))
        assert created and store.get_run(run.id).state == RunState.QUEUED, "reads inside a batch see its writes"
        assert store.create_run(new_run(idempotency_key="batch-key"))[0].id == run.id
        store.record_decisions([NewDecision("b1", 0, "alertmanager", "started", route="r", dedupe_key="k", run_id=run.id)])
        store.finish_delivery("b1", {"ok": True})
        other = threading.Thread(target=lambda: seen_elsewhere.append(len(store.find_run_ids(run.id))))
        other.start()
        other.join(timeout=60)
    assert seen_elsewhere == [0], "another thread does not see a batch before it commits"
    assert store.get_run(run.id).id == run.id and store.begin_delivery("b1", "alertmanager", "sha").result == {"ok": True}
    assert [d.run_id for d in store.list_decisions(delivery_id="b1")] == [run.id]


def test_a_failed_batch_leaves_nothing_and_a_failed_call_inside_only_undoes_itself(store: Store) -> None:
    _requires(store, "batch")
    holder, _ = store.create_run(new_run(lock_key="host:x"))
    with pytest.raises(RuntimeError), store.batch():
        store.create_run(new_run(idempotency_key="gone"))
        store.begin_delivery("b2", "alertmanager", "sha")
        raise RuntimeError("the delivery failed half-way")
    assert store.list_runs(limit=10) == [store.get_run(holder.id)], "nothing of the failed batch is left"
    assert store.begin_delivery("b2", "alertmanager", "sha").seen == 1, "the delivery was not recorded before"
    with store.batch():
        with pytest.raises(LockHeld):
            store.create_run(new_run(lock_key="host:x"))
        kept, _ = store.create_run(new_run(idempotency_key="kept"))
    assert {r.id for r in store.list_runs(limit=10)} == {holder.id, kept.id}, "the refused create left nothing; the rest committed"


def test_grouped_units_of_many_threads_each_commit_or_fail_alone(store: Store) -> None:
    """Units written by many threads at once (a store may share one transaction among them): each thread gets its own
    result; a unit that raises leaves nothing and fails only its own thread."""
    _requires(store, "batch")
    results: dict[int, Any] = {}
    start = threading.Barrier(12)

    def unit(i: int) -> str:
        run, _ = store.create_run(new_run(idempotency_key=f"group-{i}"))
        if i == 5:
            raise ValueError("unit 5 failed after its write")
        return run.id

    def worker(i: int) -> None:
        start.wait(timeout=60)
        try:
            results[i] = store.grouped(lambda: unit(i))
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert isinstance(results.pop(5), ValueError)
    assert {r.idempotency_key: r.id for r in store.list_runs(limit=100)} == {f"group-{i}": rid for i, rid in results.items()}


def test_grouped_commits_with_a_lost_lease_fail_alone(store: Store) -> None:
    """Executors committing at the same moment: the one whose lease was taken over gets LeaseLost, the rest commit."""
    leases = [_leased_run(store) for _ in range(6)]
    stale = leases[2]
    store.acquire(stale.run_id, OTHER, 30, force=True, is_alive=alive)
    outcome: dict[str, Any] = {}
    start = threading.Barrier(len(leases))

    def commit(lease: Any) -> None:
        start.wait(timeout=60)
        try:
            outcome[lease.run_id] = store.commit(lease, events=[NewEvent("step.started", "a")])[0]
        except LeaseLost as exc:
            outcome[lease.run_id] = exc

    threads = [threading.Thread(target=commit, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert isinstance(outcome.pop(stale.run_id), LeaseLost)
    assert [e.type for e in store.events(stale.run_id)] == ["run.created"], "the stale executor wrote nothing"
    for run_id, first in outcome.items():
        assert [(e.seq, e.type) for e in store.events(run_id)] == [(1, "run.created"), (first, "step.started")]


# ---------------------------------------------------------------------- retention (issue 19)

DAY = 86400.0


def _finish(store: Store, run_id: str, state: RunState, finished_at: float) -> None:
    _settle(store, run_id, state=state, finished_at=finished_at)


def _journal(store: Store) -> tuple[dict[str, str], float]:
    """One run of every kind retention must tell apart, created now; returns ``{name: run_id}`` and now."""
    from runner.alerts import NewDecision

    now = time.time()
    old, recent = now, now + 9 * DAY  # judged at now + 10 days: "old" finished 10 days before, "recent" 1 day before
    runs: dict[str, str] = {}

    def add(name: str, state: RunState | None = None, finished: float = old, **kw: Any) -> str:
        run, _ = store.create_run(new_run(runbook=kw.pop("runbook", "rb"), **kw))
        if state is not None:
            _finish(store, run.id, state, finished) if state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED) else \
                _settle(store, run.id, state=state, wake_at=None)  # fmt: skip
        runs[name] = run.id
        return run.id

    add("old succeeded", RunState.SUCCEEDED)
    add("old failed", RunState.FAILED)
    add("old cancelled", RunState.CANCELLED)
    add("recent succeeded", RunState.SUCCEEDED, recent)
    for name in ("old, notification not sent yet", "old, notification sent"):  # the outbox row comes with the event
        rid = add(name)
        lease = store.acquire(rid, OTHER, 30, force=True, is_alive=alive)
        store.commit(lease, events=[NewEvent("run.succeeded")], run={"state": RunState.SUCCEEDED, "finished_at": old})
        store.release(lease)
    [sent] = store.claim_notifications("deliverer", 30, run_ids=[runs["old, notification sent"]])
    assert store.update_notification(sent.key, sent.claim, channels={}, state="delivered", attempts=1)
    add("queued")
    add("waiting", RunState.WAITING)
    add("paused", RunState.PAUSED)
    add("interrupted", RunState.INTERRUPTED)
    running = add("running")
    store.commit(store.acquire(running, OTHER, 30, force=False, is_alive=alive), run={"state": RunState.RUNNING})
    parent = add("old parent of an active child", RunState.SUCCEEDED)
    add("active child", parent_run_id=parent, parent_step_id="a")
    parent = add("old parent of old children", RunState.SUCCEEDED)
    child = add("old child", RunState.SUCCEEDED, parent_run_id=parent, parent_step_id="a")
    add("old grandchild", RunState.FAILED, parent_run_id=child, parent_step_id="a")
    parent = add("recent parent", RunState.SUCCEEDED, recent)
    add("old child of a recent parent", RunState.SUCCEEDED, parent_run_id=parent, parent_step_id="a")
    add("old with a key inside its window", RunState.SUCCEEDED, idempotency_key="api:k1")
    firing = add("old alert run, alert still firing", RunState.SUCCEEDED)
    resolved = add("old alert run, alert resolved", RunState.SUCCEEDED)
    store.begin_delivery("d-fire", "alertmanager", "sha")
    store.record_decisions([NewDecision("d-fire", 0, "alertmanager", "started", route="r", dedupe_key="k-fire", status="firing", run_id=firing),
                            NewDecision("d-fire", 1, "alertmanager", "started", route="r", dedupe_key="k-res", status="firing", run_id=resolved)])  # fmt: skip
    store.begin_delivery("d-later", "alertmanager", "sha")
    store.record_decisions([NewDecision("d-later", 0, "alertmanager", "deduped", route="r", dedupe_key="k-fire", status="firing", run_id=firing),
                            NewDecision("d-later", 1, "alertmanager", "resolved", route="r", dedupe_key="k-res", status="resolved", run_id=resolved)])  # fmt: skip
    store.begin_delivery("d-none", "alertmanager", "sha")
    store.record_decisions([NewDecision("d-none", 0, "alertmanager", "no_route", reason="nothing matched")])
    return runs, now + 10 * DAY


GONE = {"old succeeded", "old failed", "old cancelled", "old parent of old children", "old child", "old grandchild",
        "old alert run, alert resolved", "old, notification sent", "old, notification not sent yet"}  # fmt: skip


def test_prune_deletes_exactly_what_the_rules_let_go(store: Store) -> None:
    from runner.store.retention import PruneRules

    runs, later = _journal(store)
    rules = PruneRules(older_than=5 * DAY, idempotency_window=20 * DAY, alert_window=11 * DAY, now=later)
    events_before = {name: len(store.events(rid)) for name, rid in runs.items()}
    dry = store.prune(rules, dry_run=True)
    assert all(store.get_run(rid) for rid in runs.values()), "a dry run deletes nothing"
    report = store.prune(rules)
    for name, rid in runs.items():
        if name in GONE:
            with pytest.raises(RunNotFound):
                store.get_run(rid)
            assert store.events(rid) == [] and store.get_steps(rid) == [], name
        else:
            assert store.get_run(rid).id == rid and len(store.events(rid)) == events_before[name], f"{name} was kept"
    assert report.runs == len(GONE) and (dry.runs, dry.events, dry.steps) == (report.runs, report.events, report.steps)
    assert report.events == sum(events_before[n] for n in GONE) and report.steps == 2 * len(GONE)
    assert report.kept == {"active_descendant": 1, "idempotency_window": 1, "alert_open": 1}
    assert report.notifications == 1 == dry.notifications, "a sent notification goes with its run"
    left = store.list_notifications(limit=100)
    assert [(n.run_id, n.state) for n in left] == [(runs["old, notification not sent yet"], "pending")], "one still to send stays"
    assert [d.decision for d in store.list_decisions(route="r")] == ["deduped", "started"], "decisions about pruned runs go"
    assert report.decisions == 2 == dry.decisions and report.deliveries == 0, "each delivery still has a decision"
    assert [d.decision for d in store.list_decisions(delivery_id="d-none")] == ["no_route"], "younger than the alert window"
    again = store.prune(rules)
    assert (again.runs, again.decisions) == (0, 0), "a second prune finds nothing more"


def test_prune_later_lets_closed_alerts_keys_and_their_decisions_go(store: Store) -> None:
    from runner.store.retention import PruneRules

    runs, later = _journal(store)
    report = store.prune(PruneRules(older_than=5 * DAY, idempotency_window=DAY, alert_window=DAY, notification_window=DAY, now=later))
    left = {name for name, rid in runs.items() if store.find_run_ids(rid)}
    assert "old with a key inside its window" not in left and "old alert run, alert still firing" not in left
    assert report.kept == {"active_descendant": 1}
    assert store.list_decisions(limit=100) == [], "decisions about no run, older than the windows, go"
    assert store.list_notifications(limit=100) == [] and report.notifications == 2, "also one never sent, past its window"
    assert report.decisions == 5 and report.deliveries == 3


def test_prune_keeps_the_newest_runs_of_each_runbook_and_only_the_states_asked(store: Store) -> None:
    from runner.store.records import RunState as S
    from runner.store.retention import PruneRules

    now = time.time()
    ids = []
    for runbook in "aaaab":
        ids.append(store.create_run(new_run(runbook=runbook))[0].id)
        time.sleep(0.002)  # "newest" is by run id: creation time to the millisecond
    for rid, state in zip(ids, [S.SUCCEEDED, S.FAILED, S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED], strict=True):
        _finish(store, rid, state, now)
    report = store.prune(PruneRules(older_than=DAY, keep_last=2, states=frozenset({S.SUCCEEDED}), now=now + 2 * DAY))
    assert {r.id for r in store.list_runs(limit=10)} == {ids[1], ids[2], ids[3], ids[4]}, "failed kept; newest 2 of a, 1 of b"
    assert report.runs == 1 and report.kept == {"keep_last": 3}
    with pytest.raises(Exception, match="not finished states"):
        PruneRules(older_than=DAY, states=frozenset({S.RUNNING}))


__all__ = [name for name in dir() if name.startswith("test_")] + ["new_run"]
