"""Finding the approval a run waits on, recording decisions on it, and telling where it stands.

The rules themselves (who may decide, what counts, expiry) belong to the approval step type
(:class:`runner.steptypes.Approvable`); this module only finds the request — an ``approval`` step, an
agent-policy gate, or the approval a sub-runbook's run waits on — and hands the recorded votes to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from runner.errors import InvalidState, UsageError
from runner.steptypes import Approvable, Tally, Vote
from runner.store.progress import WaitKind
from runner.store.records import RunRecord, RunState, StepRecord, StepState

if TYPE_CHECKING:
    from runner.engine.engine import Engine

__all__ = ["Point", "find_point", "late", "votes_for"]


@dataclass
class Point:
    """An approval request a run waits on: the run and step it belongs to, its config and state, its step type."""

    run: RunRecord
    step: StepRecord
    config: dict[str, Any]
    state: dict[str, Any]
    approvable: Approvable
    gate: bool = False

    def tally(self, votes: list[Vote], now: float | None = None) -> Tally:
        """Where the request stands."""
        return self.approvable.tally(self.config, self.state, votes, self.run.started_by, time.time() if now is None else now)


def find_point(engine: Engine, run: RunRecord, steps: list[StepRecord], step_id: str | None = None) -> Point | None:
    """The approval ``run`` waits on (following a waiting sub-runbook step to its run), or None."""
    waiting = [s for s in steps if s.state == StepState.WAITING and s.progress.waiting == WaitKind.APPROVAL]
    if step_id is not None:
        waiting = [s for s in waiting if s.step_id == step_id]
    if not waiting:
        return None
    rec = waiting[0]
    if rec.progress.child is not None and not rec.progress.gate_pending:
        child = engine.store.get_run(rec.progress.child.run_id)
        return find_point(engine, child, engine.store.get_steps(child.id))
    approvable = cast(Approvable, engine.host.step_types.get("approval"))
    if rec.progress.gate_pending and rec.progress.gate is not None:
        from runner.store.progress import RunOptions

        config = RunOptions.from_json(run.options).gates.get(rec.step_id, {})
        return Point(run, rec, config, rec.progress.gate.state, approvable, gate=True)
    step_type = engine.host.step_types.get(engine.runbook_for(run).spec.step(rec.step_id).action.type)
    if isinstance(step_type, Approvable):
        approvable = step_type
    config = engine.runbook_for(run).spec.step(rec.step_id).action.config
    return Point(run, rec, config, rec.progress.local, approvable)


def votes_for(engine: Engine, point: Point) -> list[Vote]:
    """Every decision recorded on ``point``'s request, in order."""
    request = point.approvable.request_of(point.state)
    since = request.since_seq if request is not None else 0
    events = engine.store.events(point.run.id, after=since, types=("request.approve", "request.deny"), limit=100_000)
    return [Vote(e.actor or "", e.type == "request.approve", str(e.data.get("comment", "")), e.ts) for e in events
            if e.step_id == point.step.step_id]  # fmt: skip


def check_vote(engine: Engine, run: RunRecord, steps: list[StepRecord], vote: Vote, step_id: str | None) -> Point:
    """The approval ``vote`` goes to; raises (naming the rule) if it may not be recorded."""
    verb = "approve" if vote.approve else "deny"
    if run.state not in (RunState.WAITING, RunState.RUNNING, RunState.PAUSED):
        raise InvalidState(run.id, str(run.state), f"{verb} it (nothing is waiting for approval)")
    point = find_point(engine, run, steps, step_id)
    if point is None:
        if step_id is not None:
            raise UsageError(f"step '{step_id}' of run {run.id} is not waiting for approval")
        raise InvalidState(run.id, str(run.state), f"{verb} it: no step is waiting for approval")
    late(point, vote.ts, verb)
    votes = votes_for(engine, point)
    try:
        point.approvable.admit(point.config, point.state, vote, point.run.started_by, votes)
    except UsageError as exc:
        raise UsageError(f"cannot {verb} step '{point.step.step_id}' of run {point.run.id}: {exc.message}", hint=exc.hint) from None
    return point


def late(point: Point, at: float, verb: str, *, recorded: bool = False) -> None:
    """Refuse a decision made (or, ``recorded``, journaled: the store's clock) at or after the request expired.

    It would not count (expiry and ``on_expiry`` decide then), so it is refused before it is recorded, and reported
    as not counting if the store's clock put it past the expiry."""
    from runner.views import iso

    request = point.approvable.request_of(point.state)
    expires_at = request.expires_at if request is not None else None
    if expires_at is None or at < expires_at:
        return
    on_expiry = point.tally([], at).on_expiry
    expired = f"its approval request expired at {iso(expires_at)}"
    sid, rid = point.step.step_id, point.run.id
    if recorded:
        what = "approval" if verb == "approve" else "denial"
        message = f"the {what} of step '{sid}' of run {rid} was recorded at {iso(at)}, after {expired}: it does not count"
    else:
        message = f"cannot {verb} step '{sid}' of run {rid}: {expired}"
    raise UsageError(message, hint=f"resume the run (`runbook resume {rid}`) to apply on_expiry: {on_expiry}")
