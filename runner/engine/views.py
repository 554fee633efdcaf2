"""What callers see of a run: the documented JSON shape and the ``next`` cursor.

``next`` always says what the caller should do next and, where a command does
it, the exact command; ``not_before`` says when doing it again is useful. An
agent never has to improvise: it runs ``next.command`` at or after
``next.not_before`` until ``next.action`` is ``none``.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from runner.errors import ExitCode
from runner.steptypes import APPROVAL_POLL
from runner.store.records import DONE_STEP_STATES, IN_FLIGHT_STEP_STATES, RunRecord, RunState, StepRecord, StepState

__all__ = ["CommandHint", "NextAction", "RunView", "StepView", "build_view", "exit_code_for", "iso"]


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EXIT = {
    RunState.SUCCEEDED: ExitCode.SUCCEEDED,
    RunState.FAILED: ExitCode.FAILED,
    RunState.PAUSED: ExitCode.PAUSED,
    RunState.QUEUED: ExitCode.PAUSED,
    RunState.WAITING: ExitCode.WAITING,
    RunState.CANCELLED: ExitCode.CANCELLED,
    RunState.INTERRUPTED: ExitCode.INTERRUPTED,
    RunState.RUNNING: ExitCode.CONFLICT,
}


def exit_code_for(state: RunState) -> ExitCode:
    """Exit code of ``run``/``resume``/``step`` that leave a run in ``state``."""
    return _EXIT[state]


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

    def at_least(self, seconds: float) -> CommandHint:
        """This hint, its budget raised to ``seconds`` if it carries a smaller one (no budget stays none)."""
        from runner.durations import parse_duration

        if self.budget is None or parse_duration(self.budget) >= seconds:
            return self
        return replace(self, budget=f"{seconds:g}s")


class NextAction(BaseModel):
    """What to do next with a run."""

    action: str = Field(description="none | resume | wait | await_approval | decide | fix_and_retry")
    step: str | None = None
    command: str | None = Field(default=None, description="exact command to run next (None: nothing to run)")
    not_before: str | None = Field(default=None, description="ISO time before which running the command is pointless")
    reason: str = ""
    human_command: str | None = Field(default=None, description="exact command a person runs for the run to go on (NAME: who approves)")
    options: list[dict[str, str]] = Field(default_factory=list, description="choices when a decision is needed")


class StepView(BaseModel):
    """One step in a run view."""

    id: str
    state: StepState
    attempts: int
    output: Any = None
    started_at: str | None = None
    finished_at: str | None = None
    reason: str = ""
    not_before: str | None = None
    targets: dict[str, Any] | None = None


class RunView(BaseModel):
    """The documented JSON shape of ``run``/``resume``/``step``/``status --json``."""

    run_id: str
    runbook: str
    state: RunState
    reason: str = ""
    exit_code: int
    params: dict[str, Any]
    started_by: str
    trigger: dict[str, Any] | None = None
    created_at: str | None
    updated_at: str | None
    finished_at: str | None = None
    parent_run_id: str | None = None
    executor: str | None = None
    steps: list[StepView]
    next: NextAction


def _next(run: RunRecord, steps: list[StepRecord], hint: CommandHint, holder_gone: bool) -> NextAction:
    rid, state = run.id, run.state
    current = next((s for s in steps if s.step_id == run.cursor), None)
    if state in (RunState.SUCCEEDED, RunState.CANCELLED):
        return NextAction(action="none", reason=f"run {state}")
    if state == RunState.FAILED:
        failed = next((s for s in steps if s.state in (StepState.FAILED, StepState.BLOCKED, *IN_FLIGHT_STEP_STATES)), current)
        retry = hint.command("resume", rid, "--retry")
        return NextAction(action="fix_and_retry", step=failed.step_id if failed else None, command=retry,
                          reason=_also(run.reason, "fix the cause, then retry"), human_command=retry)  # fmt: skip
    if state == RunState.RUNNING and holder_gone:
        who = run.holder.label() if run.holder else "its executor"
        return NextAction(action="resume", step=_in_flight(steps, run), command=hint.command(hint.resume_verb, rid),
                          reason=f"{who} is no longer running; resume recovers the run")  # fmt: skip
    if state == RunState.RUNNING:
        who = run.holder.label() if run.holder else "an executor"
        return NextAction(action="wait", step=_in_flight(steps, run), command=hint.command("status", rid, carry=False),
                          not_before=iso(time.time() + 2), reason=f"being executed by {who}")  # fmt: skip
    if state == RunState.WAITING:
        return _waiting(run, steps, hint, current)
    cut = next((s for s in steps if s.state == StepState.INTERRUPTED and s.data.get("recovery") == "unknown"), None)
    if state == RunState.INTERRUPTED and cut is not None:  # resuming would only ask the same question
        return _decide(run, cut, hint, f"step '{cut.step_id}' was interrupted in its action; it has no check and is not "
                                         "idempotent, so whether it took effect is unknown")  # fmt: skip
    step = next((s.step_id for s in steps if s.state not in DONE_STEP_STATES), run.cursor)
    return NextAction(action="resume", step=step, command=hint.command(hint.resume_verb, rid), reason=run.reason or f"run {state}")


def _decide(run: RunRecord, rec: StepRecord, hint: CommandHint, reason: str) -> NextAction:
    """Someone must say whether ``rec``'s action took effect: run it again, or treat it as done."""
    sid = rec.step_id
    return NextAction(
        action="decide", step=sid, reason=reason,
        options=[
            {"action": "retry_step", "command": hint.command("resume", run.id, "--retry-step", sid),
             "meaning": "run the step's action again"},
            {"action": "skip_step", "command": hint.command("resume", run.id, "--skip-step", sid),
             "meaning": "treat the step as done and go on"},
        ],
    )  # fmt: skip


