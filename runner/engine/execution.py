"""One drive of one run under one lease: what the drive holds, and the life around the step loop.

:meth:`Execution.drive` reconciles the run (:mod:`runner.engine.reconcile`), runs the step loop
(:mod:`runner.engine.loop`) under a heartbeat, and makes sure the run never stays ``running`` when
the drive ends: a cancel, an interrupt or an unexpected error each leave a truthful state.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.context import Context
from runner.engine.journal import Journal
from runner.engine.output import LiveOutput
from runner.engine.probes import Prober
from runner.engine.runtime import Heartbeat, ParamValues, Resources
from runner.engine.services import StepServices
from runner.engine.steprunner import Unit
from runner.engine.units import ITEM, host_of
from runner.errors import CancelRequested, Interrupted, LeaseLost, RunControl, StoreError
from runner.params import validate_params
from runner.secrets import Redactor, SecretResolver, SecretsUnavailable, SecretsView
from runner.store.records import DONE_STEP_STATES, Flags, NewEvent, RunRecord, StepRecord

if TYPE_CHECKING:
    from runner.catalog import LoadedRunbook
    from runner.engine.engine import Engine
    from runner.steptypes import Wait
    from runner.store.records import Lease

__all__ = ["RESERVE", "DriveOptions", "Execution"]

RESERVE = 0.15
"""Seconds kept back from a budget for the final commit and exit."""

CONFIRM_AFTER = 0.25
"""Seconds after the store last confirmed the lease past which an action confirms it again (:meth:`Execution.confirm`)."""


@dataclass
class DriveOptions:
    """How far and how to drive a run."""

    deadline: float | None = None  # time.monotonic() by which the drive must have stopped
    budget: float | None = None  # the whole budget that deadline came from (for messages and `next`)
    startup: float = 0.0
    """Seconds a caller's budget spends before its first step (about 1 for a CLI process: its budget counts from
    process start; 0 for the Python API and MCP, whose budgets count from the call)."""
    max_steps: int | None = None
    retry_failed: bool = False
    retry_step: str | None = None
    skip_step: str | None = None
    accept_changes: bool = False
    force: bool = False
    actor: str = ""
    wait_in_process: bool = True
    detach: bool = True
    """A step with no estimate that the budget may not hold runs in a detached executor (see runner.engine.detach)."""
    detached_step: str | None = None
    """This drive is a detached executor's: run that one step, then stop (cause ``detached``)."""
    take_lock: bool = True
    """Take the run's lock key with its lease (not when only settling it: a cancel's rollback)."""
    notices: list[str] = field(default_factory=list)


class DoneSteps(Mapping[str, Any]):
    """The completed steps of a drive by id, each shown as ``shape`` makes it from its step record when read.

    A view of the drive's records rather than a copy per step (issue 19: a 5000-step run held 5000 of each); a
    step shows once its record is done (succeeded, skipped ...), never while it runs, with its state as it is now
    (a step a failure's rollback undid shows ``rolled_back``).
    """

    def __init__(self, exe: Execution, shape: Callable[[StepRecord], Any]) -> None:
        self._exe, self._shape = exe, shape

    def __getitem__(self, step_id: str) -> Any:
        rec = self._exe.steps.get(step_id)
        if rec is None or rec.state not in DONE_STEP_STATES:
            raise KeyError(step_id)
        return self._shape(rec)

    def __iter__(self) -> Iterator[str]:
        return (sid for sid, rec in list(self._exe.steps.items()) if rec.state in DONE_STEP_STATES)

    def __len__(self) -> int:
        return sum(1 for rec in list(self._exe.steps.values()) if rec.state in DONE_STEP_STATES)

    def describe_missing(self, step_id: str) -> str:
        """What a template that asks for a step that has not finished (or does not exist) is told."""
        if step_id in self._exe.steps:
            return f"step '{step_id}' has not finished yet: its output and state are known only once it has (a step sees only the steps before it)"
        return f"the runbook has no step '{step_id}'"


