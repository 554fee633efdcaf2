"""The step loop of one drive, and how a drive ends: succeeded, failed, waiting, paused, cancelled, interrupted.

Each step goes through :class:`~runner.engine.steprunner.StepRunner` (or :class:`~runner.engine.fanout.FanOut`);
between steps the loop checks the outside requests, the step budget and the caller's budget. Every run
state change goes through :func:`runner.store.transitions.run_after`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from runner.engine import budget
from runner.engine.steprunner import StepRunner, Unit
from runner.errors import CancelRequested, Interrupted, StepFailed, UsageError
from runner.store.progress import Recovery, WaitKind
from runner.store.records import DONE_STEP_STATES, NewEvent, RunState, StepRecord, StepState
from runner.store.transitions import RunEvent, StepEvent, run_after, step_after

if TYPE_CHECKING:
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["finish_broken", "finish_cancelled", "finish_interrupted", "run_steps"]

log = logging.getLogger("runbook.engine")


def run_steps(exe: Execution) -> None:
    """Run steps in order from the first one not done, until the run finishes or must stop."""
    from runner.engine import detach

    steps = exe.spec.steps
    i = 0
    while i < len(steps):
        rec = exe.steps[steps.ids[i]]
        if rec.state in DONE_STEP_STATES:
            i += 1
            continue
        step = steps[i]
        if exe.journal.refresh_flags().cancel_requested:
            raise CancelRequested("cancel requested")
        if rec.state == StepState.UNKNOWN or any(t.state == StepState.UNKNOWN for t in rec.progress.targets.values()):
            _wait_for_decision(exe, step, rec)
            return
        if rec.state in (StepState.FAILED, StepState.BLOCKED):
            # Its failure was recorded but the run's was not (a crash during rollback): finish failing;
            # the action never runs again without a retry decision.
            _fail(exe, step, rec)
            return
        stop = _boundary(exe, step, rec)
        if stop is not None:
            _pause(exe, step, *stop)
            return
        if detach.should_detach(exe, step, rec):
            detach.hand_over(exe, step)
            return
        state = _run_step(exe, step, rec)
        if state in DONE_STEP_STATES:
            exe.record_output(rec)
            exe.done += 1
            i += 1
        elif state in (StepState.FAILED, StepState.BLOCKED):
            exe.done += 1
            _fail(exe, step, rec)
            return
        elif state == StepState.WAITING:
            _set_waiting(exe, step, rec)
            return
        elif state == StepState.UNKNOWN:
            _wait_for_decision(exe, step, rec)
            return
        else:  # PENDING: stopped between attempts or targets, or a sub-runbook paused
            kind, reason = _boundary(exe, step, rec) or ("pause", rec.reason or "paused")
            _pause(exe, step, kind, reason)
            return
    _end(exe, RunEvent.SUCCEED, "the step is done" if len(steps) == 1 else f"all {len(steps)} steps done", NewEvent("run.succeeded", data={"steps": len(steps)}),
         cursor=None)  # fmt: skip


def _run_step(exe: Execution, step: Step, rec: StepRecord) -> StepState:
    runner = StepRunner(exe)
    if step.precondition or step.check or step.fans_out or rec.state != StepState.PENDING:
        exe.journal.flush()  # these act or probe before this step's start is committed
    unit = Unit(step, rec)
    if step.when is not None and rec.state == StepState.PENDING and rec.progress.phase is None:
        try:
            holds = exe.engine.renderer.truthy(step.when, exe.template_ctx(None), file=exe.rb.file, step=step.id, field="when")
        except UsageError as exc:
            return runner.finish(unit, [], StepState.FAILED, exe.redactor.text(str(exc)))
        if not holds:
            ev = unit.event("probe", {"kind": "when", "check": str(step.when), "holds": False, "detail": "condition is false"})
            return runner.finish(unit, [ev], StepState.SKIPPED, f"when: {step.when} is false")
    if step.fans_out:
        from runner.engine.fanout import FanOut

        try:
            return FanOut(exe, step, rec).run()
        except (StepFailed, UsageError) as exc:  # targets or items that cannot be rendered or resolved
            if rec.state == StepState.RUNNING:
                rec.state = step_after(rec.state, StepEvent.RELEASE)
            return runner.finish(unit, [], StepState.FAILED, exe.redactor.text(str(exc)))
    return runner.run(unit)


# ---------------------------------------------------------------------- boundaries


def _boundary(exe: Execution, step: Step, rec: StepRecord) -> tuple[str, str] | None:
    flags = exe.journal.refresh_flags()
    if flags.cancel_requested:
        raise CancelRequested("cancel requested")
    if exe.stop == "interrupt":
        raise Interrupted("interrupted by signal; resume to continue")
    if flags.pause_requested:
        return "pause", "pause requested"
    if exe.opts.detached_step is not None and exe.done >= 1:
        return "detached", f"step '{exe.opts.detached_step}' finished in a detached executor; resume to go on"
    if exe.opts.max_steps is not None and exe.done >= exe.opts.max_steps:
        return "pause", f"max steps reached ({exe.opts.max_steps})"
    if rec.state == StepState.WAITING:
        return None
    reason = budget.stop_reason(exe, step)
    return ("budget", reason) if reason is not None else None


def _pause(exe: Execution, step: Step, kind: str, reason: str) -> None:
    data: dict[str, Any] = {"reason": reason, "next_step": step.id, "cause": kind}
    fits = budget.budget_that_fits(exe, step) if kind == "budget" else exe.child_fits.get(step.id)
    if fits is not None:  # the journal keeps it: `next` is a hand-off naming a budget that fits
        data["budget_fits"] = fits
        data["estimate"] = budget.estimate(exe, step)
    _end(exe, RunEvent.PAUSE, reason, NewEvent("run.paused", data=data), cursor=step.id, pause_requested=False)


def _end(exe: Execution, event: RunEvent, reason: str, journal_event: NewEvent, **cols: Any) -> None:
    """Commit the run's new state (through the transition table) with its reason and event."""
    state = run_after(exe.run.state, event)
    if state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED):
        cols.setdefault("finished_at", time.time())
    exe.journal.commit([journal_event], {"state": state, "reason": reason, **cols})