def _also(reason: str, more: str) -> str:
    return f"{reason}; {more}" if reason else more


def _in_flight(steps: list[StepRecord], run: RunRecord) -> str | None:
    """The step a running run is executing: its step row says ``running`` (else the first not done)."""
    step = next((s for s in steps if s.state in IN_FLIGHT_STEP_STATES), None) or next(
        (s for s in steps if s.state not in DONE_STEP_STATES), None
    )
    return step.step_id if step is not None else run.cursor


def _waiting(run: RunRecord, steps: list[StepRecord], hint: CommandHint, current: StepRecord | None) -> NextAction:
    rid = run.id
    unknown = next((s for s in steps if s.state == StepState.UNKNOWN), None)
    if unknown is not None:
        return _decide(run, unknown, hint, unknown.reason)
    waiting = next((s for s in steps if s.state == StepState.WAITING), current)
    kind = (waiting.data.get("wait_kind") if waiting else None) or "wait"
    not_before: float | None = waiting.not_before if waiting else run.wake_at
    step_id = waiting.step_id if waiting else None
    if kind == "approval":
        if run.wake_at is not None and run.wake_at <= time.time():
            not_before = run.wake_at  # a decision arrived (or the request expired): resuming now makes progress
        deny = hint.command("deny", rid, "--by", "NAME", carry=False)
        return NextAction(action="await_approval", step=step_id, command=hint.command(hint.resume_verb, rid),
                          not_before=iso(not_before or time.time() + APPROVAL_POLL), reason=_also(run.reason, f"to refuse: {deny}"),
                          human_command=hint.command("approve", rid, "--by", "NAME", carry=False))  # fmt: skip
    return NextAction(
        action="wait", step=step_id, command=hint.command(hint.resume_verb, rid), not_before=iso(not_before), reason=run.reason
    )


def build_view(run: RunRecord, steps: list[StepRecord], hint: CommandHint | None = None, *, holder_gone: bool = False) -> RunView:
    """The JSON view of ``run`` and its ``steps`` (``holder_gone``: its executor is known to be dead)."""
    hint = hint or CommandHint()
    return RunView(
        run_id=run.id, runbook=run.runbook, state=run.state, reason=run.reason, exit_code=int(exit_code_for(run.state)),
        params=run.params, started_by=run.started_by, trigger=run.trigger, created_at=iso(run.created_at),
        updated_at=iso(run.updated_at), finished_at=iso(run.finished_at), parent_run_id=run.parent_run_id,
        executor=run.holder.label() if run.holder and run.state == RunState.RUNNING else None,
        steps=[
            StepView(id=s.step_id, state=s.state, attempts=s.attempts, output=s.output, started_at=iso(s.started_at),
                     finished_at=iso(s.finished_at), reason=s.reason, not_before=iso(s.not_before),
                     targets=s.data.get("targets") or None)
            for s in steps
        ],
        next=_next(run, steps, hint, holder_gone),
    )  # fmt: skip
