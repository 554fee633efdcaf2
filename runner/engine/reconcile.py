"""Before a drive's first step: check the input, reconcile edits, recover what a dead executor left, apply decisions.

Everything here is computed before the drive's first write (:func:`prepare` returns it), so bad input
(params, a refused edit, a decision that no longer applies) fails with nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from runner.engine.decisions import apply_decision, apply_retry, check_decision, pending
from runner.engine.edits import reconcile_edits
from runner.engine.fanout import target_record, target_unit
from runner.engine.steprunner import Unit
from runner.errors import UsageError
from runner.params import validate_params
from runner.secrets import SecretsUnavailable, resolve_at_start
from runner.store.progress import Phase, Recovery
from runner.store.records import DONE_STEP_STATES, IN_FLIGHT_STEP_STATES, NewEvent, RunState, StepRecord, StepState
from runner.store.transitions import RunEvent, StepEvent, run_after

if TYPE_CHECKING:
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["Begin", "prepare", "recovery_for", "stop_leftovers"]


@dataclass
class Begin:
    """The first write of a drive: its events, run columns and the step records reconciliation changed."""

    events: list[NewEvent] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, StepRecord] = field(default_factory=dict)
    leftover_steps: set[str] = field(default_factory=set)
    """Steps whose commands a dead predecessor may have left running (found before recovery moved them on)."""
    unresolved: SecretsUnavailable | None = None
    """Secrets that could not be resolved: the run fails at pre-flight (runner.engine.preflight)."""

    @property
    def steps(self) -> list[StepRecord]:
        """The changed step records."""
        return list(self.changed.values())


def prepare(exe: Execution) -> Begin:
    """Everything checked before the first write: params, secrets, edits, recovery and decisions."""
    exe.params_obj = validate_params(exe.spec.name, exe.rb.params_model, exe.run.params)
    begin = Begin()
    try:
        _resolve_secrets(exe)
    except SecretsUnavailable as exc:  # the run fails before its first step, with every other problem pre-flight finds
        begin.unresolved = exc
    reconcile_edits(exe, begin.events, begin.run, begin.changed)
    first = exe.run.state == RunState.QUEUED and not any(s.attempts for s in exe.steps.values())
    left = None if exe.opts.deadline is None else round(exe.left() or 0.0, 3)
    data = {"executor": exe.lease.holder.label(), "budget": left, "max_steps": exe.opts.max_steps}
    begin.events.append(NewEvent("run.started" if first else "run.resumed", data=data, actor=exe.opts.actor or None))
    if exe.lease.took_over:
        prev = exe.lease.previous.label() if exe.lease.previous else None
        begin.events.append(NewEvent("run.recovered", data={"reason": exe.lease.took_over, "previous_executor": prev,
                                                            "previous_state": str(exe.lease.previous_state)}))  # fmt: skip
        begin.leftover_steps = steps_that_may_have_left_commands(exe)  # before recovery moves them on
    _recover(exe, begin)
    _decisions(exe, begin)
    for rec in exe.steps.values():
        if rec.state in DONE_STEP_STATES:
            exe.record_output(rec)
    previous = exe.lease.previous_state or exe.run.state
    begin.run.update(state=run_after(previous, RunEvent.DRIVE), reason="", wake_at=None)
    if exe.lease.previous_state == RunState.PAUSED:
        begin.run["pause_requested"] = False  # resuming is the answer to that pause; a newer one still counts
    if exe.run.cancel_requested:
        begin.run["cancel_requested"] = True
    return begin


def _resolve_secrets(exe: Execution) -> None:
    """Resolve every declared secret and secret param now, so each is masked from the first step on.

    (Lazily, a step that prints the environment before the first template uses a secret would show it.)
    One that cannot be resolved fails the run (:class:`~runner.secrets.SecretsUnavailable`, reported by pre-flight).
    """
    resolve_at_start(exe.secrets_view, exe.param_values, exe.spec.params, exe.run.params)


# ---------------------------------------------------------------------- recovery


def recovery_for(step: Step, rec: StepRecord) -> Recovery:
    """What resuming does with ``rec`` (of ``step``) whose action was cut short."""
    if rec.progress.phase == Phase.VERIFYING:
        return Recovery.VERIFY
    if step.check:
        return Recovery.CHECK
    if step.idempotent:
        return Recovery.RERUN
    return Recovery.UNKNOWN


_RECOVERED = {
    Recovery.VERIFY: "resuming verification after recovery",
    Recovery.CHECK: "re-entering through its check after recovery",
    Recovery.RERUN: "re-running (idempotent) after recovery",
}


def _recover(exe: Execution, begin: Begin) -> None:
    """Decide what happens to work that was in flight when the previous executor stopped."""
    for sid in exe.spec.steps.ids:
        rec = exe.steps[sid]
        if rec.state not in IN_FLIGHT_STEP_STATES and not any(t.state in IN_FLIGHT_STEP_STATES for t in rec.progress.targets.values()):
            continue
        step = exe.spec.step(sid)
        units = [Unit(step, rec)] if rec.state in IN_FLIGHT_STEP_STATES else []
        units += [target_unit(step, rec, n) for n, t in rec.progress.targets.items() if t.state in IN_FLIGHT_STEP_STATES]
        for unit in units:
            unit.rec.progress.recovery = None
            decision = recovery_for(step, unit.rec)
            if decision == Recovery.UNKNOWN:
                unit.move(StepEvent.LOSE)
                unit.rec.reason = (f"was running when its executor stopped ({exe.lease.took_over or 'interrupted'}); it has no "
                                   "check and is not idempotent, so whether it took effect is unknown")  # fmt: skip
            else:
                unit.move(StepEvent.RELEASE)
                unit.rec.reason = _RECOVERED[decision]
            begin.events.append(unit.event("step.recovered", {"decision": str(decision), "reason": unit.rec.reason},
                                           attempt=unit.rec.attempts))  # fmt: skip
            if unit.target is not None:
                name = unit.target["name"]
                rec.progress.targets[name] = target_record(unit.rec, rec.progress.targets.get(name))
            begin.changed[step.id] = rec


def steps_that_may_have_left_commands(exe: Execution) -> set[str]:
    """Steps whose commands a dead executor may have left running: those in flight and, when a failure was
    being rolled back (or a cancel with rollback), the completed steps with a rollback action."""
    steps = {s for s, r in exe.steps.items()
             if r.state in IN_FLIGHT_STEP_STATES or any(t.state in IN_FLIGHT_STEP_STATES for t in r.progress.targets.values())}  # fmt: skip
    rolling_back = any(r.state in (StepState.FAILED, StepState.BLOCKED) for r in exe.steps.values()) or exe.run.cancel_requested
    if rolling_back:
        steps |= {st.id for st in exe.spec.steps if st.rollback is not None and st.id in exe.steps
                  and exe.steps[st.id].state == StepState.SUCCEEDED}  # fmt: skip
    return steps


def stop_leftovers(begin: Begin, run_id: str) -> None:
    """Stop the commands the previous executor left running on this host, before any step is re-entered.

    Otherwise the in-flight step's check would see its work unfinished and start the action a second time
    beside the first (see runner.leftovers). The event goes right after ``run.recovered``."""
    from runner.leftovers import stop_as_event

    if not begin.leftover_steps:
        return
    event = stop_as_event(run_id, begin.leftover_steps)
    if event is not None:
        at = next((i + 1 for i, e in enumerate(begin.events) if e.type == "run.recovered"), len(begin.events))
        begin.events.insert(at, event)


# ---------------------------------------------------------------------- decisions


def _decisions(exe: Execution, begin: Begin) -> None:
    """Apply the decisions given with this drive (``resume --retry-step ...``) and those recorded since the last one."""
    opts = exe.opts
    wanted: list[tuple[str, str | None, str]] = []  # (kind, step, actor)
    for event in pending(exe.store, exe.run.id):
        if event.type == "request.retry":
            wanted.append(("retry_run", None, event.actor or ""))
        else:
            wanted.append((str(event.data.get("decision")), event.step_id, event.actor or ""))
    wanted += [(kind, step_id, opts.actor) for kind, step_id in (("retry", opts.retry_step), ("skip", opts.skip_step)) if step_id]
    if opts.retry_failed:
        wanted.append(("retry_run", None, opts.actor))
    for kind, step_id, actor in wanted:
        if kind == "retry_run":
            for applied in apply_retry(exe.steps.values(), actor):
                begin.events.append(applied)
                begin.changed[str(applied.step_id)] = exe.steps[str(applied.step_id)]
            continue
        choice: Literal["retry", "skip"] = "retry" if kind == "retry" else "skip"
        try:
            rec = check_decision(exe.run, exe.steps.values(), str(step_id), choice)
        except UsageError:
            if (kind, step_id) in ((k, s) for k, s in (("retry", opts.retry_step), ("skip", opts.skip_step))):
                raise  # given with this very command: say why it does not apply
            exe.opts.notices.append(f"a recorded decision ({kind} step '{step_id}' by {actor}) no longer applies: the step is "
                                    f"{exe.steps[str(step_id)].state if step_id in exe.steps else 'gone'}")  # fmt: skip
            continue
        begin.events.append(apply_decision(rec, choice, actor))
        begin.changed[rec.step_id] = rec
