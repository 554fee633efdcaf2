"""Requests from outside a run's executor: pause, cancel, approve/deny, decisions on steps, retries.

Each is authorised for its principal (:mod:`runner.authority`), checked against the run's typed state, and
*recorded* (``store.request``): none runs a step in the requester's process — the run's driver (an agent, a
worker, a person with ``resume``) applies it. The exception is ``cancel --rollback`` of an idle run (or of one
a plain ``cancel`` already cancelled), which runs the rollback actions there and then: that is the request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from runner.authority import Action, Principal
from runner.engine.cancel import roll_back_cancelled, settle
from runner.engine.inspect import holder_gone
from runner.errors import InvalidState
from runner.steptypes import Vote
from runner.store.records import TERMINAL_STATES, RunState

if TYPE_CHECKING:
    from runner.engine.engine import Engine
    from runner.views import RunView

__all__ = ["approve_or_deny", "cancel", "cancel_children", "decide_step", "pause", "retry"]


def pause(engine: Engine, run_id: str, *, actor: str, reason: str = "", principal: Principal | None = None) -> RunView:
    """Ask a run to stop at its next step boundary (at once if nothing is executing it)."""
    run = engine.store.get_run(run_id)
    engine.authorize(principal, Action.PAUSE, run)
    if run.state in TERMINAL_STATES or run.state == RunState.FAILED:
        raise InvalidState(run.id, str(run.state), "pause it")
    engine.store.request(run_id, "pause", actor=actor, reason=reason or "pause requested")
    if run.state in (RunState.QUEUED, RunState.WAITING, RunState.INTERRUPTED):
        settle(engine, run_id, RunState.PAUSED, f"paused by {actor}", actor)
    return engine.view(run_id)


def cancel(engine: Engine, run_id: str, *, actor: str, reason: str = "", rollback: bool = False,
           principal: Principal | None = None) -> RunView:  # fmt: skip
    """Stop a run for good: an executing step's process is stopped; an idle run is cancelled at once.

    With ``rollback`` the rollback actions of its completed steps run first, last first (by its executor, or
    here for an idle run), journaled and resumed after a crash. Without it, the view's notices name the completed
    steps whose rollback actions were not run.
    """
    from runner.engine.execution import DriveOptions

    run = engine.store.get_run(run_id)
    engine.authorize(principal, Action.CANCEL, run)
    if rollback and run.state == RunState.CANCELLED and _undoable(engine, run_id):
        roll_back_cancelled(engine, run_id, actor)  # a plain cancel left them (and said so): run them now
        return engine.view(run_id)
    if run.state in TERMINAL_STATES:
        raise InvalidState(run.id, str(run.state), "cancel it")
    why = reason or f"cancelled by {actor}"
    engine.store.request(run_id, "cancel", actor=actor, reason=why, data={"rollback": True} if rollback else None)
    cancel_children(engine, run_id, why)  # a sub-runbook in flight stops now, not when its parent next looks
    if run.state == RunState.RUNNING and not holder_gone(run):  # its executor sees the request at once and finishes it
        return _requested(engine, run_id, why, rollback)
    left = _undoable(engine, run_id)
    if rollback and left:  # the rollback runs here, journaled and resumable, then the run is cancelled
        engine.drive(run_id, DriveOptions(actor=actor, take_lock=False, wait_in_process=False, detach=False, accept_changes=True))
        return engine.view(run_id)
    if left:
        why += f"; not rolled back: {', '.join(left)}"
        engine.notices.append(f"completed steps with a rollback action that was not run: {', '.join(left)} "
                              f"(`runbook cancel {run_id} --rollback` runs them)")  # fmt: skip
    settle(engine, run_id, RunState.CANCELLED, why, actor)
    return engine.view(run_id)


def _requested(engine: Engine, run_id: str, why: str, rollback: bool) -> RunView:
    """The answer to a cancel of a run another live executor holds: requested, done by that executor (exit 0)."""
    view = engine.view(run_id)
    if view.state != RunState.RUNNING:  # it was quicker than this answer
        return view
    run = engine.store.get_run(run_id)
    who = run.holder.label() if run.holder else "its executor"
    then = "runs the rollback actions of the completed steps, then cancels it" if rollback else "stops its step in flight and cancels it"
    note = f"cancel requested ({why}); the run's executor ({who}) {then}; `runbook status {run_id}` shows when it is cancelled"
    engine.notices.append(note)
    return view.model_copy(update={"reason": f"cancel requested: {why}; {who} applies it", "exit_code": 0})


def _undoable(engine: Engine, run_id: str) -> list[str]:
    """Completed steps of the run that have a rollback action, last first."""
    from runner.store.records import StepState

    run = engine.store.get_run(run_id)
    try:
        spec = engine.runbook_for(run).spec
    except Exception:  # the runbook is gone or broken: nothing to report, the cancel itself must still work
        return []
    done = {s.step_id for s in engine.store.get_steps(run_id) if s.state == StepState.SUCCEEDED}
    return [s.id for s in reversed(spec.steps) if s.rollback is not None and s.id in done]


def cancel_children(engine: Engine, run_id: str, reason: str) -> None:
    """Cancel the sub-runbook runs of ``run_id`` that are still active."""
    for child in engine.store.list_runs(parent=run_id, limit=1000):
        if child.state not in TERMINAL_STATES and child.state != RunState.FAILED:
            engine.cancel(child.id, actor="parent run", reason=f"parent run {run_id} cancelled: {reason}", principal=_system())


def _system() -> Principal:
    return Principal("worker", "runbook")


def approve_or_deny(engine: Engine, run_id: str, *, actor: str, approve: bool, comment: str = "", step_id: str | None = None,
                    principal: Principal | None = None) -> RunView:  # fmt: skip
    """Record an approval or a denial for the approval the run waits on (a sub-runbook's, through its parent)."""
    from runner.engine.approvals import check_vote, late

    run = engine.store.get_run(run_id)
    engine.authorize(principal, Action.APPROVE, run)
    vote = Vote(actor, approve, comment, time.time())
    point = check_vote(engine, run, engine.store.get_steps(run_id), vote, step_id)
    kind = "approve" if approve else "deny"
    event = engine.store.request(point.run.id, kind, actor=actor, reason=comment or f"{kind}d",
                                 data={"step_id": point.step.step_id, "comment": comment})  # fmt: skip
    late(point, event.ts, kind, recorded=True)
    _wake_parents(engine, point.run.id, actor, f"{kind}d in sub-runbook run {point.run.id}")
    return engine.view(run_id)


def decide_step(engine: Engine, run_id: str, step_id: str, choice: str, *, actor: str, principal: Principal | None = None) -> RunView:
    """Record a decision on a step whose outcome is unknown (or that failed): ``retry`` it or ``skip`` it."""
    from runner.engine.decisions import check_decision, check_undecided, pending

    if choice not in ("retry", "skip"):
        from runner.errors import UsageError

        raise UsageError(f"a decision is 'retry' or 'skip', not {choice!r}")
    run = engine.store.get_run(run_id)
    engine.authorize(principal, Action.DECIDE, run)
    how: Literal["retry", "skip"] = "retry" if choice == "retry" else "skip"
    check_decision(run, engine.store.get_steps(run_id), step_id, how)
    check_undecided(run_id, step_id, how, pending(engine.store, run_id))
    engine.store.request(run_id, "decide", actor=actor, reason=f"{choice} step '{step_id}'", data={"step_id": step_id, "decision": how})
    _wake_parents(engine, run_id, actor, f"a decision in sub-runbook run {run_id}")
    return engine.view(run_id)


def retry(engine: Engine, run_id: str, *, actor: str, principal: Principal | None = None) -> RunView:
    """Record a retry of a failed run whose cause was fixed; the run's driver retries its failed steps with ``resume``."""
    from runner.engine.decisions import check_retry

    run = engine.store.get_run(run_id)
    engine.authorize(principal, Action.RETRY, run)
    check_retry(run)
    engine.store.request(run_id, "retry", actor=actor, reason=f"retry requested by {actor}")
    return engine.view(run_id)


def _wake_parents(engine: Engine, run_id: str, actor: str, reason: str) -> None:
    """Sub-runbook runs are driven by their parent: wake the whole chain for workers."""
    parent = engine.store.get_run(run_id).parent_run_id
    while parent is not None:
        engine.store.request(parent, "wake", actor=actor, reason=reason)
        parent = engine.store.get_run(parent).parent_run_id
