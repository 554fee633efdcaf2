"""One drive of one run under one lease: recovery, the step loop, stopping, failure and rollback."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.context import Context
from runner.engine.probes import Prober
from runner.engine.runtime import Heartbeat, ParamValues, Resources
from runner.engine.steprunner import StepRunner, Unit
from runner.errors import (
    CancelRequested,
    Interrupted,
    LeaseLost,
    RunbookChanged,
    RunControl,
    SecretError,
    StepFailed,
    StoreError,
    UsageError,
)
from runner.params import validate_params
from runner.secrets import Redactor, SecretResolver, SecretsView
from runner.store.records import (
    DONE_STEP_STATES,
    IN_FLIGHT_STEP_STATES,
    Event,
    Flags,
    NewEvent,
    RunRecord,
    RunState,
    StepPatch,
    StepRecord,
    StepState,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.catalog import LoadedRunbook
    from runner.engine.engine import Engine
    from runner.model import Check, Step
    from runner.steptypes import ActionResult, Wait
    from runner.store.records import Lease

__all__ = ["STOPPED_BY_CANCEL", "DriveOptions", "Execution", "close_steps"]

RESERVE = 0.15
"""Seconds kept back from a budget for the final commit and exit."""
FLAGS_STALE = 0.05
"""Outside requests (pause, cancel) are re-read at a step boundary when the last read is older than this."""
_RUN_FIELDS = frozenset(RunRecord.model_fields)


@dataclass
class DriveOptions:
    """How far and how to drive a run."""

    deadline: float | None = None  # time.monotonic() by which the drive must have stopped
    budget: float | None = None  # the whole budget that deadline came from (for messages)
    max_steps: int | None = None
    retry_failed: bool = False
    retry_step: str | None = None
    skip_step: str | None = None
    accept_changes: bool = False
    force: bool = False
    actor: str = ""
    wait_in_process: bool = True
    notices: list[str] = field(default_factory=list)


class Execution:
    """Executes a run from its current state until it finishes, fails, waits or must stop."""

    def __init__(self, engine: Engine, run: RunRecord, rb: LoadedRunbook, lease: Lease, opts: DriveOptions) -> None:
        self.engine, self.store, self.host = engine, engine.store, engine.host
        self.run, self.rb, self.spec, self.lease, self.opts = run, rb, rb.spec, lease, opts
        self.redactor = Redactor(engine.extra_secrets)
        resolver = SecretResolver(self.host.secret_providers, self.redactor)
        self.secrets_view = SecretsView(self.spec.secrets, resolver)
        self.param_values = ParamValues(run.params, self.spec.params, resolver)
        self.prober = Prober(self.host, engine.renderer, rb.file, self.redactor)
        self.steps: dict[str, StepRecord] = {s.step_id: s for s in self.store.get_steps(run.id)}
        self.outputs: dict[str, Any] = {}
        self.steps_view: dict[str, dict[str, Any]] = {}
        self.resources = Resources()
        self.flags = Flags()
        self.stop: str | None = None
        self.interrupts = 0
        self.wake = threading.Event()
        self._lock = threading.RLock()
        self._live: dict[Context, Unit] = {}
        self._flags_read = 0.0
        self._leftover_steps: set[str] = set()  # steps whose commands a dead predecessor may have left running
        self._deferred_events: list[NewEvent] = []
        self._deferred_steps: list[StepRecord] = []
        self.done = 0
        self.params_obj: Any = None
        self._run_ctx = {"id": run.id, "runbook": run.runbook, "started_by": run.started_by, "trigger": run.trigger}

    # ------------------------------------------------------------------ writes

    def commit(self, events: list[NewEvent], run: dict[str, Any] | None = None, steps: list[StepPatch] | None = None) -> None:
        """One fenced transaction; redacts events, run columns and step rows; applies the run columns locally; tells observers.

        A deferred step outcome (:meth:`defer`) goes into the same transaction, ahead of what is committed now.
        """
        with self._lock:
            if self._deferred_events or self._deferred_steps:
                given = {p.step_id for p in steps or []}
                steps = [StepPatch.of(r) for r in self._deferred_steps if r.step_id not in given] + list(steps or [])
                events = [*self._deferred_events, *events]
                self._deferred_events, self._deferred_steps = [], []
        for ev in events:
            ev.data = self.redactor.value(ev.data)
            ev.actor = ev.actor or self.opts.actor or None
        run = self.redactor.value(run) if run else run  # a reason may quote what a probe saw (an echoed token)
        for patch in steps or []:
            patch.reason, patch.output = self.redactor.text(patch.reason), self.redactor.value(patch.output)
            patch.data = self.redactor.value(patch.data)
        with self._lock:
            first, flags = self.store.commit(self.lease, events=events, run=run, steps=steps or [])
            self.flags, self._flags_read = flags, time.monotonic()
            for key, value in (run or {}).items():
                if key in _RUN_FIELDS:  # the runbook snapshot ("spec") is stored apart from the run record
                    setattr(self.run, key, value)
        if events and (self.engine.observers or self.host.has_observers):
            now = time.time()
            for i, ev in enumerate(events):
                event = Event(run_id=self.run.id, seq=first + i, ts=now, type=ev.type, step_id=ev.step_id, attempt=ev.attempt,
                              actor=ev.actor, data=ev.data)  # fmt: skip
                self.host.on_event(event, self.run)
                for observer in self.engine.observers:
                    observer(event, self.run)

    def defer(self, unit: Unit, events: list[NewEvent]) -> None:
        """Record a step's successful outcome with the next commit instead of a commit of its own.

        The outcome is still durable before the next step acts: the next step's start is committed in the
        same transaction. :meth:`flush` runs first whenever the next step would do anything external before
        its start is committed (probes, targets), so a crash in the window never hides another step's effect.
        """
        with self._lock:
            self._deferred_events.extend(events)
            self._deferred_steps.append(self.steps[unit.step.id])

    def flush(self) -> None:
        """Commit a deferred step outcome now, if there is one."""
        if self._deferred_events or self._deferred_steps:
            self.commit([])

    def save(self, unit: Unit, events: list[NewEvent]) -> None:
        """Persist ``unit``'s state (a target's inside its step's data) with ``events``.

        The run row is not written: which step is in flight is its step row (``running``); the run's ``cursor``
        records where a run stopped (paused, waiting, failed), at that boundary.
        """
        with self._lock:
            step_rec = self.steps[unit.step.id]
            if unit.target is not None:
                targets = step_rec.data.setdefault("targets", {})
                targets[unit.target["name"]] = _target_json(unit.rec)
            self.commit(events, None, [StepPatch.of(step_rec)])

    # ------------------------------------------------------------------ drive

    def drive(self) -> None:
        """Run until the run finishes, fails, waits, pauses or is stopped."""
        try:
            begin = self._prepare()  # bad input (params, edits) raises here, before anything is written
            with Heartbeat(self.store, self.lease, self._on_flags, self._on_lost, interval=min(1.0, self.lease.ttl / 3)):
                if self.lease.took_over:  # under the heartbeat: stopping them may take seconds
                    self._stop_leftovers(begin[0])
                self.commit(*begin)
                try:
                    self._loop()
                except (RunControl, LeaseLost, StoreError):
                    raise
                except Exception as exc:  # a bug or an unexpected error: the run fails, clearly, never stays "running"
                    self._finish_broken(exc)
        except CancelRequested as exc:
            self._finish_stopped(RunState.CANCELLED, self._cancel_reason() or exc.reason or "cancelled")
        except Interrupted as exc:
            self._finish_stopped(RunState.INTERRUPTED, exc.reason or "interrupted")
        finally:
            self.resources.close()
            with contextlib.suppress(LeaseLost):
                self.flush()
                self.store.release(self.lease)

    def _prepare(self) -> tuple[list[NewEvent], dict[str, Any], list[StepPatch]]:
        """Everything checked before the first write: params, edits, recovery and decisions."""
        self.params_obj = validate_params(self.spec.name, self.rb.params_model, self.run.params)
        self._resolve_secrets()
        events: list[NewEvent] = []
        patches: dict[str, StepRecord] = {}
        run_cols: dict[str, Any] = {}
        self._edits(events, run_cols, patches)
        first = self.run.state == RunState.QUEUED and not any(s.attempts for s in self.steps.values())
        data = {"executor": self.lease.holder.label(), "budget": _left(self.opts.deadline), "max_steps": self.opts.max_steps}
        events.append(NewEvent("run.started" if first else "run.resumed", data=data, actor=self.opts.actor or None))
        if self.lease.took_over:
            prev = self.lease.previous.label() if self.lease.previous else None
            events.append(NewEvent("run.recovered", data={"reason": self.lease.took_over, "previous_executor": prev,
                                                          "previous_state": str(self.lease.previous_state)}))  # fmt: skip
            self._leftover_steps = self._steps_that_may_have_left_commands()
        self._recover(events, patches)
        self._decisions(events, patches)
        for rec in self.steps.values():
            if rec.state in DONE_STEP_STATES:
                self._record_output(rec)
        cancel = self.run.cancel_requested
        run_cols.update(state=RunState.RUNNING, reason="", wake_at=None)
        if self.lease.previous_state == RunState.PAUSED:
            run_cols["pause_requested"] = False  # resuming is the answer to that pause; a newer one still counts
        if cancel:
            run_cols["cancel_requested"] = True
        return events, run_cols, [StepPatch.of(r) for r in patches.values()]

    def _resolve_secrets(self) -> None:
        """Resolve every declared secret and secret param now, so each is masked from the first step on.

        (Lazily, a step that prints the environment before the first template uses a secret would show it.)
        """
        # Best effort: a secret that cannot be resolved has no value to leak; a step that uses it fails with
        # the clear error when its template is rendered.
        for name in self.spec.secrets:
            with contextlib.suppress(SecretError):
                self.secrets_view[name]
        for name, spec in self.spec.params.items():
            if spec.secret and self.run.params.get(name) is not None:
                with contextlib.suppress(SecretError):
                    self.param_values[name]

    def _loop(self) -> None:
        steps = self.spec.steps
        i = 0
        while i < len(steps):
            step = steps[i]
            rec = self.steps[step.id]
            if rec.state in DONE_STEP_STATES:
                i += 1
                continue
            if rec.state == StepState.UNKNOWN or _has_unknown_target(rec):
                self._wait_for_decision(step, rec)
                return
            if rec.state in (StepState.FAILED, StepState.BLOCKED):
                # Its failure was recorded but the run's was not (a crash during rollback): finish failing;
                # the action never runs again without a --retry decision.
                self._fail(step, rec)
                return
            stop = self._boundary(step, rec)
            if stop is not None:
                self._pause(step, *stop)
                return
            state = self._run_step(step, rec)
            self._note_overrun(step)
            if state in DONE_STEP_STATES:
                self._record_output(rec)
                self.done += 1
                i += 1
            elif state in (StepState.FAILED, StepState.BLOCKED):
                self.done += 1
                self._fail(step, rec)
                return
            elif state == StepState.WAITING:
                self._set_waiting(step, rec)
                return
            elif state == StepState.UNKNOWN:
                self._wait_for_decision(step, rec)
                return
            else:  # PENDING: stopped between attempts or targets, or a sub-runbook paused
                kind, reason = self._boundary(step, rec) or ("pause", rec.reason or "paused")
                self._pause(step, kind, reason)
                return
        self.commit([NewEvent("run.succeeded", data={"steps": len(steps)})],
                    {"state": RunState.SUCCEEDED, "reason": f"all {len(steps)} steps done", "finished_at": time.time(), "cursor": None})  # fmt: skip

    def _run_step(self, step: Step, rec: StepRecord) -> StepState:
        runner = StepRunner(self)
        if step.precondition or step.check or step.targets is not None or rec.state != StepState.PENDING:
            self.flush()  # these act or probe before this step's start is committed
        if step.when is not None and rec.state == StepState.PENDING and not rec.data.get("phase"):
            unit = Unit(step, rec)
            try:
                holds = self.engine.renderer.truthy(step.when, self.template_ctx(None), file=self.rb.file, step=step.id, field="when")
            except UsageError as exc:
                return runner._finish(unit, [], StepState.FAILED, self.redactor.text(str(exc)))
            if not holds:
                ev = unit.event("probe", {"kind": "when", "check": str(step.when), "holds": False, "detail": "condition is false"})
                return runner._finish(unit, [ev], StepState.SKIPPED, f"when: {step.when} is false")
        if step.targets is not None:
            from runner.engine.fanout import FanOut

            try:
                return FanOut(self, step, rec).run()
            except (StepFailed, UsageError) as exc:  # targets that cannot be rendered or resolved
                return runner._finish(Unit(step, rec), [], StepState.FAILED, self.redactor.text(str(exc)))
        return runner.run(Unit(step, rec))

    # ------------------------------------------------------------------ boundaries

    def _boundary(self, step: Step, rec: StepRecord) -> tuple[str, str] | None:
        if self._deferred_steps and time.monotonic() - self._flags_read > FLAGS_STALE:
            # no commit since the last step finished: read the requests it would have returned
            self.flags = self.store.flags(self.lease)
            self._flags_read = time.monotonic()
        if self.flags.cancel_requested:
            raise CancelRequested("cancel requested")
        if self.stop == "interrupt":
            raise Interrupted("interrupted by signal; resume to continue")
        if self.flags.pause_requested:
            return "pause", "pause requested"
        if self.opts.max_steps is not None and self.done >= self.opts.max_steps:
            return "pause", f"max steps reached ({self.opts.max_steps})"
        if self.opts.deadline is None or rec.state == StepState.WAITING:
            return None
        left = self.opts.deadline - time.monotonic()
        need = self._estimate(step)
        if left <= RESERVE or (need is not None and need + RESERVE > left):
            needs = f"needs up to {need:g}s" if need is not None else "cannot start"
            reason = f"budget reached: step '{step.id}' {needs}, {max(left, 0):.1f}s left"
            fits = self._budget_that_fits(step)
            if fits is not None:
                reason += (f"; a budget of {self.opts.budget:g}s can never fit this step: resume it with --budget "
                           f"{fits}s or more (or without a budget)")  # fmt: skip
            return "budget", reason
        return None

    def _note_overrun(self, step: Step) -> None:
        """Say so when a step with no estimate ran past the budget: nothing told the engine it would."""
        if self.opts.deadline is None or time.monotonic() <= self.opts.deadline or self._estimate(step) is not None:
            return
        if self.host.step_types.get(step.action.type).may_wait:
            return
        over = time.monotonic() - self.opts.deadline
        self.opts.notices.append(f"step '{step.id}' ran {over:.1f}s past the budget: it declares no timeout or expected "
                                 "duration, so the budget could not hold it back (give it `expected:` or `timeout:`)")  # fmt: skip

    def _budget_that_fits(self, step: Step) -> int | None:
        """Whole seconds of budget that fit ``step`` when this drive's budget never can (else None).

        A budget counts from process start: allow a second for starting up, and the reserve. A step without an
        estimate only has to start.
        """
        need = self._estimate(step) or 0.0
        if self.opts.budget is None or need + RESERVE + 1.0 <= self.opts.budget:
            return None
        return int(need + RESERVE + 2)

    def _estimate(self, step: Step) -> float | None:
        step_type = self.host.step_types.get(step.action.type)
        if step_type.may_wait:
            return None  # entering a wait or approval step is cheap: it persists its deadline and returns
        if step.expected is not None:
            return float(step.expected)
        if step.timeout is not None:
            return float(step.timeout) + (float(step.verify.within) if step.verify else 0.0)
        return step_type.estimate(step.action.config)

    def _pause(self, step: Step, kind: str, reason: str) -> None:
        data: dict[str, Any] = {"reason": reason, "next_step": step.id, "cause": kind}
        fits = self._budget_that_fits(step) if kind == "budget" else None
        if fits is not None:  # the journal keeps it so that `next.command` asks for a budget that fits
            data["budget_fits"] = fits
        self.commit([NewEvent("run.paused", data=data)],
                    {"state": RunState.PAUSED, "reason": reason, "cursor": step.id, "pause_requested": False})  # fmt: skip

    # ------------------------------------------------------------------ outcomes

    def _set_waiting(self, step: Step, rec: StepRecord) -> None:
        kind = rec.data.get("wait_kind", "wait")
        state_key = "gate_state" if rec.data.get("gate") == "pending" else "state"
        wake = rec.not_before if kind != "approval" else rec.data.get(state_key, {}).get("expires_at")
        self.commit([NewEvent("run.waiting", step_id=step.id, data={"reason": rec.reason, "kind": kind, "not_before": rec.not_before})],
                    {"state": RunState.WAITING, "reason": f"step '{step.id}': {rec.reason}", "cursor": step.id, "wake_at": wake})  # fmt: skip

    def _wait_for_decision(self, step: Step, rec: StepRecord) -> None:
        reason = f"step '{step.id}' needs a decision: {rec.reason or 'some targets are in an unknown state'}"
        self.commit([NewEvent("run.waiting", step_id=step.id, data={"reason": reason, "kind": "decision"})],
                    {"state": RunState.WAITING, "reason": reason, "cursor": step.id, "wake_at": None})  # fmt: skip

    def _fail(self, step: Step, rec: StepRecord) -> None:
        reason = f"step '{step.id}' {rec.state}: {rec.reason}"
        if self.spec.on_failure == "rollback":
            rolled = self._rollback(step)
            if rolled:
                reason += f"; rolled back {', '.join(rolled)}"
        self.commit([NewEvent("run.failed", step_id=step.id, data={"reason": reason})],
                    {"state": RunState.FAILED, "reason": reason, "cursor": step.id, "finished_at": time.time()})  # fmt: skip

    def _rollback(self, failed: Step) -> list[str]:
        """Undo completed steps in reverse order with their ``rollback`` actions; returns the rolled-back ids."""
        from runner.engine.rollback import rollback_steps

        return rollback_steps(self, failed)

    def _finish_broken(self, exc: Exception) -> None:
        import logging

        reason = self.redactor.text(f"internal error: {type(exc).__name__}: {exc}")
        logging.getLogger("runbook.engine").error("run %s: %s", self.run.id, reason)
        for rec in self.steps.values():
            if rec.state == StepState.RUNNING:
                rec.state, rec.reason, rec.finished_at = StepState.FAILED, reason, time.time()
        failed = [StepPatch.of(r) for r in self.steps.values() if r.reason == reason]
        self.commit([NewEvent("run.failed", data={"reason": reason})],
                    {"state": RunState.FAILED, "reason": reason, "finished_at": time.time()}, failed)  # fmt: skip

    def _cancel_reason(self) -> str | None:
        """The reason the latest ``runbook cancel`` gave (``cancelled by ACTOR`` when it gave none)."""
        requests = self.store.events(self.run.id, types=("request.cancel",), limit=100_000)
        if not requests:
            return None
        return str(requests[-1].data.get("reason") or "") or None

    def _finish_stopped(self, state: RunState, reason: str) -> None:
        now = time.time()
        if state == RunState.INTERRUPTED:  # what a resume will do with the step cut short, for `next` to say now
            ids = {s.id for s in self.spec.steps}
            for rec in self.steps.values():
                if rec.state == StepState.RUNNING and rec.step_id in ids:
                    rec.data["recovery"] = _recovery_decision(self.spec.step(rec.step_id), rec)
            events, patches = close_steps(self.steps.values(), (StepState.RUNNING,), StepState.INTERRUPTED, reason, now)
        else:
            events, patches = close_steps(self.steps.values(), STOPPED_BY_CANCEL, StepState.FAILED, reason, now)
        cols: dict[str, Any] = {"state": state, "reason": reason}
        if state == RunState.CANCELLED:
            cols.update(finished_at=now, cancel_requested=False)
        self.commit([*events, NewEvent(f"run.{state}", data={"reason": reason})], cols, patches)
        if state == RunState.CANCELLED:
            self.engine.cancel_children(self.run.id, reason)

    # ------------------------------------------------------------------ before the loop

    def _edits(self, events: list[NewEvent], run_cols: dict[str, Any], patches: dict[str, StepRecord]) -> None:
        stored, current = self.run.step_hashes, self.rb.step_hashes
        # the order steps were declared in is their records' idx: a JSON object's key order is not kept by every
        # store (PostgreSQL's jsonb sorts keys)
        last = len(self.steps)
        stored_order = sorted(stored, key=lambda s: self.steps[s].idx if s in self.steps else last)
        if stored == current and stored_order == list(current):
            return
        changed = [s for s in stored if s in current and stored[s] != current[s]]
        removed = [s for s in stored if s not in current]
        added = [s for s in current if s not in stored]
        done = {s for s in stored if self.steps.get(s) and self.steps[s].state in (*DONE_STEP_STATES, StepState.RUNNING)}
        completed = [s for s in changed + removed if s in done]
        order = _order_changes(stored_order, list(current), done)
        if (completed or order) and not self.opts.accept_changes:
            old = {s["id"]: s for s in self.store.get_spec(self.run.id).get("steps", [])}
            new = {s.id: s.model_dump(mode="json", by_alias=True) for s in self.spec.steps}
            details = [f"{sid}: {d}" for sid in completed for d in _diff(old.get(sid), new.get(sid))[:3]]
            names = list(dict.fromkeys([*completed, *(s for s, _ in order)]))
            raise RunbookChanged(self.run.id, names, details + [f"{sid}: {why}" for sid, why in order])
        detail = {"changed": changed, "added": added, "removed": removed, "moved": [s for s, _ in order],
                  "accepted": bool(completed or order)}  # fmt: skip
        events.append(NewEvent("run.edited", data=detail, actor=self.opts.actor or None))
        self.opts.notices.append("runbook changed since the run started: " + ", ".join(
            f"{k} {', '.join(v)}" for k, v in detail.items() if isinstance(v, list) and v))  # fmt: skip
        for i, step in enumerate(self.spec.steps):
            rec = self.steps.get(step.id) or StepRecord(run_id=self.run.id, step_id=step.id, idx=i)
            rec.idx = i
            self.steps[step.id] = patches[step.id] = rec
        run_cols.update(step_hashes=current, content_hash=self.rb.content_hash, spec=self.rb.spec_json)

    def _steps_that_may_have_left_commands(self) -> set[str]:
        """Steps whose commands a dead executor may have left running: those in flight and, when a failure was
        being rolled back, the completed steps with a rollback action."""
        steps = {s for s, r in self.steps.items() if r.state in IN_FLIGHT_STEP_STATES
                 or any(t.get("state") in IN_FLIGHT_STEP_STATES for t in (r.data.get("targets") or {}).values())}  # fmt: skip
        if any(r.state in (StepState.FAILED, StepState.BLOCKED) for r in self.steps.values()):
            steps |= {st.id for st in self.spec.steps if st.rollback is not None and st.id in self.steps
                      and self.steps[st.id].state == StepState.SUCCEEDED}  # fmt: skip
        return steps

    def _stop_leftovers(self, events: list[NewEvent]) -> None:
        """Stop the commands the previous executor left running on this host, before any step is re-entered.

        Otherwise the in-flight step's check would see its work unfinished and start the action a second time
        beside the first (see runner.leftovers). The event goes right after ``run.recovered``."""
        from runner.leftovers import stop_as_event

        if not self._leftover_steps:
            return
        event = stop_as_event(self.run.id, self._leftover_steps)
        if event is not None:
            at = next((i + 1 for i, e in enumerate(events) if e.type == "run.recovered"), len(events))
            events.insert(at, event)

    def _recover(self, events: list[NewEvent], patches: dict[str, StepRecord]) -> None:
        """Decide what happens to work that was in flight when the previous executor stopped."""
        for step in self.spec.steps:
            rec = self.steps[step.id]
            units = [Unit(step, rec)] if rec.state in IN_FLIGHT_STEP_STATES else []
            for name, t in (rec.data.get("targets") or {}).items():
                if t.get("state") in IN_FLIGHT_STEP_STATES:
                    units.append(Unit(step, _target_rec(rec, t), {"name": name}))
            for unit in units:
                unit.rec.data.pop("recovery", None)
                decision = _recovery_decision(step, unit.rec)
                if decision == "unknown":
                    unit.rec.state = StepState.UNKNOWN
                    unit.rec.reason = (f"was running when its executor stopped ({self.lease.took_over or 'interrupted'}); it has no "
                                       "check and is not idempotent, so whether it took effect is unknown")  # fmt: skip
                else:
                    unit.rec.state = StepState.PENDING
                    unit.rec.reason = {"verify": "resuming verification after recovery", "check": "re-entering through its check after recovery",
                                       "rerun": "re-running (idempotent) after recovery"}[decision]  # fmt: skip
                events.append(unit.event("step.recovered", {"decision": decision, "reason": unit.rec.reason}, attempt=unit.rec.attempts))
                if unit.target is not None:
                    rec.data["targets"][unit.target["name"]] = _target_json(unit.rec)
                patches[step.id] = rec

    def _decisions(self, events: list[NewEvent], patches: dict[str, StepRecord]) -> None:
        opts, actor = self.opts, self.opts.actor
        for step_id, action in ((opts.retry_step, "retry"), (opts.skip_step, "skip")):
            if step_id is None:
                continue
            if step_id not in self.steps:
                raise UsageError(f"run {self.run.id} has no step '{step_id}'; steps: {', '.join(self.steps)}")
            rec = self.steps[step_id]
            undecided = {StepState.UNKNOWN, StepState.FAILED, StepState.BLOCKED, StepState.INTERRUPTED}
            targets = {n: t for n, t in (rec.data.get("targets") or {}).items()
                       if t.get("state") in {str(s) for s in undecided} | {"not_started"}}  # fmt: skip
            if rec.state not in undecided and not targets:
                # Never a way around an approval step, an agent-policy gate or a step not yet run.
                raise UsageError(f"step '{step_id}' is {rec.state}; --{action}-step decides only unknown, failed, blocked or "
                                 "interrupted steps (an approval is given with `runbook approve`)")  # fmt: skip
            new_state = StepState.PENDING if action == "retry" else StepState.SKIPPED
            rec.state, rec.reason = new_state, f"{'retry' if action == 'retry' else 'skipped'} decided by {actor}"
            if action == "retry":
                rec.attempts = 0
                _reset_local_state(rec)
            rec.data.pop("phase", None)
            for name in targets:
                rec.data["targets"][name].update(state=str(new_state), reason=rec.reason)
            events.append(
                NewEvent("step.decision", step_id=step_id, actor=actor or None, data={"decision": action, "targets": list(targets)})
            )
            patches[step_id] = rec
        if opts.retry_failed:
            # A rolled-back step is undone: retrying the run does it again (through its check, if it has one),
            # or the run would succeed with the work of those steps reverted.
            for rec in self.steps.values():
                if rec.state in (StepState.FAILED, StepState.BLOCKED, StepState.ROLLED_BACK) or _failed_targets(rec):
                    for t in _failed_targets(rec):
                        rec.data["targets"][t].update(state="pending", reason="retry requested", attempts=0)
                    undone = " (it was rolled back)" if rec.state == StepState.ROLLED_BACK else ""
                    if rec.state == StepState.ROLLED_BACK:  # its targets were undone with it
                        for t in (rec.data.get("targets") or {}).values():
                            t.update(state="pending", reason="retry requested (rolled back)", attempts=0)
                    rec.state, rec.reason, rec.attempts = StepState.PENDING, f"retry requested by {actor}{undone}", 0
                    rec.data.pop("phase", None)
                    _reset_local_state(rec)
                    events.append(NewEvent("step.decision", step_id=rec.step_id, actor=actor or None, data={"decision": "retry"}))
                    patches[rec.step_id] = rec

    def gate_for(self, step_id: str) -> dict[str, Any] | None:
        """The approval gate the agent policy put on ``step_id`` for this run, if any."""
        gates: dict[str, Any] = self.run.options.get("gates") or {}
        return gates.get(step_id)

    # ------------------------------------------------------------------ contexts and templates

    def _record_output(self, rec: StepRecord) -> None:
        self.outputs[rec.step_id] = rec.output
        self.steps_view[rec.step_id] = {"output": rec.output, "state": str(rec.state)}

    def template_ctx(self, target: dict[str, Any] | None) -> dict[str, Any]:
        """What templates see: params, steps, run, secrets, alert, target."""
        trigger = self.run.trigger or {}
        return {"params": self.param_values, "steps": self.steps_view, "run": self._run_ctx, "secrets": self.secrets_view,
                "alert": trigger.get("alert"), "target": target}  # fmt: skip

    def make_ctx(self, unit: Unit, attempt: int, timeout: float | None) -> Context:
        """A context for one action of ``unit``."""
        ctx = Context(
            release=self.forget_ctx,
            run_id=self.run.id, runbook=self.spec.name, step_id=unit.step.id, attempt=attempt, params=self.params_obj,
            param_values=self.param_values, outputs=self.outputs, settings=self.engine.settings, secrets=self.secrets_view,
            redactor=self.redactor, services=self, started_by=self.run.started_by,
            state=unit.rec.data.setdefault("state", {}), target=unit.target, timeout=timeout,
        )  # fmt: skip
        with self._lock:
            self._live[ctx] = unit
        if self.flags.cancel_requested:
            ctx.cancel("cancel requested")
        elif self.interrupts > 1:
            ctx.cancel("interrupted", interrupt=True)
        return ctx

    def probe_ctx(self, unit: Unit) -> Context:
        """A context for a probe of ``unit`` (probes get the step's timeout, or 60 s)."""
        return self.make_ctx(unit, unit.rec.attempts, unit.step.timeout or 60.0)

    def forget_ctx(self, ctx: Context) -> None:
        """The action of ``ctx`` is over."""
        with self._lock:
            self._live.pop(ctx, None)

    # ------------------------------------------------------------------ time, signals, flags

    def sleep(self, seconds: float, *, stoppable: bool = True) -> bool:
        """Sleep up to ``seconds``; True if a pause or interrupt cut it short. Raises on cancel."""
        end = time.monotonic() + max(0.0, seconds)
        if self.opts.deadline is not None and stoppable:
            end = min(end, self.opts.deadline - RESERVE)
        while True:
            left = end - time.monotonic()
            if self.flags.cancel_requested:
                raise CancelRequested("cancel requested")
            if self.interrupts > 1:
                raise Interrupted("interrupted by a second signal")
            if stoppable and (self.stop or self.flags.pause_requested):
                return True
            if left <= 0:
                return stoppable and self.opts.deadline is not None and time.monotonic() >= self.opts.deadline - RESERVE
            self.wake.wait(min(left, 1.0))
            self.wake.clear()

    def can_wait_in_process(self, wait: Wait) -> bool:
        """Whether to sleep until ``wait.not_before`` here rather than leave the run waiting."""
        if wait.kind in ("approval", "decision") or not self.opts.wait_in_process or self.opts.max_steps is not None:
            return False
        if self.stop or self.flags.pause_requested:
            return False
        if self.opts.deadline is None:
            return True
        due = wait.not_before if wait.not_before is not None else time.time() + 1.0
        return time.monotonic() + (due - time.time()) + RESERVE < self.opts.deadline

    def sleep_until(self, not_before: float | None) -> bool:
        """Sleep until ``not_before`` (epoch); True if cut short by a pause or interrupt."""
        delay = (not_before - time.time()) if not_before is not None else 1.0
        return self.sleep(max(delay, 0.05))

    def interrupt(self) -> None:
        """A SIGINT/SIGTERM: the first finishes the current step, the second stops it."""
        self.interrupts += 1
        self.stop = "interrupt"
        if self.interrupts > 1:
            with self._lock:
                for ctx in list(self._live):
                    ctx.cancel("interrupted by a second signal", interrupt=True)
        self.wake.set()

    def _on_flags(self, flags: Flags) -> None:
        self.flags = flags
        if flags.cancel_requested:
            with self._lock:
                for ctx in list(self._live):
                    ctx.cancel("cancel requested")
        self.wake.set()

    def _on_lost(self) -> None:
        with self._lock:
            for ctx in list(self._live):
                ctx.cancel("this executor lost its lease", interrupt=True)
        self.wake.set()

    # ------------------------------------------------------------------ Services for step types

    def run_action(self, ctx: Context, type_name: str, config: dict[str, Any]) -> ActionResult | Wait:
        """``ctx.shell(...)`` and friends: run another step type with concrete values."""
        step_type = self.host.step_types.get(type_name)
        model = step_type.Config.model_validate(step_type.shorthand(config), context={"rendered": True})
        previous, ctx.raw_config = ctx.raw_config, config  # these values are the caller's own, not templates
        try:
            result: ActionResult | Wait = self.host.execute_action(step_type, model, ctx)
        finally:
            ctx.raw_config = previous
        return result

    def evaluate_checks(self, ctx: Context, checks: list[Check], kind: str) -> tuple[bool, list[dict[str, Any]]]:
        """Evaluate compiled checks for the step of ``ctx`` (used by ``wait`` conditions)."""
        unit = self._live.get(ctx) or Unit(self.spec.step(ctx.step_id), self.steps[ctx.step_id], ctx.target)
        return self.prober.evaluate(checks, self.template_ctx(ctx.target), lambda: self.probe_ctx(unit), kind)

    def approvals(self, ctx: Context) -> list[dict[str, Any]]:
        """Decisions recorded for the step of ``ctx`` since it started waiting."""
        since = int(ctx.state.get("since_seq", 0))
        events = self.store.events(self.run.id, after=since, types=("request.approve", "request.deny"))
        return [{"actor": e.actor, "decision": e.type.split(".", 1)[1], "comment": e.data.get("comment", ""), "ts": e.ts}
                for e in events if e.step_id == ctx.step_id]  # fmt: skip

    def last_seq(self) -> int:
        """Sequence number of the run's latest event."""
        return self.store.get_run(self.run.id).last_seq

    def child_run(self, ctx: Context, runbook: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start (once) or advance the sub-runbook of the step of ``ctx``; returns its run view."""
        return self.engine.child_run(self, ctx, runbook, params)

    def persist_state(self, ctx: Context) -> None:
        """Write the step-local ``ctx.state`` now (before an irreversible external effect)."""
        unit = self._live.get(ctx)
        if unit is not None:
            self.save(unit, [])

    def journal(self, ctx: Context, kind: str, data: dict[str, Any]) -> None:
        """Append an informational event about the step of ``ctx``."""
        payload = dict(data)
        if ctx.target is not None:
            payload["target"] = ctx.target.get("name")
        self.commit([NewEvent(f"step.{kind}", step_id=ctx.step_id, attempt=ctx.attempt, data=payload)])

    def resource(self, key: str, factory: Callable[[], Any]) -> Any:
        """A run-scoped resource (closed when this drive ends)."""
        return self.resources.get(key, factory)


# ---------------------------------------------------------------------- helpers


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else round(deadline - time.monotonic(), 3)


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Field-level differences between two JSON values, as ``field: old -> new`` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    if old == new:
        return []
    if new is None:
        return [f"{path or 'step'} removed"]
    return [f"{(path or 'step').removeprefix('action.config.')}: {old!r} -> {new!r}"]


def _reset_local_state(rec: StepRecord) -> None:
    """Forget what a step type kept between polls (expired approvals, wait deadlines) for a fresh attempt;
    keep the link to a sub-runbook's run, which the retry continues."""
    kept = {k: v for k, v in (rec.data.get("state") or {}).items() if k == "child_run_id"}
    rec.data["state"] = kept
    for key in ("gate", "gate_state", "wait_kind"):
        rec.data.pop(key, None)


STOPPED_BY_CANCEL = (StepState.RUNNING, StepState.WAITING)
"""Step states a cancelled run leaves as ``failed`` (an interrupted run keeps a wait, to go on with on resume)."""


def close_steps(recs: Iterable[StepRecord], states: tuple[StepState, ...], to: StepState, reason: str,
                now: float) -> tuple[list[NewEvent], list[StepPatch]]:  # fmt: skip
    """Move every step in ``states`` to ``to`` with ``reason``: the ``step.finished`` events and step patches."""
    events: list[NewEvent] = []
    patches: list[StepPatch] = []
    for rec in recs:
        if rec.state in states:
            rec.state, rec.reason, rec.finished_at = to, reason, now
            events.append(NewEvent("step.finished", step_id=rec.step_id, attempt=rec.attempts, data={"state": str(to), "reason": reason}))
            patches.append(StepPatch.of(rec))
    return events, patches


def _order_changes(stored: list[str], current: list[str], done: set[str]) -> list[tuple[str, str]]:
    """Order edits that rewrite what already happened: completed steps now in another order, or a new step put
    before a completed one (it would run after the steps it is declared to precede)."""
    pos = {s: i for i, s in enumerate(current)}
    ran = [s for s in stored if s in done and s in pos]
    out: list[tuple[str, str]] = []
    if sorted(ran, key=pos.__getitem__) != ran:
        now = ", ".join(sorted(ran, key=pos.__getitem__))
        out += [(s, f"completed in the order {', '.join(ran)}, now declared as {now}") for s in ran[:1]]
    for s in current:
        if s not in stored:
            later = [c for c in ran if pos[c] > pos[s]]
            if later:
                out.append((s, f"added before completed step '{min(later, key=pos.__getitem__)}'"))
    return out


def _recovery_decision(step: Step, rec: StepRecord) -> str:
    if rec.data.get("phase") == "verifying":
        return "verify"
    if step.check:
        return "check"
    if step.idempotent:
        return "rerun"
    return "unknown"


def _target_json(rec: StepRecord) -> dict[str, Any]:
    return {"state": str(rec.state), "attempts": rec.attempts, "output": rec.output, "reason": rec.reason,
            "started_at": rec.started_at, "finished_at": rec.finished_at, "data": rec.data}  # fmt: skip


def _target_rec(step_rec: StepRecord, t: dict[str, Any]) -> StepRecord:
    state = t.get("state", "pending")
    return StepRecord(run_id=step_rec.run_id, step_id=step_rec.step_id, idx=step_rec.idx,
                      state=StepState.PENDING if state == "not_started" else StepState(state), attempts=t.get("attempts", 0),
                      output=t.get("output"), reason=t.get("reason", ""), started_at=t.get("started_at"),
                      finished_at=t.get("finished_at"), data=t.get("data") or {})  # fmt: skip


def _has_unknown_target(rec: StepRecord) -> bool:
    return any(t.get("state") == str(StepState.UNKNOWN) for t in (rec.data.get("targets") or {}).values())


def _failed_targets(rec: StepRecord) -> list[str]:
    bad = {str(StepState.FAILED), str(StepState.BLOCKED), "not_started"}
    return [n for n, t in (rec.data.get("targets") or {}).items() if t.get("state") in bad]
