"""Rolling back: run the ``rollback`` actions of completed steps in reverse order, each journaled.

Used when a step fails under ``on_failure: rollback`` and by ``runbook cancel --rollback``. Each
rollback action's completion is recorded in its step's progress before the next one starts, so a
resume after a crash goes on where the rollback stopped and never runs a finished rollback action
again (an action cut short by the crash is run again, after what it left running was stopped).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runner.engine.expect import evaluate
from runner.engine.output import has_streams
from runner.engine.steprunner import Unit
from runner.engine.units import stored_target
from runner.errors import RunControl, StepFailed, UsageError
from runner.steptypes import ActionResult
from runner.store.progress import RollbackProgress
from runner.store.records import NewEvent, StepState
from runner.store.transitions import StepEvent, step_after

if TYPE_CHECKING:
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["rollback_steps", "undoable"]


def undoable(exe: Execution, steps: Sequence[Step]) -> list[Step]:
    """Of ``steps``, those that completed by acting (``succeeded``) and have a ``rollback`` action, last first."""
    return [s for s in reversed(steps) if s.rollback is not None and exe.steps[s.id].state == StepState.SUCCEEDED]


def rollback_steps(exe: Execution, steps: Sequence[Step]) -> tuple[list[str], list[str]]:
    """Roll back the undoable ``steps`` (see :func:`undoable`), last first; returns (rolled back, failed) step ids."""
    done: list[str] = []
    failed: list[str] = []
    for step in undoable(exe, steps):
        (done if _rollback_one(exe, step) else failed).append(step.id)
    return done, failed


def _rollback_one(exe: Execution, step: Step) -> bool:
    rec = exe.steps[step.id]
    progress = rec.progress.rollback = rec.progress.rollback or RollbackProgress()
    names = [n for n, t in rec.progress.targets.items() if t.state == StepState.SUCCEEDED]
    ok, detail = True, "rolled back"
    for name in names or [""]:
        if name in progress.done:
            continue
        unit = Unit(step, rec, stored_target(step, rec, name) if name else None)
        exe.journal.commit([unit.event("rollback.started", {"type": step.rollback.type if step.rollback else ""})])
        held, why, output = _invoke(exe, unit)
        if held:
            progress.done.append(name)
            if name:
                target = rec.progress.targets[name]
                target.state = str(step_after(target.state, StepEvent.ROLL_BACK))
        data = {"holds": held, "detail": why, **({"output": output} if has_streams(output) else {})}  # what it printed: logs
        exe.journal.commit([unit.event("rollback.finished", data)], steps=[rec])
        if not held:
            ok, detail = False, f"rollback failed: {why}"
    if ok:
        rec.state = step_after(rec.state, StepEvent.ROLL_BACK)
    progress.failed = "" if ok else detail  # the step stays `succeeded` (its change is in place): `next` names it
    rec.reason, rec.finished_at = detail, time.time()
    data = {"state": str(rec.state), "reason": detail, **({} if ok else {"rollback": "failed"})}
    exe.journal.commit([NewEvent("step.finished", step_id=step.id, data=data)], steps=[rec])
    return ok


def _invoke(exe: Execution, unit: Unit) -> tuple[bool, str, Any]:
    """Run the rollback action of ``unit``: (held, why, its captured output, redacted; None when it had none)."""
    step = unit.step
    assert step.rollback is not None
    ctx = exe.make_ctx(unit, unit.rec.attempts, step.timeout)
    try:
        result = exe.prober.invoke(step.rollback, exe.template_ctx(unit.target), ctx, "rollback")
        if not isinstance(result, ActionResult):
            return False, "a rollback action cannot wait", None
        held, why = evaluate(None, exe.host.step_types.get(step.rollback.type).default_expect, result)
        return held, why, exe.redactor.value(result.as_output())
    except RunControl:
        raise
    except (StepFailed, UsageError) as exc:
        return False, exe.redactor.text(str(exc)), None
    finally:
        exe.forget_ctx(ctx)
