"""``next``: what the caller should do with a run, as a pure function of the run's typed state.

:func:`next_action` takes a :class:`Snapshot` (the run, its steps, and the facts read beside them: whether its
executor lives, where a waiting approval stands, decisions recorded but not applied, why it paused) and a
:class:`CommandHint` (how the caller spells commands), and returns the one :class:`~runner.views.NextAction`
that every surface shows. An agent never improvises: it runs ``next.command`` at or after ``next.not_before``
until ``next.action`` is ``none`` or ``handoff``; a person's ``human_command`` only *records* a decision
(approve, deny, decide, retry) and the driver continues with ``resume``.

=================  ==========================================================================================
action             when, and what the command does
=================  ==========================================================================================
none               succeeded or cancelled
resume             paused, queued, interrupted, recovered, a decision or retry recorded, an approval settled,
                   a detached executor (or a dead one) holds it: ``resume`` continues
wait               a wait step (or a sub-runbook's) is not due: ``resume`` at ``not_before``
await_approval     people must decide: ``human_command`` approves (deny in ``options``); ``resume`` polls
decide             a step's outcome is unknown: ``human_command`` records ``--retry-step``/``--skip-step``
fix_and_retry      failed: after the cause is fixed, ``human_command`` (``runbook retry``) records the retry;
                   cancelled with a failed rollback: ``human_command`` (``cancel --rollback``) runs the rollbacks left
wait_elsewhere     another live executor holds it: ``status`` at ``not_before`` (never ``resume``)
conflict           its lock key is held by another run (``holder``): start again when that run is over
handoff            no budget the caller gave can fit the next step: a bigger budget, or a person, continues
=================  ==========================================================================================
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from runner.steptypes import APPROVAL_POLL
from runner.store.progress import Recovery, WaitKind
from runner.store.records import DONE_STEP_STATES, IN_FLIGHT_STEP_STATES, RunRecord, RunState, StepRecord, StepState
from runner.views import NextAction, iso

if TYPE_CHECKING:
    from runner.steptypes import Tally

__all__ = [
    "HELD_ALIVE", "HELD_DETACHED", "HELD_GONE", "CommandHint", "PauseCause", "Snapshot", "conflict_next", "next_action", "reason_now",
]  # fmt: skip

_ELSEWHERE_POLL = 2.0
_PERSON_POLL = 30.0


@dataclass
class CommandHint:
    """How to spell follow-up commands: global options to repeat and flags to carry over."""

    prefix: list[str] = field(default_factory=list)
    json: bool = False
    budget: str | None = None
    max_steps: int | None = None
    resume_verb: str = "resume"

    def command(self, verb: str, run_id: str, *extra: str, carry: bool = True) -> str:
        """``runbook [prefix] VERB RUN [extra] [--budget ..] [--json]``."""
        args = ["runbook", *self.prefix, verb, run_id, *extra]
        if carry and self.budget:
            args += ["--budget", self.budget]
        if carry and self.max_steps:
            args += ["--max-steps", str(self.max_steps)]
        if self.json:
            args.append("--json")
        return shlex.join(args)

    def person(self, verb: str, run_id: str, *extra: str) -> str:
        """A command for a person (no budget; ``--json`` when the caller reads JSON, so the answer stays machine-read)."""
        return shlex.join(["runbook", *self.prefix, verb, run_id, *extra, *(["--json"] if self.json else [])])

    def fitting(self, seconds: int) -> CommandHint:
        """This hint with a budget of at least ``seconds`` (a caller without a budget keeps none: nothing limits it)."""
        from runner.durations import parse_duration

        if self.budget is None or parse_duration(self.budget) >= seconds:
            return self
        return self.with_budget(seconds)

    def with_budget(self, seconds: float) -> CommandHint:
        """This hint with the budget ``seconds``."""
        return replace(self, budget=f"{seconds:g}s")


HELD_ALIVE, HELD_DETACHED, HELD_GONE = "alive", "detached", "gone"
"""Who holds a running run: a live executor, a live detached executor (``resume`` picks it up), or nobody alive."""


@dataclass(frozen=True)
class PauseCause:
    """Why a paused run paused (its latest ``run.paused`` event): ``budget_fits`` marks a hand-off."""

    cause: str = ""
    budget_fits: int | None = None
    estimate: float | None = None


@dataclass
class Snapshot:
    """A run's typed state and the facts read beside it that ``next`` depends on."""

    run: RunRecord
    steps: list[StepRecord]
    holding: str = HELD_GONE
    tally: Tally | None = None
    approval_run: str | None = None
    """The run whose approval the run waits on (itself, or a sub-runbook's run)."""
    decisions_recorded: bool = False
    pause: PauseCause = field(default_factory=PauseCause)
    child: NextAction | None = None
    """The next of the sub-runbook run a waiting step waits on (a decision there)."""


