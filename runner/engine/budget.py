"""Budgets: what a step is expected to need, and whether what is left of a caller's budget can hold it.

A budget counts from process start (a CLI) or from the call (the Python API, MCP). Before each step
the engine estimates what the step needs — its ``expected`` duration, else its ``timeout`` (plus
``verify.within``), else what the step type knows (``wait: {for}``) — and does not start it if that
exceeds what is left. A budget that could *never* hold the step (less than its estimate plus a second
for starting up) is a hand-off: ``next.action`` says ``handoff`` and names a budget that fits.
A step with no estimate at all runs in a detached executor when the caller has a budget
(:mod:`runner.engine.detach`), so the caller returns on time and the step is never cut short.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from runner.engine.execution import RESERVE

if TYPE_CHECKING:
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["budget_that_fits", "estimate", "stop_reason"]


def estimate(exe: Execution, step: Step) -> float | None:
    """Seconds ``step`` may take, when anything says (None: unknown, or a step that only enters a wait)."""
    step_type = exe.host.step_types.get(step.action.type)
    if step_type.may_wait:
        return None  # entering a wait or approval step is cheap: it persists its deadline and returns
    if step.expected is not None:
        return float(step.expected)
    if step.timeout is not None:
        return float(step.timeout) + (float(step.verify.within) if step.verify else 0.0)
    return step_type.estimate(step.action.config)


def budget_that_fits(exe: Execution, step: Step) -> int | None:
    """Whole seconds of budget that fit ``step`` when this drive's budget never can (else None)."""
    need = estimate(exe, step) or 0.0
    if exe.opts.budget is None or need + RESERVE + exe.opts.startup <= exe.opts.budget:
        return None
    return int(need + RESERVE + exe.opts.startup + 1)


def stop_reason(exe: Execution, step: Step) -> str | None:
    """Why the budget stops the drive before ``step`` (None: it may start)."""
    if exe.opts.deadline is None:
        return None
    left = exe.opts.deadline - time.monotonic()
    need = estimate(exe, step)
    if left > RESERVE and (need is None or need + RESERVE <= left):
        return None
    needs = f"needs up to {need:g}s" if need is not None else "cannot start"
    reason = f"budget reached: step '{step.id}' {needs}, {max(left, 0):.1f}s left"
    fits = budget_that_fits(exe, step)
    if fits is not None:
        reason += f"; a budget of {exe.opts.budget:g}s can never fit this step: hand it off (resume with --budget {fits}s or more, or without a budget)"
    return reason