class Execution:
    """Executes a run from its current state until it finishes, fails, waits or must stop."""

    def __init__(self, engine: Engine, run: RunRecord, rb: LoadedRunbook, lease: Lease, opts: DriveOptions) -> None:
        self.engine, self.store, self.host = engine, engine.store, engine.host
        self.run, self.rb, self.spec, self.lease, self.opts = run, rb, rb.spec, lease, opts
        self.redactor = Redactor(engine.extra_secrets)
        self.resolver = resolver = SecretResolver(self.host.secret_providers, self.redactor)
        self.secrets_view = SecretsView(self.spec.secrets, resolver)
        self.param_values = ParamValues(run.params, self.spec.params, resolver)
        self.prober = Prober(self.host, engine.renderer, rb.file, self.redactor)
        self.journal = Journal(self.store, lease, run, self.redactor, self.host, opts.actor, engine.observers)
        self.output = LiveOutput(self.journal, self.redactor, engine.output_observers)
        self.services = StepServices(self)
        self.steps: dict[str, StepRecord] = {s.step_id: s for s in self.store.get_steps(run.id)}
        self.outputs: Mapping[str, Any] = DoneSteps(self, lambda rec: rec.output)
        """Completed steps' outputs, for Python steps (``ctx.outputs``)."""
        self.steps_view: Mapping[str, dict[str, Any]] = DoneSteps(self, lambda rec: {"output": rec.output, "state": str(rec.state)})
        """Completed steps as templates see them (``steps.ID.output``, ``steps.ID.state``)."""
        self.resources = Resources()
        self.stop: str | None = None
        self.interrupts = 0
        self.wake = threading.Event()
        self._lock = threading.RLock()
        self._live: dict[Context, Unit] = {}
        self.done = 0
        self.cancelling = False
        """True while a cancel's rollback runs: its actions must not be stopped by that very cancel."""
        self.detached: subprocess.Popen[bytes] | None = None
        """The detached executor this drive handed a step to (see runner.engine.detach)."""
        self.child_fits: dict[str, int] = {}
        """Step id → a budget that fits, reported by a sub-runbook the caller's budget can never hold."""
        self.params_obj: Any = None
        self._run_ctx = {"id": run.id, "runbook": run.runbook, "started_by": run.started_by, "trigger": run.trigger}

    # ------------------------------------------------------------------ writes

    def save(self, unit: Unit, events: list[NewEvent]) -> None:
        """Persist ``unit``'s state (a target's inside its step's progress) with ``events``.

        The run row is not written: which step is in flight is its step row (``running``); the run's ``cursor``
        records where a run stopped (paused, waiting, failed), at that boundary.
        """
        from runner.engine.fanout import target_record

        with self._lock:
            step_rec = self.steps[unit.step.id]
            if unit.target is not None:
                name = unit.target["name"]
                step_rec.progress.targets[name] = target_record(unit.rec, step_rec.progress.targets.get(name))
            self.journal.commit(events, None, [step_rec])

    def fence(self) -> None:
        """Check this executor still holds the run (raises LeaseLost otherwise): called before every nested action."""
        sent = time.monotonic()
        self.journal.flags, self.journal.flags_read = self.store.flags(self.lease), sent

    def confirm(self) -> None:
        """Before an action: :meth:`fence` unless the store confirmed the lease a moment ago.

        The ``step.started`` commit just before an action confirms it, so this costs nothing on the usual path. But
        a process stopped after that commit (SIGSTOP, a paused VM, a swap storm) may wake up after its lease ran out
        and another executor took the run over; its monotonic clock has moved on meanwhile, so it asks the store
        again and stops (``LeaseLost``) instead of acting. The margin is far below the lease's TTL minus the
        heartbeat interval, the least time left on a lease the store has just confirmed.
        """
        if time.monotonic() - self.journal.flags_read > min(CONFIRM_AFTER, self.lease.ttl / 4):
            self.fence()

    # ------------------------------------------------------------------ drive

    def drive(self) -> None:
        """Run until the run finishes, fails, waits, pauses or is stopped."""
        from runner.engine import loop, reconcile

        try:
            begin = reconcile.prepare(self)  # bad input (params, edits) raises here, before anything is written
            with Heartbeat(self.store, self.lease, self._on_flags, self._on_lost, interval=min(1.0, self.lease.ttl / 3)):
                if self.lease.took_over:  # under the heartbeat: stopping them may take seconds
                    reconcile.stop_leftovers(begin, self.run.id)
                if begin.steps or self.lease.took_over:
                    self.journal.commit(begin.events, begin.run, begin.steps)
                else:  # nothing to reconcile: the start goes out with the first step's (one transaction fewer per run)
                    self.journal.defer_start(begin.events, begin.run)
                try:
                    if self._preflight(begin.unresolved):
                        loop.run_steps(self)
                except (RunControl, LeaseLost, StoreError):
                    raise
                except Exception as exc:  # a bug or an unexpected error: the run fails, clearly, never stays "running"
                    loop.finish_broken(self, exc)
        except SecretsUnavailable as exc:  # a secret cannot be resolved at start: the run fails, its lock is freed
            self.journal.commit([NewEvent("run.failed", data={"reason": exc.reason})], exc.run_columns(self.run.state))
        except CancelRequested as exc:
            loop.finish_cancelled(self, exc.reason)
        except Interrupted as exc:
            loop.finish_interrupted(self, exc.reason or "interrupted")
        finally:
            self.resources.close()
            with contextlib.suppress(LeaseLost):
                self.journal.flush()
                self.store.release(self.lease)

    def roll_back_cancelled(self) -> tuple[list[str], list[str]]:
        """``cancel --rollback`` of a run already cancelled without it: run the rollback actions of its completed
        steps, last first, journaled under this execution's lease (the run stays ``cancelled``; a crash part-way is
        recovered by the same command: a finished rollback action never runs twice). Returns (rolled back, failed)."""
        from runner.engine.rollback import rollback_steps
        from runner.secrets import resolve_at_start

        self.params_obj = validate_params(self.spec.name, self.rb.params_model, self.run.params)
        resolve_at_start(self.secrets_view, self.param_values, self.spec.params, self.run.params)
        self.cancelling = True  # the run's own cancel must not stop the rollback it asks for
        try:
            with Heartbeat(self.store, self.lease, self._on_flags, self._on_lost, interval=min(1.0, self.lease.ttl / 3)):
                rolled, failed = rollback_steps(self, self.spec.steps)
                base = self.run.reason.split("; not rolled back:", 1)[0]
                reason = base + (f"; rolled back {', '.join(rolled)}" if rolled else "")
                reason += f"; rollback failed for {', '.join(failed)}" if failed else ""
                self.journal.commit([NewEvent("run.rolled_back", actor=self.opts.actor or None,
                                              data={"reason": reason, "rolled_back": rolled, "failed": failed})], {"reason": reason})  # fmt: skip
                return rolled, failed
        finally:
            self.resources.close()
            with contextlib.suppress(LeaseLost):
                self.journal.flush()

    def forget(self) -> None:
        """The drive is over: drop what it held per step (records, outputs), which reference cycles through this
        execution would otherwise keep until a full garbage collection (issue 19: bounded memory per run)."""
        self.steps = {}
        self._live = {}

    def _preflight(self, unresolved: SecretsUnavailable | None) -> bool:
        """Pre-flight the steps left (see runner.engine.preflight); False if it failed the run.

        A drive that only settles the run (a cancel's rollback) or runs one step for a caller that checked is only
        refused for secrets that cannot be resolved.
        """
        from runner.engine import preflight

        if self.run.cancel_requested or self.opts.detached_step is not None:
            problems = [preflight.PreflightProblem(unresolved.reason)] if unresolved is not None else []
        else:
            problems = preflight.check_execution(self)  # (it finds the unresolved secrets again, with the rest)
        if problems:
            preflight.refuse(self, problems)
        return not problems

    def stopping(self) -> bool:
        """True once a signal, a pause or a cancel asks the drive to stop starting work."""
        flags = self.journal.flags
        return bool(self.stop or flags.pause_requested or flags.cancel_requested)

    def gate_for(self, step_id: str) -> dict[str, Any] | None:
        """The approval gate the agent policy put on ``step_id`` for this run, if any."""
        from runner.store.progress import RunOptions

        return RunOptions.from_json(self.run.options).gates.get(step_id)

    # ------------------------------------------------------------------ contexts and templates

    def record_output(self, rec: StepRecord) -> None:
        """A step completed: its output is visible to later templates and steps (see :class:`DoneSteps`)."""
        if rec.state not in DONE_STEP_STATES:
            raise ValueError(f"step {rec.step_id} is {rec.state}, not done: its output is not known yet")

    def template_ctx(self, target: dict[str, Any] | None) -> dict[str, Any]:
        """What templates see: params, steps, run, secrets, alert, and ``target`` (a host) or ``item`` (a for_each unit)."""
        trigger = self.run.trigger or {}
        out = {"params": self.param_values, "steps": self.steps_view, "run": self._run_ctx, "secrets": self.secrets_view,
               "alert": trigger.get("alert"), "target": host_of(target)}  # fmt: skip
        if target is not None and ITEM in target:
            out[ITEM] = target[ITEM]
        return out

    def make_ctx(self, unit: Unit, attempt: int, timeout: float | None) -> Context:
        """A context for one action of ``unit``."""
        ctx = Context(
            release=self.forget_ctx,
            run_id=self.run.id, runbook=self.spec.name, step_id=unit.step.id, attempt=attempt, params=self.params_obj,
            param_values=self.param_values, outputs=self.outputs, settings=self.engine.settings, secrets=self.secrets_view,
            redactor=self.redactor, services=self.services, started_by=self.run.started_by,
            state=unit.rec.progress.local, target=host_of(unit.target), timeout=timeout,
            item=unit.target.get(ITEM) if unit.target else None, unit=unit.target["name"] if unit.target else None,
        )  # fmt: skip
        with self._lock:
            self._live[ctx] = unit
        if self.journal.flags.cancel_requested and not self.cancelling:
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
        self.output.done(ctx.step_id, ctx.unit)

    def live_output(self, ctx: Context, stream: str, line: str, part: str = "action") -> None:
        """A line the command of ``ctx``'s step wrote while it runs (see runner.engine.output); ``part``: what wrote it."""
        self.output.line(ctx.step_id, ctx.unit, ctx.attempt, stream, line, "rollback" if ctx.kind == "rollback" else part)

    def unit_of(self, ctx: Context) -> Unit | None:
        """The unit a live context acts for."""
        return self._live.get(ctx)

    # ------------------------------------------------------------------ time, signals, flags

    def left(self) -> float | None:
        """Seconds left of the budget (None: no budget)."""
        return None if self.opts.deadline is None else self.opts.deadline - time.monotonic()

    def sleep(self, seconds: float, *, stoppable: bool = True) -> bool:
        """Sleep up to ``seconds``; True if a pause, an interrupt or the budget cut it short. Raises on cancel."""
        end = time.monotonic() + max(0.0, seconds)
        if self.opts.deadline is not None and stoppable:
            end = min(end, self.opts.deadline - RESERVE)
        while True:
            left = end - time.monotonic()
            if self.journal.flags.cancel_requested:
                raise CancelRequested("cancel requested")
            if self.interrupts > 1:
                raise Interrupted("interrupted by a second signal")
            if stoppable and (self.stop or self.journal.flags.pause_requested):
                return True
            if left <= 0:
                return stoppable and self.opts.deadline is not None and time.monotonic() >= self.opts.deadline - RESERVE
            self.wake.wait(min(left, 1.0))
            self.wake.clear()

    def can_wait_in_process(self, wait: Wait) -> bool:
        """Whether to sleep until ``wait.not_before`` here rather than leave the run waiting."""
        if wait.kind in ("approval", "decision") or not self.opts.wait_in_process or self.opts.max_steps is not None:
            return False
        if self.stopping():
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
            self._cancel_live("interrupted by a second signal", interrupt=True)
        self.wake.set()

    def _on_flags(self, flags: Flags) -> None:
        self.journal.flags = flags
        if flags.cancel_requested and not self.cancelling:
            self._cancel_live("cancel requested")
        self.wake.set()

    def _on_lost(self) -> None:
        self._cancel_live("this executor lost its lease", interrupt=True)
        self.wake.set()

    def _cancel_live(self, reason: str, *, interrupt: bool = False) -> None:
        with self._lock:
            for ctx in list(self._live):
                ctx.cancel(reason, interrupt=interrupt)

    def elapsed_past_deadline(self) -> float:
        """Seconds the drive has run past its deadline (0 when within it or without a budget)."""
        return 0.0 if self.opts.deadline is None else max(0.0, time.monotonic() - self.opts.deadline)