def next_action(s: Snapshot, hint: CommandHint) -> NextAction:
    """The one thing to do next with the run in ``s`` (see the module doc's table)."""
    run = s.run
    stuck = next((r for r in s.steps if r.progress.rollback is not None and r.progress.rollback.failed), None)
    if run.state == RunState.CANCELLED and stuck is not None:
        return _rollback_failed(s, stuck, hint)
    if run.state in (RunState.SUCCEEDED, RunState.CANCELLED):
        return NextAction(action="none", reason=f"run {run.state}")
    if s.decisions_recorded and run.state != RunState.RUNNING:
        return _resume(s, hint, "a decision was recorded; resume applies it")
    if run.state == RunState.FAILED:
        return _failed(s, hint)
    if run.state == RunState.RUNNING:
        return _running(s, hint)
    if run.state == RunState.WAITING:
        return _waiting(s, hint)
    if run.state == RunState.PAUSED and s.pause.budget_fits is not None:
        return _handoff(s, hint)
    cut = next((r for r in s.steps if r.state == StepState.INTERRUPTED and r.progress.recovery == Recovery.UNKNOWN), None)
    if run.state == RunState.INTERRUPTED and cut is not None:  # resuming would only ask the same question
        return _decide(s, cut, hint, f"step '{cut.step_id}' was interrupted in its action; it has no check and is not "
                                     "idempotent, so whether it took effect is unknown")  # fmt: skip
    return _resume(s, hint, run.reason or f"run {run.state}")


def reason_now(s: Snapshot) -> str:
    """The run's reason as it is now: a waiting approval's is told from its tally (decisions recorded since the run
    last wrote its reason), so an approved run never reads "waiting for 1 approval(s)"."""
    tally, run = s.tally, s.run
    if run.state != RunState.WAITING or tally is None:
        return run.reason
    step = next((r.step_id for r in s.steps if r.state == StepState.WAITING), run.cursor)
    if tally.outcome == "approved":
        return f"step '{step}': approved by {', '.join(tally.approved_by)}; resume goes on"
    if tally.outcome == "denied":
        return f"step '{step}': denied by {tally.denied_by}; resume records the step as failed"
    if tally.outcome == "expired":
        return f"step '{step}': the approval request expired (on_expiry: {tally.on_expiry}); resume applies it"
    return f"step '{step}': {tally.text}" if tally.text else run.reason


def _first_open(s: Snapshot) -> str | None:
    return next((r.step_id for r in s.steps if r.state not in DONE_STEP_STATES), s.run.cursor)


def _resume(s: Snapshot, hint: CommandHint, reason: str, *, not_before: float | None = None, step: str | None = None) -> NextAction:
    return NextAction(action="resume", step=step or _first_open(s), command=hint.command(hint.resume_verb, s.run.id),
                      not_before=iso(not_before), reason=reason)  # fmt: skip


