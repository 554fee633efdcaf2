"""Decisions on steps and retries of failed runs: checked when recorded, applied by the next drive.

A person (or an agent allowed to) *records* a decision — ``runbook decide RUN --retry-step X`` /
``--skip-step X`` for a step whose outcome is unknown (or that failed), ``runbook retry RUN`` for a
failed run once its cause is fixed — as a ``request.decide`` / ``request.retry`` event. Nothing runs
in the decider's terminal: whoever drives the run (an agent, a worker, a person) continues with
``resume``, and that drive applies the decisions recorded since the previous drive began.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from runner.errors import UsageError
from runner.store.records import Event, NewEvent, RunRecord, RunState, StepRecord, StepState
from runner.store.transitions import StepEvent, step_after

if TYPE_CHECKING:
    from runner.store.base import Store

__all__ = [
    "DECISION_TYPES", "UNDECIDED", "apply_decision", "apply_retry", "check_decision", "check_retry", "check_undecided", "pending",
]  # fmt: skip

DECISION_TYPES = ("request.decide", "request.retry")
_DRIVES = ("run.started", "run.resumed")
UNDECIDED = frozenset({StepState.UNKNOWN, StepState.FAILED, StepState.BLOCKED, StepState.INTERRUPTED, StepState.NOT_STARTED})
"""States a decision may settle (never a waiting approval or gate, never a step that has not run)."""
_RETRYABLE = frozenset({StepState.FAILED, StepState.BLOCKED, StepState.ROLLED_BACK, StepState.NOT_STARTED})

Choice = Literal["retry", "skip"]


def pending(store: Store, run_id: str) -> list[Event]:
    """Decisions and retries recorded since the run's latest drive began (the next drive applies them)."""
    events = store.events(run_id, types=(*_DRIVES, *DECISION_TYPES), limit=1_000_000)
    last = max((i for i, e in enumerate(events) if e.type in _DRIVES), default=-1)
    return [e for e in events[last + 1 :] if e.type in DECISION_TYPES]


def _undecided_targets(rec: StepRecord) -> list[str]:
    return [n for n, t in rec.progress.targets.items() if t.state in UNDECIDED]


def check_decision(run: RunRecord, steps: Iterable[StepRecord], step_id: str, choice: Choice) -> StepRecord:
    """The step ``choice`` applies to; :class:`UsageError` if it is not one a decision may settle."""
    by_id = {s.step_id: s for s in steps}
    if step_id not in by_id:
        raise UsageError(f"run {run.id} has no step '{step_id}'; steps: {', '.join(by_id)}")
    rec = by_id[step_id]
    if rec.state not in UNDECIDED and not _undecided_targets(rec):
        raise UsageError(f"step '{step_id}' is {rec.state}; --{choice}-step decides only unknown, failed, blocked or interrupted "
                         "steps (an approval is given with `runbook approve`)")  # fmt: skip
    if run.state in (RunState.SUCCEEDED, RunState.CANCELLED):
        raise UsageError(f"run {run.id} is {run.state}: there is nothing left to decide")
    return rec


def check_undecided(run_id: str, step_id: str, choice: Choice, recorded: Iterable[Event]) -> None:
    """Refuse a second decision on ``step_id`` while one ``recorded`` for it waits for the next drive.

    Two decisions on one step cannot both apply: the first would be applied and the second dropped with a note. So,
    like an approval past the quorum, the second is refused (:class:`UsageError`, exit 2), naming the first.
    """
    from runner.views import iso

    for event in recorded:
        if event.type != "request.decide" or (event.step_id or event.data.get("step_id")) != step_id:
            continue
        earlier = str(event.data.get("decision") or "a decision")
        who = event.actor or "someone"
        same = "the same decision" if earlier == choice else f"a different decision ({earlier})"
        raise UsageError(
            f"step '{step_id}' of run {run_id} already has a decision recorded: {earlier}, by {who} at {iso(event.ts)}, not yet "
            f"applied; --{choice}-step would be {same}",
            hint=f"`runbook resume {run_id}` applies the recorded {earlier}; if the step needs a decision after that, decide again",
        )


def check_retry(run: RunRecord) -> None:
    """A retry is for a failed run; :class:`UsageError` otherwise."""
    if run.state != RunState.FAILED:
        raise UsageError(f"run {run.id} is {run.state}, not failed: there is nothing to retry",
                         hint=f"see `runbook status {run.id}` for what to do next")  # fmt: skip


def apply_decision(rec: StepRecord, choice: Choice, actor: str) -> NewEvent:
    """Settle ``rec`` (and its undecided targets) as ``choice``; returns the ``step.decision`` event."""
    event = StepEvent.RETRY if choice == "retry" else StepEvent.SKIP
    reason = f"{'retry' if choice == 'retry' else 'skipped'} decided by {actor}"
    targets = _undecided_targets(rec)
    if rec.state in UNDECIDED:
        rec.state = step_after(rec.state, event)
    rec.reason = reason
    if choice == "retry":
        rec.attempts = 0
        rec.progress.restart()
    rec.progress.phase = rec.progress.recovery = None
    for name in targets:
        t = rec.progress.targets[name]
        t.state, t.reason = str(step_after(t.state, event)), reason
        if choice == "retry":
            t.attempts = 0
            t.progress.restart()
    return NewEvent("step.decision", step_id=rec.step_id, actor=actor or None, data={"decision": choice, "targets": targets})


def apply_retry(steps: Iterable[StepRecord], actor: str) -> list[NewEvent]:
    """Reset the failed steps (and targets) of a failed run, and those a rollback undid, for another attempt."""
    events: list[NewEvent] = []
    for rec in steps:
        failed_targets = [n for n, t in rec.progress.targets.items() if t.state in _RETRYABLE]
        if rec.state not in _RETRYABLE and not failed_targets:
            continue
        undone = rec.state == StepState.ROLLED_BACK
        for t in rec.progress.targets.values():  # a rolled-back step's targets were rolled back with it
            if undone and t.state == StepState.SUCCEEDED:  # (a journal from before targets recorded their rollback)
                t.state = str(step_after(t.state, StepEvent.ROLL_BACK))
            if t.state in _RETRYABLE:
                t.state = str(step_after(t.state, StepEvent.RETRY))
                t.reason, t.attempts = "retry requested" + (" (rolled back)" if undone else ""), 0
                t.progress.restart()
        if rec.state in _RETRYABLE:
            rec.state = step_after(rec.state, StepEvent.RETRY)
        rec.reason, rec.attempts = f"retry requested by {actor}" + (" (it was rolled back)" if undone else ""), 0
        rec.progress.restart()
        rec.progress.rollback = None
        events.append(NewEvent("step.decision", step_id=rec.step_id, actor=actor or None, data={"decision": "retry"}))
    return events
