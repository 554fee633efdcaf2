"""Reading a run's typed state, and the facts beside it, into the :class:`~runner.cursor.Snapshot` ``next`` needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.cursor import HELD_ALIVE, HELD_DETACHED, HELD_GONE, CommandHint, PauseCause, Snapshot, next_action, reason_now
from runner.engine.holder import is_alive
from runner.store.records import RunRecord, RunState, StepRecord, StepState
from runner.views import RunView, build_view

if TYPE_CHECKING:
    from runner.engine.engine import Engine

__all__ = ["holder_gone", "snapshot", "view_of"]

_DECIDABLE = frozenset({RunState.WAITING, RunState.FAILED, RunState.PAUSED, RunState.INTERRUPTED, RunState.QUEUED})


def holder_gone(run: RunRecord) -> bool:
    """No live executor holds this run: none recorded, its process is gone, or its lease expired."""
    import time

    if run.holder is None:
        return True
    if run.lease_expires_at is not None and run.lease_expires_at < time.time():
        return True
    return is_alive(run.holder) is False


def snapshot(engine: Engine, run: RunRecord, steps: list[StepRecord] | None = None) -> Snapshot:
    """The run's typed state and what ``next`` depends on besides it."""
    from runner.engine.decisions import pending
    from runner.engine.detach import held_by_detached

    store = engine.store
    steps = store.get_steps(run.id) if steps is None else steps
    snap = Snapshot(run=run, steps=steps)
    if run.state == RunState.RUNNING:
        snap.holding = (
            HELD_DETACHED if held_by_detached(run) or _handing_over(engine, run) else HELD_GONE if holder_gone(run) else HELD_ALIVE
        )
    if run.state in _DECIDABLE:
        snap.decisions_recorded = bool(pending(store, run.id))
    if run.state == RunState.WAITING:
        _waiting_facts(engine, snap)
    if run.state == RunState.PAUSED:
        paused = store.events(run.id, after=max(0, run.last_seq - 100), types=("run.paused",))
        if paused:
            data = paused[-1].data
            fits = data.get("budget_fits")
            snap.pause = PauseCause(str(data.get("cause") or ""), int(fits) if fits else None, data.get("estimate"))
    return snap


def _handing_over(engine: Engine, run: RunRecord) -> bool:
    """True between a hand-over to a detached executor and its taking the lease (its last event is the hand-over)."""
    if run.holder is not None:
        return False
    last = engine.store.events(run.id, after=max(0, run.last_seq - 1))
    return bool(last) and last[-1].type == "run.handed_over"


def _waiting_facts(engine: Engine, snap: Snapshot) -> None:
    from runner.engine.approvals import find_point, votes_for

    point = find_point(engine, snap.run, snap.steps)
    if point is not None:
        snap.tally = point.tally(votes_for(engine, point))
        snap.approval_run = point.run.id
        return
    waiting = next((s for s in snap.steps if s.state == StepState.WAITING and s.progress.child is not None), None)
    if waiting is not None and waiting.progress.child is not None:
        child = engine.store.get_run(waiting.progress.child.run_id)
        if child.state == RunState.WAITING:
            snap.child = next_action(snapshot(engine, child), engine.hint)


def view_of(engine: Engine, run_id: str, hint: CommandHint | None = None) -> RunView:
    """The run's current view, with ``next`` spelled for ``hint`` (the engine's caller by default)."""
    run = engine.store.get_run(run_id)
    snap = snapshot(engine, run)
    nxt, reason = next_action(snap, hint or engine.hint), reason_now(snap)
    view = build_view(run, snap.steps, nxt, notices=engine.notices)
    view.reason = reason
    return view