def _failed(s: Snapshot, hint: CommandHint) -> NextAction:
    rid = s.run.id
    failed = next((r for r in s.steps if r.state in (StepState.FAILED, StepState.BLOCKED, *IN_FLIGHT_STEP_STATES)), None)
    step = failed.step_id if failed is not None else s.run.cursor
    retry = hint.person("retry", rid)
    return NextAction(
        action="fix_and_retry", step=step, command=hint.command("status", rid, carry=False), not_before=iso(time.time() + _PERSON_POLL),
        reason=_also(s.run.reason, f"fix the cause, then record a retry: {retry}"), human_command=retry,
        then=hint.command(hint.resume_verb, rid),
        options=[{"action": "retry", "command": hint.command("resume", rid, "--retry"),
                  "meaning": "the cause is fixed: retry the failed steps now (drives the run)"}],
    )  # fmt: skip


def _rollback_failed(s: Snapshot, rec: StepRecord, hint: CommandHint) -> NextAction:
    """A cancelled run whose rollback of ``rec`` failed: what the step changed is still in place; a person must act."""
    rid, sid = s.run.id, rec.step_id
    again = hint.person("cancel", rid, "--rollback")
    why = rec.progress.rollback.failed if rec.progress.rollback is not None else ""
    return NextAction(
        action="fix_and_retry", step=sid, command=hint.command("status", rid, carry=False), not_before=iso(time.time() + _PERSON_POLL),
        human_command=again, reason=f"run cancelled, but the rollback of step '{sid}' failed ({why}): what it changed is still in "
                                    f"place; fix the cause, then run the rollbacks left again: {again} (or undo it by hand)",
    )  # fmt: skip


def _running(s: Snapshot, hint: CommandHint) -> NextAction:
    run, rid = s.run, s.run.id
    step = next((r.step_id for r in s.steps if r.state in IN_FLIGHT_STEP_STATES), None) or _first_open(s)
    who = run.holder.label() if run.holder else "its executor"
    if s.holding == HELD_GONE:
        return _resume(s, hint, f"{who} is no longer running; resume recovers the run", step=step)
    if s.holding == HELD_DETACHED:
        return _resume(s, hint, f"step '{step}' runs in a detached executor ({who}); resume waits for it within its budget "
                                "and goes on", not_before=time.time() + 1.0, step=step)  # fmt: skip
    return NextAction(action="wait_elsewhere", step=step, command=hint.command("status", rid, carry=False),
                      not_before=iso(time.time() + _ELSEWHERE_POLL), reason=f"being executed by {who}; check its status, never resume it",
                      holder=who, until=iso(run.lease_expires_at))  # fmt: skip


def _waiting(s: Snapshot, hint: CommandHint) -> NextAction:
    run, rid = s.run, s.run.id
    unknown = next(
        (r for r in s.steps if r.state == StepState.UNKNOWN or any(t.state == StepState.UNKNOWN for t in r.progress.targets.values())), None
    )
    if unknown is not None:
        return _decide(s, unknown, hint, unknown.reason or "some targets are in an unknown state")
    waiting = next((r for r in s.steps if r.state == StepState.WAITING), None)
    step = waiting.step_id if waiting is not None else run.cursor
    kind = waiting.progress.waiting if waiting is not None else None
    if s.tally is not None:
        return _approval(s, hint, step, s.tally)
    if kind == WaitKind.DECISION and s.child is not None:
        return s.child.model_copy(update={"reason": f"sub-runbook: {s.child.reason}"})
    not_before = waiting.not_before if waiting is not None else run.wake_at
    return NextAction(action="wait", step=step, command=hint.command(hint.resume_verb, rid), not_before=iso(not_before), reason=run.reason)


