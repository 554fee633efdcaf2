"""Validating an approve/deny request before it is recorded."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

from runner.engine.views import iso
from runner.errors import InvalidState, UsageError
from runner.store.records import RunRecord, RunState, StepRecord, StepState

if TYPE_CHECKING:
    from runner.engine.engine import Engine

__all__ = ["Decision", "check_decision", "refuse_late"]


class Decision(NamedTuple):
    """Where a decision goes: the run and step, and when that step's approval request expires (if it does)."""

    run_id: str
    step_id: str
    expires_at: float | None = None
    on_expiry: str = "deny"


def check_decision(engine: Engine, run: RunRecord, steps: list[StepRecord], *, actor: str, approve: bool,
                   step_id: str | None) -> Decision:  # fmt: skip
    """The approval the decision applies to; raises if the decision is not allowed.

    When the waiting step is a sub-runbook that waits for an approval, the decision goes to that run's step
    (the parent's ``next`` names the parent run, which is what a human has at hand).
    """
    verb = "approve" if approve else "deny"
    if run.state not in (RunState.WAITING, RunState.RUNNING, RunState.PAUSED):
        raise InvalidState(run.id, str(run.state), f"{verb} it (nothing is waiting for approval)")
    waiting = [s for s in steps if s.state == StepState.WAITING and s.data.get("wait_kind") == "approval"]
    if step_id is not None:
        waiting = [s for s in waiting if s.step_id == step_id]
        if not waiting:
            raise UsageError(f"step '{step_id}' of run {run.id} is not waiting for approval")
    if not waiting:
        raise InvalidState(run.id, str(run.state), f"{verb} it: no step is waiting for approval")
    rec = waiting[0]
    child_id = (rec.data.get("state") or {}).get("child_run_id")
    if child_id and rec.data.get("gate") != "pending":
        child = engine.store.get_run(child_id)
        return check_decision(engine, child, engine.store.get_steps(child_id), actor=actor, approve=approve, step_id=None)
    if rec.data.get("gate") == "pending":
        config = (run.options.get("gates") or {}).get(rec.step_id, {})
    else:
        config = engine.runbook_for(run).spec.step(rec.step_id).action.config
    state_key = "gate_state" if rec.data.get("gate") == "pending" else "state"
    decision = Decision(run.id, rec.step_id, rec.data.get(state_key, {}).get("expires_at"), config.get("on_expiry", "deny"))
    refuse_late(decision, time.time(), verb)
    if config.get("distinct_from_starter") and actor == run.started_by:
        raise UsageError(f"{actor} started run {run.id} and cannot {verb} its step '{rec.step_id}' (distinct_from_starter)")
    allowed = config.get("allowed")
    if allowed and actor not in allowed:
        raise UsageError(f"{actor} may not {verb} step '{rec.step_id}'; allowed: {', '.join(allowed)}")
    since = int(rec.data.get(state_key, {}).get("since_seq", 0))
    earlier = engine.store.events(run.id, after=since, types=("request.approve", "request.deny"))
    if any(e.actor == actor and e.step_id == rec.step_id for e in earlier):
        raise UsageError(f"{actor} already decided on step '{rec.step_id}' of run {run.id}")
    return decision


def refuse_late(decision: Decision, at: float, verb: str, *, recorded: bool = False) -> None:
    """Refuse a decision made (or, ``recorded``, journaled: the store's clock) at or after the request expired.

    It would not count (the step counts decisions by their events' time and applies ``on_expiry``), so it is
    refused before it is recorded, and reported as not counting if the store's clock put it past the expiry."""
    if decision.expires_at is None or at < decision.expires_at:
        return
    expired = f"its approval request expired at {iso(decision.expires_at)}"
    if recorded:
        what = "approval" if verb == "approve" else "denial"
        message = f"the {what} of step '{decision.step_id}' of run {decision.run_id} was recorded at {iso(at)}, after {expired}: it does not count"
    else:
        message = f"cannot {verb} step '{decision.step_id}' of run {decision.run_id}: {expired}"
    raise UsageError(message, hint=f"resume the run (`runbook resume {decision.run_id}`) to apply on_expiry: {decision.on_expiry}")
