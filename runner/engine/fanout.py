"""Fan-out: one step over many targets (``targets``) or items (``for_each``) with ``batch`` rate control.

Targets run ``max_concurrency`` at a time (rolling), or in waves with
``pause_between`` waves when that is set. Once more than ``max_failures``
targets have failed, the remaining targets are not started (``not_started``).
Each target's (or item's) outcome is journaled as a :class:`~runner.store.progress.TargetRecord`
inside its step's progress, under its name (an item's key, see :mod:`runner.engine.units`); a resumed run
re-runs only the targets or items that did not succeed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from runner.engine.steprunner import StepRunner, Unit
from runner.engine.units import ITEM, resolve_units, stored_target
from runner.errors import RunControl
from runner.model import Batch
from runner.store.progress import TargetRecord
from runner.store.records import DONE_STEP_STATES, NewEvent, StepRecord, StepState
from runner.store.transitions import StepEvent, step_after

if TYPE_CHECKING:
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["FanOut", "target_record", "target_unit"]

_OK = {str(s) for s in DONE_STEP_STATES}


def target_unit(step: Step, step_rec: StepRecord, name: str) -> Unit:
    """A unit for target (or item) ``name`` of ``step``, its record built from the stored :class:`TargetRecord`."""
    t = step_rec.progress.targets[name]
    state = StepState.PENDING if t.state == StepState.NOT_STARTED else StepState(t.state)
    rec = StepRecord(run_id=step_rec.run_id, step_id=step_rec.step_id, idx=step_rec.idx, state=state, attempts=t.attempts,
                     output=t.output, reason=t.reason, started_at=t.started_at, finished_at=t.finished_at,
                     not_before=t.not_before, progress=t.progress)  # fmt: skip
    return Unit(step, rec, stored_target(step, step_rec, name))


def target_record(rec: StepRecord, previous: TargetRecord | None = None) -> TargetRecord:
    """The stored form of a target unit's record (the item of a ``for_each`` unit is kept from ``previous``)."""
    return TargetRecord(state=str(rec.state), attempts=rec.attempts, output=rec.output, reason=rec.reason,
                        started_at=rec.started_at, finished_at=rec.finished_at, not_before=rec.not_before,
                        progress=rec.progress, item=previous.item if previous is not None else None)  # fmt: skip


class FanOut:
    """Runs one step over its targets."""

    def __init__(self, exe: Execution, step: Step, rec: StepRecord) -> None:
        self.exe, self.step, self.rec = exe, step, rec

    def run(self) -> StepState:
        """Run the targets that have not succeeded; returns the step's outcome."""
        exe, step, rec = self.exe, self.step, self.rec
        targets = resolve_units(step, exe.engine.renderer, exe.template_ctx(None), file=exe.rb.file,
                                inventory=exe.engine.settings.inventory)  # fmt: skip
        stored = rec.progress.targets
        todo = [t for t in targets if t["name"] not in stored or stored[t["name"]].state not in _OK]
        batch = step.batch or Batch()
        concurrency, max_failures = batch.resolve(len(targets))
        if rec.state != StepState.RUNNING:
            rec.state = step_after(rec.state, StepEvent.BEGIN)
        rec.started_at = rec.started_at or time.time()
        for t in todo:
            stored.setdefault(t["name"], TargetRecord(item=exe.redactor.value(t[ITEM]) if ITEM in t else None))
        exe.save(Unit(step, rec), [NewEvent("step.started", step_id=step.id, data={
            "targets": [t["name"] for t in targets], "to_run": [t["name"] for t in todo],
            "max_concurrency": concurrency, "max_failures": max_failures})])  # fmt: skip
        failures = 0
        lock = threading.Lock()
        queue = list(todo)
        runner = StepRunner(exe)

        def one(target: dict[str, Any]) -> str:
            unit = target_unit(step, rec, target["name"])
            unit.target = target
            return str(runner.run(unit))

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"fanout-{step.id}") as pool:
            running: dict[Future[str], dict[str, Any]] = {}
            while queue or running:
                wave = batch.pause_between > 0
                while queue and len(running) < concurrency and failures <= max_failures and not exe.stopping():
                    target = queue.pop(0)
                    running[pool.submit(one, target)] = target
                    if wave and len(running) >= concurrency:
                        break
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED if not wave else "ALL_COMPLETED")
                for fut in finished:
                    target = running.pop(fut)
                    try:
                        state = fut.result()
                    except RunControl:
                        raise
                    except Exception as exc:  # a target's crash fails that target only
                        state = str(StepState.FAILED)
                        entry = stored[target["name"]]
                        entry.state, entry.reason = state, exe.redactor.text(f"{type(exc).__name__}: {exc}")
                    with lock:
                        if state not in _OK and state != str(StepState.PENDING):
                            failures += 1
                if wave and queue and failures <= max_failures:
                    exe.sleep(batch.pause_between, stoppable=False)
        return self._outcome(targets, failures, max_failures)

    def _outcome(self, targets: list[dict[str, Any]], failures: int, max_failures: int) -> StepState:
        exe, step, rec = self.exe, self.step, self.rec
        stored = rec.progress.targets
        by_state: dict[str, list[str]] = {}
        what = "items" if step.for_each is not None else "targets"
        for t in targets:
            entry = stored[t["name"]]
            if entry.state == StepState.PENDING and failures > max_failures:
                entry.state = str(step_after(entry.state, StepEvent.HOLD))
                entry.reason = f"not started: more than {max_failures} {what[:-1]}(s) failed"
            by_state.setdefault(entry.state, []).append(t["name"])
        rec.output = {t["name"]: stored[t["name"]].output for t in targets}
        bad = {k: v for k, v in by_state.items() if k not in _OK}
        summary = ", ".join(f"{len(v)} {k} ({', '.join(v)})" for k, v in sorted(by_state.items()))
        state, event = _step_outcome(set(bad))
        rec.state = step_after(rec.state, event)
        rec.reason = f"{what}: {summary}" if targets else "for_each: no items, nothing to do"
        if state in (StepState.SUCCEEDED, StepState.FAILED):
            rec.finished_at = time.time()
        exe.save(
            Unit(step, rec),
            [NewEvent("step.finished", step_id=step.id, data={"state": str(state), "reason": rec.reason, "by_state": by_state})],
        )
        return state


def _step_outcome(bad: set[str]) -> tuple[StepState, StepEvent]:
    """A fan-out step's state from the states of its targets that are not done."""
    if not bad:
        return StepState.SUCCEEDED, StepEvent.SUCCEED
    if bad <= {"pending"}:
        return StepState.PENDING, StepEvent.RELEASE  # stopped by a pause or interrupt between targets
    if bad <= {"unknown", "pending"}:
        return StepState.UNKNOWN, StepEvent.LOSE
    if bad <= {"waiting", "pending"}:
        return StepState.WAITING, StepEvent.WAIT
    return StepState.FAILED, StepEvent.FAIL
