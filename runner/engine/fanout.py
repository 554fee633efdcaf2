"""Fan-out: one step over many targets with ``batch`` rate control.

Targets run ``max_concurrency`` at a time (rolling), or in waves with
``pause_between`` waves when that is set. Once more than ``max_failures``
targets have failed, the remaining targets are not started. Each target's
outcome is journaled; a resumed run re-runs only targets that did not succeed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from runner.engine.steprunner import StepRunner, Unit
from runner.errors import RunControl, StepFailed
from runner.model import Batch
from runner.store.records import NewEvent, StepRecord, StepState

if TYPE_CHECKING:
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["FanOut"]

_OK = {str(StepState.SUCCEEDED), str(StepState.SATISFIED), str(StepState.SKIPPED)}


class FanOut:
    """Runs one step over its targets."""

    def __init__(self, exe: Execution, step: Step, rec: StepRecord) -> None:
        self.exe, self.step, self.rec = exe, step, rec

    def run(self) -> StepState:
        """Run the targets that have not succeeded; returns the step's outcome."""
        from runner.engine.execution import _target_rec
        from runner.inventory import load_inventory

        exe, step, rec = self.exe, self.step, self.rec
        value = exe.engine.renderer.render(step.targets, exe.template_ctx(None), file=exe.rb.file, step=step.id, field="targets")
        targets = load_inventory(exe.engine.settings.inventory).resolve(value)
        if not targets:
            raise StepFailed(f"step '{step.id}': targets {step.targets!r} resolved to no hosts")
        stored = rec.data.setdefault("targets", {})
        todo = [t for t in targets if stored.get(t["name"], {}).get("state") not in _OK]
        batch = step.batch or Batch()
        concurrency, max_failures = batch.resolve(len(targets))
        rec.state, rec.started_at = StepState.RUNNING, rec.started_at or time.time()
        for t in todo:
            stored.setdefault(t["name"], {"state": "pending", "attempts": 0})
        exe.save(Unit(step, rec), [NewEvent("step.started", step_id=step.id, data={
            "targets": [t["name"] for t in targets], "to_run": [t["name"] for t in todo],
            "max_concurrency": concurrency, "max_failures": max_failures})])  # fmt: skip
        failures = 0
        lock = threading.Lock()
        queue = list(todo)
        runner = StepRunner(exe)

        def one(target: dict[str, Any]) -> str:
            unit = Unit(step, _target_rec(rec, stored[target["name"]]), target)
            return str(runner.run(unit))

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"fanout-{step.id}") as pool:
            running: dict[Future[str], dict[str, Any]] = {}
            while queue or running:
                wave = batch.pause_between > 0
                while queue and len(running) < concurrency and failures <= max_failures and not self._stopping():
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
                        stored[target["name"]].update(state=state, reason=exe.redactor.text(f"{type(exc).__name__}: {exc}"))
                    with lock:
                        if state not in _OK and state != str(StepState.PENDING):
                            failures += 1
                if wave and queue and failures <= max_failures:
                    exe.sleep(batch.pause_between, stoppable=False)
        return self._outcome(targets, failures, max_failures)

    def _stopping(self) -> bool:
        return bool(self.exe.stop or self.exe.flags.pause_requested or self.exe.flags.cancel_requested)

    def _outcome(self, targets: list[dict[str, Any]], failures: int, max_failures: int) -> StepState:
        exe, step, rec = self.exe, self.step, self.rec
        stored = rec.data["targets"]
        by_state: dict[str, list[str]] = {}
        for t in targets:
            entry = stored[t["name"]]
            if entry.get("state") == "pending" and failures > max_failures:
                entry.update(state="not_started", reason=f"not started: more than {max_failures} target(s) failed")
            by_state.setdefault(entry.get("state", "pending"), []).append(t["name"])
        rec.output = {name: stored[name].get("output") for name in (t["name"] for t in targets)}
        bad = {k: v for k, v in by_state.items() if k not in _OK}
        summary = ", ".join(f"{len(v)} {k} ({', '.join(v)})" for k, v in sorted(by_state.items()))
        if not bad:
            state = StepState.SUCCEEDED
        elif set(bad) <= {"pending"}:
            state = StepState.PENDING  # stopped by a pause or interrupt between targets
        elif set(bad) <= {"unknown", "pending"}:
            state = StepState.UNKNOWN
        elif set(bad) <= {"waiting", "pending"}:
            state = StepState.WAITING
        else:
            state = StepState.FAILED
        rec.state, rec.reason = state, f"targets: {summary}"
        if state in (StepState.SUCCEEDED, StepState.FAILED):
            rec.finished_at = time.time()
        exe.save(
            Unit(step, rec),
            [NewEvent("step.finished", step_id=step.id, data={"state": str(state), "reason": rec.reason, "by_state": by_state})],
        )
        return state
