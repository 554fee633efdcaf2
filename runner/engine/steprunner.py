"""Running one unit of work: a step, or one target of a fan-out step.

Order: ``precondition`` (fails: ``blocked``) → ``check`` (all hold: ``satisfied``)
→ an agent-policy approval gate, if the run has one for the step → action with
``timeout`` and ``retry`` → ``verify`` (polled ``every`` until ``within``). Each
transition is committed before the next begins: the start of an attempt is durable
before the action runs, the action's success before the verification polls, so a
crash anywhere is recovered without a silent re-run. Every state change goes through
:mod:`runner.store.transitions`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.engine.expect import evaluate
from runner.engine.output import has_streams
from runner.engine.probes import evidence_of
from runner.errors import RunControl, StepFailed, StoreError, UsageError
from runner.steptypes import ActionResult, Wait
from runner.store.progress import Gate, GateStatus, Phase, WaitKind
from runner.store.records import NewEvent, StepRecord, StepState
from runner.store.transitions import StepEvent, step_after

if TYPE_CHECKING:
    from runner.context import Context
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["StepRunner", "Unit"]

log = logging.getLogger("runbook.engine")

_OUTCOME_EVENT = {
    StepState.SUCCEEDED: StepEvent.SUCCEED,
    StepState.FAILED: StepEvent.FAIL,
    StepState.SATISFIED: StepEvent.SATISFY,
    StepState.SKIPPED: StepEvent.SKIP,
    StepState.BLOCKED: StepEvent.BLOCK,
}


@dataclass
class Unit:
    """A step, or one target of a step; ``rec`` holds its state (a target's is stored inside the step's progress)."""

    step: Step
    rec: StepRecord
    target: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """``restart`` or ``restart@web1``."""
        return self.step.id if self.target is None else f"{self.step.id}@{self.target['name']}"

    def event(self, kind: str, data: dict[str, Any] | None = None, *, attempt: int | None = None) -> NewEvent:
        """An event about this unit (a target's events name the target)."""
        payload = dict(data or {})
        if self.target is not None:
            payload["target"] = self.target["name"]
        return NewEvent(kind, step_id=self.step.id, attempt=attempt, data=payload)

    def move(self, event: StepEvent) -> None:
        """Apply ``event`` to the unit's state through the transition table."""
        self.rec.state = step_after(self.rec.state, event)


class StepRunner:
    """Drives units through probes, gate, action, retries, waits and verification."""

    def __init__(self, exe: Execution) -> None:
        self.exe = exe

    # ------------------------------------------------------------------ entry

    def run(self, unit: Unit) -> StepState:
        """Run ``unit`` until it reaches an outcome (or must wait/stop); returns its state."""
        try:
            return self._run(unit)
        except RunControl:
            raise
        except (StepFailed, UsageError) as exc:  # template, secret and config errors fail the step, clearly
            return self.finish(unit, [], StepState.FAILED, self.exe.redactor.text(str(exc)))

    def _run(self, unit: Unit) -> StepState:
        rec, step = unit.rec, unit.step
        progress = rec.progress
        if rec.state == StepState.WAITING and progress.gate_pending:
            return self._gated(unit, [])
        if rec.state == StepState.WAITING:
            return self._act(unit, [], repoll=True)
        if progress.phase == Phase.VERIFYING:
            return self._verify(unit, [], rec.output)
        events: list[NewEvent] = []
        tctx = self.exe.template_ctx(unit.target)
        if step.precondition:
            held, evidence = self.exe.prober.evaluate(step.precondition, tctx, lambda: self.exe.probe_ctx(unit), "precondition")
            events += [unit.event("probe", ev) for ev in evidence]
            if not held:
                return self.finish(unit, events, StepState.BLOCKED, f"precondition did not hold: {evidence[-1]['detail']}")
        if step.check:
            held, evidence = self.exe.prober.evaluate(step.check, tctx, lambda: self.exe.probe_ctx(unit), "check")
            events += [unit.event("probe", ev) for ev in evidence]
            if held:
                return self.finish(unit, events, StepState.SATISFIED, "check held: " + "; ".join(e["check"] for e in evidence))
        return self._gated(unit, events)

    # ------------------------------------------------------------------ agent approval gate

    def _gated(self, unit: Unit, events: list[NewEvent]) -> StepState:
        """Before acting, a step the agent policy gates waits for a human approval (once per step).

        The gate is an ``approval`` action like any other: it runs through ``runbook_execute_action``."""
        config = self.exe.gate_for(unit.step.id)
        rec = unit.rec
        gate = rec.progress.gate
        if config is None or (gate is not None and gate.status == GateStatus.APPROVED):
            return self._act(unit, events)
        if gate is None:
            gate = rec.progress.gate = Gate()
        approval = self.exe.host.step_types.get("approval")
        ctx = self.exe.make_ctx(unit, rec.attempts, None)
        ctx.state = gate.state
        try:
            result = self.exe.host.execute_action(approval, approval.Config.model_validate(config), ctx)
        finally:
            self.exe.forget_ctx(ctx)
        if isinstance(result, Wait):
            first = rec.state != StepState.WAITING
            unit.move(StepEvent.WAIT)
            rec.reason, rec.progress.waiting = result.reason, WaitKind.APPROVAL
            rec.not_before = result.not_before  # an approval that expires soon is looked at again then
            if first:
                events.append(unit.event("step.waiting", {"kind": "approval", "reason": result.reason, "gate": "agent policy"}))
            self.exe.save(unit, events)
            return StepState.WAITING
        gate.status = GateStatus.APPROVED
        rec.progress.waiting = None
        if rec.state == StepState.WAITING:
            unit.move(StepEvent.RELEASE)
        events.append(unit.event("step.gate_approved", {"detail": result.detail}))
        return self._act(unit, events)

    # ------------------------------------------------------------------ action

    def _act(self, unit: Unit, events: list[NewEvent], *, repoll: bool = False) -> StepState:
        rec, step = unit.rec, unit.step
        step_type = self.exe.host.step_types.get(step.action.type)
        while True:
            if not repoll:
                if has_streams(rec.output):  # an earlier attempt's output (this run's retry, or `runbook retry`): kept
                    events.append(unit.event("step.attempt_output", {"output": rec.output}, attempt=rec.attempts or None))
                rec.output = None
                rec.attempts += 1
                unit.move(StepEvent.BEGIN)
                rec.reason, rec.finished_at = "", None
                rec.started_at = rec.started_at or time.time()
                events.append(unit.event("step.started", {"executor": self.exe.lease.holder.label(), "type": step.action.type},
                                         attempt=rec.attempts))  # fmt: skip
                self.exe.save(unit, events)
                events = []
            ctx = self.exe.make_ctx(unit, rec.attempts, step.timeout)
            if not repoll:
                self.exe.confirm()  # a process frozen since step.started must not act after a takeover
            result, failure = self._invoke(unit, ctx)
            if isinstance(result, Wait):
                outcome = self._wait(unit, result, ctx, first=not repoll)
                if outcome is None:
                    repoll = True
                    continue
                return outcome
            if result is not None:
                held, why = evaluate(step.expect, step_type.default_expect, result)
                output = self.exe.redactor.value(result.as_output())
                evidence = self.exe.redactor.value(evidence_of(result, held, why, redact=self.exe.redactor.text))
            else:
                held, why, output, evidence = False, failure or "failed", None, {"holds": False, "detail": failure}
            if held:
                break
            if rec.attempts < step.retry.attempts:
                delay = min(step.retry.delay * step.retry.backoff ** (rec.attempts - 1), step.retry.max_delay)
                self._release_waiting(unit)
                unit.move(StepEvent.RELEASE)
                rec.reason = f"attempt {rec.attempts} failed: {why}; retrying in {delay:g}s"
                rec.output = output  # kept as this attempt's output when the next one starts (runbook logs shows each)
                self.exe.save(unit, [unit.event("step.attempt_failed", {**evidence, "retry_in": delay}, attempt=rec.attempts)])
                if self.exe.sleep(delay):
                    return StepState.PENDING  # a pause or interrupt arrived: the next attempt runs on resume
                repoll = False
                continue
            rec.output = output
            return self.finish(unit, [], StepState.FAILED, why, evidence=evidence)
        if step.verify is not None:
            return self._verify(unit, [unit.event("step.action_done", evidence, attempt=rec.attempts)], output)
        rec.output = output
        return self.finish(unit, [], StepState.SUCCEEDED, why, evidence=evidence)

    def _invoke(self, unit: Unit, ctx: Context) -> tuple[ActionResult | Wait | None, str | None]:
        step = unit.step
        try:
            tctx = self.exe.template_ctx(unit.target)
            return self.exe.prober.invoke(step.action, tctx, ctx, step.action.type), None
        except (RunControl, StoreError):  # a journal that cannot be written (full disk) is the run's, not the step's
            raise
        except (StepFailed, UsageError) as exc:
            return None, self.exe.redactor.text(str(exc))
        except Exception as exc:  # a step type's bug: record it (redacted, no traceback with values), never crash the run
            why = self.exe.redactor.text(f"internal error in step type '{step.action.type}': {type(exc).__name__}: {exc}")
            log.error("%s", why)
            return None, why
        finally:
            self.exe.forget_ctx(ctx)

    # ------------------------------------------------------------------ waiting

    def _wait(self, unit: Unit, wait: Wait, ctx: Context, *, first: bool) -> StepState | None:
        """Persist the wait; return None to poll again in this process, or WAITING to stop here."""
        rec = unit.rec
        kind = WaitKind(wait.kind) if wait.kind in WaitKind.__members__.values() else WaitKind.TIME
        changed = first or rec.reason != wait.reason or rec.progress.local != ctx.state or rec.not_before != wait.not_before
        unit.move(StepEvent.WAIT)
        rec.reason, rec.not_before = self.exe.redactor.text(wait.reason), wait.not_before
        rec.progress.waiting, rec.progress.local = kind, ctx.state
        if changed:
            data = {"kind": str(kind), "reason": rec.reason, "not_before": wait.not_before, "deadline": wait.deadline}
            self.exe.save(unit, [unit.event("step.waiting", data, attempt=rec.attempts)] if first else [])
        if kind == WaitKind.PAUSED:
            self._release_waiting(unit)
            unit.move(StepEvent.RELEASE)
            return StepState.PENDING  # a sub-runbook stopped at a boundary: this run pauses too
        if self.exe.can_wait_in_process(wait):
            if not self.exe.sleep_until(wait.not_before):
                return None  # poll again
            if self.exe.stop or self.exe.journal.flags.pause_requested:
                return StepState.PENDING  # a pause or a signal cut the wait short (the step stays waiting): the run stops here
        return StepState.WAITING

    @staticmethod
    def _release_waiting(unit: Unit) -> None:
        unit.rec.progress.waiting = None

    # ------------------------------------------------------------------ verification

    def _verify(self, unit: Unit, events: list[NewEvent], output: Any) -> StepState:
        rec, verify = unit.rec, unit.step.verify
        assert verify is not None
        if rec.state != StepState.RUNNING:
            unit.move(StepEvent.BEGIN)  # recovery left it pending: it re-enters verification
        rec.output = output
        rec.progress.phase = Phase.VERIFYING
        self.exe.save(unit, events)
        tctx = self.exe.template_ctx(unit.target)
        deadline = time.monotonic() + verify.within
        polls = 0
        while True:
            polls += 1
            held, evidence = self.exe.prober.evaluate(verify.checks, tctx, lambda: self.exe.probe_ctx(unit), "verify")
            if held:
                probes = [unit.event("probe", {**ev, "poll": polls}) for ev in evidence]
                return self.finish(unit, probes, StepState.SUCCEEDED, f"verified after {polls} poll{'s' if polls > 1 else ''}")
            if time.monotonic() + verify.every > deadline:
                probes = [unit.event("probe", {**ev, "poll": polls}) for ev in evidence]
                why = f"verify did not hold within {verify.within:g}s ({polls} polls): {evidence[-1]['detail']}"
                return self.finish(unit, probes, StepState.FAILED, why)
            self.exe.sleep(verify.every, stoppable=False)

    # ------------------------------------------------------------------ outcome

    def finish(self, unit: Unit, events: list[NewEvent], state: StepState, reason: str,
               *, evidence: dict[str, Any] | None = None) -> StepState:  # fmt: skip
        """Record the unit's outcome; ``evidence`` (what the action's result showed) goes with it."""
        rec = unit.rec
        unit.move(_OUTCOME_EVENT[state])
        rec.reason, rec.finished_at, rec.not_before = reason, time.time(), None
        rec.progress.phase = rec.progress.waiting = None
        data: dict[str, Any] = {"state": str(state), "reason": reason}
        if state in (StepState.SUCCEEDED, StepState.FAILED):
            data["attempts"] = rec.attempts
        if evidence is not None:
            data["evidence"] = evidence
        events = [*events, unit.event("step.finished", data, attempt=rec.attempts or None)]
        if unit.target is None and state in (StepState.SUCCEEDED, StepState.SATISFIED, StepState.SKIPPED):
            self.exe.journal.defer(rec, events)  # committed with the next step's start (or the run's next write)
        else:
            self.exe.save(unit, events)
        return state