def _set_waiting(exe: Execution, step: Step, rec: StepRecord) -> None:
    kind = rec.progress.waiting or WaitKind.TIME
    wake = _expiry(exe, rec) if kind == WaitKind.APPROVAL else rec.not_before  # an approval: looked at again at expiry
    _end(exe, RunEvent.WAIT, f"step '{step.id}': {rec.reason}",
         NewEvent("run.waiting", step_id=step.id, data={"reason": rec.reason, "kind": str(kind), "not_before": rec.not_before}),
         cursor=step.id, wake_at=wake)  # fmt: skip


def _expiry(exe: Execution, rec: StepRecord) -> float | None:
    """When the approval request ``rec`` waits on expires (a worker applies ``on_expiry`` then); decisions wake it sooner."""
    from runner.steptypes import Approvable

    approval = exe.host.step_types.get("approval")
    state = rec.progress.gate.state if rec.progress.gate_pending and rec.progress.gate is not None else rec.progress.local
    request = approval.request_of(state) if isinstance(approval, Approvable) else None
    return request.expires_at if request is not None else rec.not_before


def _wait_for_decision(exe: Execution, step: Step, rec: StepRecord) -> None:
    reason = f"step '{step.id}' needs a decision: {rec.reason or 'some targets are in an unknown state'}"
    data: dict[str, object] = {"reason": reason, "kind": "decision"}
    if already_asked(exe, step.id):
        data["asked"] = True  # the same question as the run's latest one: people were told then (no second message)
    _end(exe, RunEvent.WAIT, reason, NewEvent("run.waiting", step_id=step.id, data=data), cursor=step.id, wake_at=None)


_ASKED = ("run.waiting", "run.interrupted", "step.decision", "request.decide", "request.retry")


def already_asked(exe: Execution, step_id: str) -> bool:
    """Whether the run's latest question to a person is a decision on ``step_id`` that nothing has answered since."""
    events = exe.store.events(exe.run.id, types=_ASKED, limit=1_000_000)
    latest = events[-1] if events else None
    return latest is not None and latest.type.startswith("run.") and latest.data.get("kind") == "decision" and latest.step_id == step_id


def _fail(exe: Execution, step: Step, rec: StepRecord) -> None:
    from runner.engine.rollback import rollback_steps

    reason = f"step '{step.id}' {rec.state}: {rec.reason}"
    if exe.spec.on_failure == "rollback":
        rolled, failed = rollback_steps(exe, exe.spec.steps[: exe.spec.index(step.id)])
        if rolled:
            reason += f"; rolled back {', '.join(rolled)}"
        if failed:
            reason += f"; rollback failed for {', '.join(failed)}"
    _end(exe, RunEvent.FAIL, reason, NewEvent("run.failed", step_id=step.id, data={"reason": reason}), cursor=step.id)