def _approval(s: Snapshot, hint: CommandHint, step: str | None, tally: Tally) -> NextAction:
    rid = s.run.id
    summary = {"approved_by": list(tally.approved_by), "needed": tally.needed, "expires_at": iso(tally.expires_at),
               "outcome": tally.outcome}  # fmt: skip
    if tally.outcome == "approved":
        return _resume(s, hint, f"approved by {', '.join(tally.approved_by)}: resume goes on", step=step).model_copy(
            update={"approvals": summary}
        )
    if tally.outcome == "denied":
        note = f" ({tally.comment})" if tally.comment else ""
        return _resume(s, hint, f"denied by {tally.denied_by}{note}: resume records the step as failed", step=step).model_copy(
            update={"approvals": summary}
        )
    if tally.outcome == "expired":
        then = "goes on as approved" if tally.on_expiry == "approve" else "fails the step"
        return _resume(s, hint, f"the approval request expired (on_expiry: {tally.on_expiry}): resume {then}", step=step).model_copy(
            update={"approvals": summary})  # fmt: skip
    who = s.approval_run or rid
    approve, deny = hint.person("approve", who, "--by", "NAME"), hint.person("deny", who, "--by", "NAME")
    need = tally.needed - len(tally.approved_by)
    so_far = f" ({', '.join(tally.approved_by)} approved)" if tally.approved_by else ""
    poll = time.time() + APPROVAL_POLL
    if tally.expires_at is not None:
        poll = min(poll, tally.expires_at)
    return NextAction(action="await_approval", step=step, command=hint.command(hint.resume_verb, rid), not_before=iso(poll),
                      reason=f"{s.run.reason or 'waiting for approval'}; {need} more approval(s) needed{so_far}; to refuse: {deny}",
                      human_command=approve, approvals=summary, then=hint.command(hint.resume_verb, rid),
                      options=[{"action": "approve", "command": approve, "meaning": "approve (records a decision)"},
                               {"action": "deny", "command": deny, "meaning": "deny: the step fails"}])  # fmt: skip


def _decide(s: Snapshot, rec: StepRecord, hint: CommandHint, reason: str) -> NextAction:
    """Someone must say whether ``rec``'s action took effect: run it again, or treat it as done."""
    rid, sid = s.run.id, rec.step_id
    retry, skip = hint.person("decide", rid, "--retry-step", sid), hint.person("decide", rid, "--skip-step", sid)
    return NextAction(
        action="decide", step=sid, reason=reason, command=hint.command("status", rid, carry=False),
        not_before=iso(time.time() + _PERSON_POLL), human_command=retry, then=hint.command(hint.resume_verb, rid),
        options=[
            {"action": "retry_step", "command": hint.command("resume", rid, "--retry-step", sid), "human_command": retry,
             "meaning": "run the step's action again"},
            {"action": "skip_step", "command": hint.command("resume", rid, "--skip-step", sid), "human_command": skip,
             "meaning": "treat the step as done and go on"},
        ],
    )  # fmt: skip


def _handoff(s: Snapshot, hint: CommandHint) -> NextAction:
    rid, fits = s.run.id, s.pause.budget_fits or 0
    estimate = f"{s.pause.estimate:g}s" if s.pause.estimate is not None else "more than the budget"
    return NextAction(action="handoff", step=s.run.cursor, command=hint.fitting(fits).command(hint.resume_verb, rid),
                      human_command=hint.person("resume", rid), budget_fits=fits, estimate=s.pause.estimate,
                      reason=f"step '{s.run.cursor}' needs {estimate}, more than any budget this caller gave can hold: hand it to "
                             f"a caller with --budget {fits}s or more, or to a person")  # fmt: skip


def conflict_next(run_id: str, lock_key: str, holder_run: str, hint: CommandHint) -> NextAction:
    """``next`` of a start refused because ``lock_key`` is held by ``holder_run`` (never a command on that run)."""
    return NextAction(action="conflict", step=None, command=hint.command("status", holder_run, carry=False),
                      not_before=iso(time.time() + _ELSEWHERE_POLL), holder=holder_run,
                      reason=f"lock '{lock_key}' is held by run {holder_run}; start this run again when that one is over")  # fmt: skip


def _also(reason: str, more: str) -> str:
    return f"{reason}; {more}" if reason else more
