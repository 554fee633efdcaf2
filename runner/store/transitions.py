"""The state machines of runs and steps: one table each, (state, event) → state.

Every state change the engine (or a request from outside) makes to a run or a step goes
through :func:`run_after` / :func:`step_after`; a pair the table does not list is a bug and
raises :class:`~runner.errors.InvalidTransition` instead of writing an impossible state.
``docs/durability.md`` prints both tables (:func:`markdown`); ``tests/test_transitions.py``
walks them exhaustively.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from runner.errors import InvalidTransition
from runner.store.records import RunState, StepState

__all__ = ["RUN_TABLE", "STEP_TABLE", "RunEvent", "StepEvent", "markdown", "run_after", "step_after"]

R, S = RunState, StepState


class RunEvent(enum.StrEnum):
    """What happens to a run."""

    DRIVE = "drive"  # an executor takes the run (start, resume, recovery of a dead executor's run)
    PAUSE = "pause"  # stopped at a step boundary (request, budget, max steps), or an idle run paused
    WAIT = "wait"  # a step waits (time, approval, decision), no process needed
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    INTERRUPT = "interrupt"  # SIGINT/SIGTERM
    REQUEUE = "requeue"  # handed back to the workers (server)


class StepEvent(enum.StrEnum):
    """What happens to a step (or to one fan-out target)."""

    BEGIN = "begin"  # an attempt's action starts (or a fan-out step starts its targets)
    SATISFY = "satisfy"  # its check held
    SKIP = "skip"  # its `when` is false, or a person skipped it
    BLOCK = "block"  # its precondition did not hold
    SUCCEED = "succeed"
    FAIL = "fail"
    WAIT = "wait"  # waits for time, an approval (its own or a gate), a sub-runbook or a decision
    RELEASE = "release"  # back to pending without finishing: an attempt failed with retries left, a gate approved,
    # a pause between targets or in a sub-runbook, recovery through check/rerun/verify
    LOSE = "lose"  # its executor stopped mid-action and nothing says whether the action took effect
    INTERRUPT = "interrupt"  # a signal cut the action short
    RETRY = "retry"  # a decision or `retry` asks for it again
    HOLD = "hold"  # a fan-out target held back because too many others failed
    ROLL_BACK = "roll_back"
    REMOVE = "remove"  # an accepted edit removed the step from the runbook: it is closed as skipped


_ACTIVE = (R.QUEUED, R.RUNNING, R.PAUSED, R.WAITING, R.INTERRUPTED)

RUN_TABLE: dict[tuple[RunState, RunEvent], RunState] = {
    **{(s, RunEvent.DRIVE): R.RUNNING for s in (*_ACTIVE, R.FAILED)},
    **{(s, RunEvent.PAUSE): R.PAUSED for s in (R.RUNNING, R.QUEUED, R.WAITING, R.INTERRUPTED)},
    (R.RUNNING, RunEvent.WAIT): R.WAITING,
    (R.RUNNING, RunEvent.SUCCEED): R.SUCCEEDED,
    (R.RUNNING, RunEvent.FAIL): R.FAILED,
    **{(s, RunEvent.CANCEL): R.CANCELLED for s in (*_ACTIVE, R.FAILED)},
    (R.RUNNING, RunEvent.INTERRUPT): R.INTERRUPTED,
    **{(s, RunEvent.REQUEUE): R.QUEUED for s in (R.QUEUED, R.RUNNING, R.PAUSED, R.WAITING, R.INTERRUPTED)},
}
"""Run state x event -> run state. ``succeeded`` and ``cancelled`` are final; ``failed`` is left only by a retry
or a decision (``drive``) or a cancel."""

_DONE = (S.SKIPPED, S.SATISFIED, S.SUCCEEDED, S.ROLLED_BACK)
_UNDECIDED = (S.UNKNOWN, S.FAILED, S.BLOCKED, S.INTERRUPTED, S.NOT_STARTED)

STEP_TABLE: dict[tuple[StepState, StepEvent], StepState] = {
    (S.PENDING, StepEvent.BEGIN): S.RUNNING,
    (S.WAITING, StepEvent.BEGIN): S.RUNNING,
    (S.PENDING, StepEvent.SATISFY): S.SATISFIED,
    (S.PENDING, StepEvent.SKIP): S.SKIPPED,
    (S.PENDING, StepEvent.BLOCK): S.BLOCKED,
    (S.RUNNING, StepEvent.SUCCEED): S.SUCCEEDED,
    (S.WAITING, StepEvent.SUCCEED): S.SUCCEEDED,
    (S.PENDING, StepEvent.FAIL): S.FAILED,  # its config or a template cannot be rendered
    (S.RUNNING, StepEvent.FAIL): S.FAILED,
    (S.WAITING, StepEvent.FAIL): S.FAILED,  # denied, expired, a sub-runbook failed, or the run cancelled
    (S.UNKNOWN, StepEvent.FAIL): S.FAILED,  # the run was cancelled before anyone decided
    (S.INTERRUPTED, StepEvent.FAIL): S.FAILED,
    (S.PENDING, StepEvent.WAIT): S.WAITING,  # an agent-policy gate before the action
    (S.RUNNING, StepEvent.WAIT): S.WAITING,
    (S.WAITING, StepEvent.WAIT): S.WAITING,
    (S.RUNNING, StepEvent.RELEASE): S.PENDING,
    (S.WAITING, StepEvent.RELEASE): S.PENDING,
    (S.INTERRUPTED, StepEvent.RELEASE): S.PENDING,
    (S.PENDING, StepEvent.RELEASE): S.PENDING,
    (S.RUNNING, StepEvent.LOSE): S.UNKNOWN,
    (S.INTERRUPTED, StepEvent.LOSE): S.UNKNOWN,
    (S.RUNNING, StepEvent.INTERRUPT): S.INTERRUPTED,
    **{(s, StepEvent.RETRY): S.PENDING for s in (*_UNDECIDED, S.ROLLED_BACK)},
    **{(s, StepEvent.SKIP): S.SKIPPED for s in _UNDECIDED},
    (S.PENDING, StepEvent.HOLD): S.NOT_STARTED,
    (S.SUCCEEDED, StepEvent.ROLL_BACK): S.ROLLED_BACK,
    **{(s, StepEvent.REMOVE): S.SKIPPED for s in (S.PENDING, S.RUNNING, S.WAITING, *_UNDECIDED)},
}
"""Step state x event -> step state (fan-out targets use the same table)."""


def run_after(state: RunState, event: RunEvent) -> RunState:
    """The run state ``event`` leads to from ``state``; :class:`InvalidTransition` if it cannot happen."""
    try:
        return RUN_TABLE[(state, event)]
    except KeyError:
        raise InvalidTransition("run", str(state), str(event)) from None


def step_after(state: StepState | str, event: StepEvent) -> StepState:
    """The step state ``event`` leads to from ``state``; :class:`InvalidTransition` if it cannot happen."""
    try:
        return STEP_TABLE[(StepState(state), event)]
    except (KeyError, ValueError):
        raise InvalidTransition("step", str(state), str(event)) from None


def markdown() -> str:
    """Both tables as Markdown (rows: states; columns: events; cells: the next state), for the docs."""
    return _table("run", RunState, RunEvent, RUN_TABLE) + "\n" + _table("step", StepState, StepEvent, STEP_TABLE)


def _table(what: str, states: type[enum.StrEnum], events: type[enum.StrEnum], table: Mapping[tuple[Any, Any], Any]) -> str:
    cols = list(events)
    lines = [f"| {what} state | " + " | ".join(f"`{e}`" for e in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for state in states:
        cells = [str(table.get((state, e), "")) for e in cols]
        lines.append(f"| `{state}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
