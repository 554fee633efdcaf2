"""Cancelling runs, and settling an idle run (paused, cancelled) without driving it.

``runbook cancel RUN`` records a ``request.cancel``; an executor that holds the run stops at once (its step
in flight has its process group stopped). An idle run is settled here under a short lease. With
``--rollback`` the rollback actions of completed steps run first, in reverse order, through a drive
(journaled, resumable after a crash: a resume finishes the rollback, then the cancel).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.engine.holder import is_alive
from runner.errors import LeaseHeld
from runner.store.records import IN_FLIGHT_STEP_STATES, NewEvent, RunState, StepPatch, StepRecord, StepState
from runner.store.transitions import RunEvent, StepEvent, run_after, step_after

if TYPE_CHECKING:
    from runner.engine.engine import Engine
    from runner.store.base import Store

__all__ = ["STOPPED_BY_CANCEL", "CancelRequest", "cancel_request", "close_for_cancel", "roll_back_cancelled", "settle"]

STOPPED_BY_CANCEL = (StepState.RUNNING, StepState.WAITING, StepState.UNKNOWN, StepState.INTERRUPTED)
"""Step states a cancelled run leaves as ``failed`` (nothing is left open in a cancelled run)."""


@dataclass(frozen=True)
class CancelRequest:
    """The latest ``runbook cancel``: its reason and whether it asked for a rollback."""

    reason: str = ""
    rollback: bool = False


def cancel_request(store: Store, run_id: str) -> CancelRequest:
    """The run's latest cancel request (empty if there is none)."""
    requests = store.events(run_id, types=("request.cancel",), limit=1_000_000)
    if not requests:
        return CancelRequest()
    data = requests[-1].data
    return CancelRequest(str(data.get("reason") or ""), bool(data.get("rollback")))


def close_for_cancel(recs: Iterable[StepRecord], reason: str) -> tuple[list[NewEvent], list[StepRecord]]:
    """Close every running or waiting step (and target) as ``failed`` with ``reason``: the events and the records."""
    now = time.time()
    events: list[NewEvent] = []
    closed: list[StepRecord] = []
    for rec in recs:
        touched = False
        for t in rec.progress.targets.values():
            if t.state in STOPPED_BY_CANCEL:
                t.state, t.reason, t.finished_at = str(step_after(t.state, StepEvent.FAIL)), reason, now
                touched = True
        if rec.state in STOPPED_BY_CANCEL:
            rec.state, rec.reason, rec.finished_at = step_after(rec.state, StepEvent.FAIL), reason, now
            rec.progress.waiting = rec.progress.phase = None
            events.append(
                NewEvent("step.finished", step_id=rec.step_id, attempt=rec.attempts, data={"state": str(rec.state), "reason": reason})
            )
            touched = True
        if touched:
            closed.append(rec)
    return events, closed


_SETTLEABLE = {
    RunState.PAUSED: {RunState.QUEUED, RunState.WAITING, RunState.INTERRUPTED, RunState.RUNNING},
    RunState.CANCELLED: {RunState.QUEUED, RunState.WAITING, RunState.INTERRUPTED, RunState.RUNNING, RunState.PAUSED, RunState.FAILED},
}


def settle(engine: Engine, run_id: str, state: RunState, reason: str, actor: str) -> None:
    """Move an idle run to ``state`` (paused or cancelled) under a short lease (no-op if an executor holds it)."""
    store = engine.store
    try:
        lease = store.acquire(run_id, engine.holder, engine.lease_ttl, force=False, is_alive=is_alive, take_lock=False)
    except LeaseHeld:
        return  # an executor holds it: it sees the request at its next boundary
    previous = lease.previous_state
    if previous not in _SETTLEABLE[state]:  # finished (or paused) in the meantime: leave it as it is
        store.release(lease)
        return
    try:
        cols: dict[str, Any] = {"state": run_after(previous, RunEvent.CANCEL if state == RunState.CANCELLED else RunEvent.PAUSE),
                                "reason": reason}  # fmt: skip
        events: list[NewEvent] = []
        closed: list[StepRecord] = []
        if state == RunState.CANCELLED:
            cols.update(finished_at=time.time(), cancel_requested=False)
            steps = store.get_steps(run_id)
            in_flight = {r.step_id for r in steps if r.state in IN_FLIGHT_STEP_STATES}
            if lease.took_over and in_flight:  # its executor died: what its steps in flight left running stops too
                event = _stop_leftovers(engine, lease, run_id, in_flight)
                if event is not None:
                    events.append(event)
            closing, closed = close_for_cancel(steps, reason)
            events += closing
        else:
            cols["pause_requested"] = False
        events.append(NewEvent(f"run.{state}", actor=actor, data={"reason": reason}))
        store.commit(lease, events=events, run=cols, steps=[StepPatch.of(r) for r in closed])
    finally:
        store.release(lease)
    if state == RunState.CANCELLED:
        engine.cancel_children(run_id, reason)


def roll_back_cancelled(engine: Engine, run_id: str, actor: str) -> None:
    """``cancel --rollback`` of a run a plain ``cancel`` already cancelled: run the rollback actions it left, here.

    Under the run's lease (taken without its lock key), like a cancel's rollback of an idle run; the run stays
    ``cancelled`` and its reason says what was rolled back (``run.rolled_back``). Raises :class:`LeaseHeld` if
    another live process is rolling it back right now.
    """
    from runner.engine.execution import DriveOptions, Execution

    store = engine.store
    rb = engine.runbook_for(store.get_run(run_id))
    lease = store.acquire(run_id, engine.holder, engine.lease_ttl, force=False, is_alive=is_alive, take_lock=False)
    try:
        run = store.get_run(run_id)
        if run.state != RunState.CANCELLED:
            return
        exe = Execution(engine, run, rb, lease, DriveOptions(actor=actor, take_lock=False, wait_in_process=False, detach=False))
        try:
            exe.roll_back_cancelled()
        finally:
            engine.notices.extend(n for n in exe.opts.notices if n not in engine.notices)
            exe.forget()
    finally:
        store.release(lease)


def _stop_leftovers(engine: Engine, lease: Any, run_id: str, in_flight: set[str]) -> NewEvent | None:
    from runner.leftovers import stop_as_event

    renewed = [time.monotonic()]

    def renew() -> None:  # no heartbeat here: keep the short lease while waiting for them
        if time.monotonic() - renewed[0] > lease.ttl / 3:
            engine.store.renew(lease)
            renewed[0] = time.monotonic()

    return stop_as_event(run_id, in_flight, tick=renew)