# ---------------------------------------------------------------------- how a drive ends early


def finish_broken(exe: Execution, exc: Exception) -> None:
    """An unexpected error outside any step's action: the run fails with the error as its reason, never stays running."""
    reason = exe.redactor.text(f"internal error: {type(exc).__name__}: {exc}")
    log.error("run %s: %s", exe.run.id, reason)
    broken = []
    for rec in exe.steps.values():
        if rec.state == StepState.RUNNING:
            rec.state, rec.reason, rec.finished_at = step_after(rec.state, StepEvent.FAIL), reason, time.time()
            broken.append(rec)
    exe.journal.commit([NewEvent("run.failed", data={"reason": reason})],
                       {"state": run_after(exe.run.state, RunEvent.FAIL), "reason": reason, "finished_at": time.time()}, broken)  # fmt: skip


def finish_cancelled(exe: Execution, fallback: str) -> None:
    """A cancel reached the drive: roll back if it asked to, close what was open, and end ``cancelled``."""
    from runner.engine.cancel import cancel_request, close_for_cancel

    request = cancel_request(exe.store, exe.run.id)
    reason = request.reason or fallback or "cancelled"
    events, closed = close_for_cancel(exe.steps.values(), reason)
    exe.journal.commit(events, None, closed)
    reason += _cancel_rollback(exe, request.rollback)
    exe.journal.commit([NewEvent("run.cancelled", data={"reason": reason})],
                       {"state": run_after(exe.run.state, RunEvent.CANCEL), "reason": reason, "finished_at": time.time(),
                        "cancel_requested": False})  # fmt: skip
    exe.engine.cancel_children(exe.run.id, reason)


def _cancel_rollback(exe: Execution, wanted: bool) -> str:
    """Run the rollback actions of completed steps (``cancel --rollback``) or say which were left."""
    from runner.engine.rollback import rollback_steps, undoable

    if not wanted:
        left = [s.id for s in undoable(exe, exe.spec.steps)]
        if left:
            exe.opts.notices.append(f"completed steps with a rollback action that was not run: {', '.join(left)} "
                                    f"(`runbook cancel {exe.run.id} --rollback` runs them)")  # fmt: skip
            return f"; not rolled back: {', '.join(left)}"
        return ""
    exe.cancelling = True  # the rollback's own actions are not stopped by the cancel that asked for them
    rolled, failed = rollback_steps(exe, exe.spec.steps)
    out = f"; rolled back {', '.join(rolled)}" if rolled else "; nothing to roll back"
    return out + (f"; rollback failed for {', '.join(failed)}" if failed else "")


def finish_interrupted(exe: Execution, reason: str) -> None:
    """A signal stopped the drive: the step in flight is recorded ``interrupted`` with what a resume will do with it."""
    from runner.engine.reconcile import recovery_for

    now = time.time()
    events: list[NewEvent] = []
    closed: list[StepRecord] = []
    ids = set(exe.spec.steps.ids)
    unknown: str | None = None
    for rec in exe.steps.values():
        if rec.state == StepState.RUNNING:
            if rec.step_id in ids:  # what a resume will do with the step cut short, for `next` to say now
                rec.progress.recovery = recovery_for(exe.spec.step(rec.step_id), rec)
                if rec.progress.recovery == Recovery.UNKNOWN and unknown is None:
                    unknown = rec.step_id
            rec.state, rec.reason, rec.finished_at = step_after(rec.state, StepEvent.INTERRUPT), reason, now
            events.append(
                NewEvent("step.finished", step_id=rec.step_id, attempt=rec.attempts, data={"state": str(rec.state), "reason": reason})
            )
            closed.append(rec)
    # a step cut short in its action with no check and not idempotent: the run needs a decision now (`next` is
    # `decide`), so the event says so and notifies `unknown` at once, not when someone next resumes
    data: dict[str, object] = {"reason": reason}
    if unknown is not None:
        data.update(kind="decision", reason=f"{reason}; step '{unknown}' needs a decision: it was cut short in its action, has no "
                                            "check and is not idempotent, so whether it took effect is unknown")  # fmt: skip
    exe.journal.commit([*events, NewEvent("run.interrupted", step_id=unknown, data=data)],
                       {"state": run_after(exe.run.state, RunEvent.INTERRUPT), "reason": reason}, closed)  # fmt: skip
