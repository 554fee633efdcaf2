"""``on_failure: rollback``: undo completed steps in reverse order, each journaled."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from runner.engine.expect import evaluate
from runner.engine.steprunner import Unit
from runner.errors import RunControl, StepFailed, UsageError
from runner.steptypes import ActionResult
from runner.store.records import NewEvent, StepPatch, StepState

if TYPE_CHECKING:
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["rollback_steps"]


def rollback_steps(exe: Execution, failed: Step) -> list[str]:
    """Run the ``rollback`` action of every succeeded step before ``failed``, last first."""
    done: list[str] = []
    order = exe.spec.steps[: exe.spec.index(failed.id)]
    for step in reversed(order):
        rec = exe.steps[step.id]
        if step.rollback is None or rec.state != StepState.SUCCEEDED:
            continue
        targets: list[dict[str, Any] | None] = [
            {"name": n} for n, t in (rec.data.get("targets") or {}).items() if t.get("state") == "succeeded"
        ]
        ok, detail = True, "rolled back"
        for target in targets or [None]:
            unit = Unit(step, rec, target)
            exe.commit([unit.event("rollback.started", {"type": step.rollback.type})])
            ctx = exe.make_ctx(unit, rec.attempts, step.timeout)
            try:
                result = exe.prober.invoke(step.rollback, exe.template_ctx(target), ctx, "rollback")
                step_type = exe.host.step_types.get(step.rollback.type)
                held, why = (
                    evaluate(None, step_type.default_expect, result) if isinstance(result, ActionResult) else (False, "rollback waited")
                )
            except RunControl:
                raise
            except (StepFailed, UsageError) as exc:
                held, why = False, exe.redactor.text(str(exc))
            finally:
                exe.forget_ctx(ctx)
            exe.commit([unit.event("rollback.finished", {"holds": held, "detail": why})])
            if not held:
                ok, detail = False, f"rollback failed: {why}"
        if ok:
            rec.state = StepState.ROLLED_BACK
            done.append(step.id)
        rec.reason, rec.finished_at = detail, time.time()
        exe.commit(
            [NewEvent("step.finished", step_id=step.id, data={"state": str(rec.state), "reason": detail})], steps=[StepPatch.of(rec)]
        )
    return done
