"""Steps that outlive their caller's budget: run in a detached executor, picked up by the next resume.

A caller with a budget (an agent that lives a few seconds per wake-up) cannot know how long a step with no
``expected``/``timeout`` takes. Rather than overrun the budget, or kill the step when the caller exits, the
engine hands such a step to a *detached executor*: a ``runbook`` process in a session of its own
(``runbook _detached RUN --step STEP``) that takes the run's lease, runs exactly that step (through its
probes, gate, retries and verification, journaled as always) and stops at the next boundary. The caller
waits for it while its budget lasts, then continues the run itself or returns with ``next.action``
``resume``: the next ``resume`` waits for the detached executor (again within its own budget) and goes on.
Nothing is run twice and no step is ever cut short by a caller's budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from runner.engine import budget
from runner.engine.holder import is_alive
from runner.store.records import NewEvent, RunRecord, RunState, StepRecord, StepState

if TYPE_CHECKING:
    from runner.engine.engine import Engine
    from runner.engine.execution import Execution
    from runner.model import Step

__all__ = ["DETACHED", "await_detached", "hand_over", "held_by_detached", "should_detach"]

DETACHED = "detached"
"""The holder kind of a detached executor."""
_POLL = 0.05


def should_detach(exe: Execution, step: Step, rec: StepRecord) -> bool:
    """True if ``step`` must not run under this drive's budget: a budget is set and nothing says how long it takes."""
    opts = exe.opts
    if not opts.detach or opts.deadline is None or opts.max_steps is not None or rec.state != StepState.PENDING:
        return False
    if exe.host.step_types.get(step.action.type).may_wait:
        return False
    return budget.estimate(exe, step) is None


def hand_over(exe: Execution, step: Step) -> None:
    """Start a detached executor for ``step`` and give it the run (this drive ends without a state change)."""
    exe.journal.flush()
    argv = [sys.executable, "-m", "runner", *exe.engine.hint.prefix, "_detached", exe.run.id, "--step", step.id]
    if exe.opts.actor:
        argv += ["--as", exe.opts.actor]
    exe.journal.commit([NewEvent("run.handed_over", step_id=step.id, data={
        "reason": f"step '{step.id}' declares no expected duration or timeout, so a budget cannot hold it: it runs in a "
                  "detached executor that the next resume waits for"})])  # fmt: skip
    exe.detached = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, env=dict(os.environ))  # fmt: skip


def held_by_detached(run: RunRecord) -> bool:
    """True if a live detached executor on this host holds ``run``."""
    return run.state == RunState.RUNNING and run.holder is not None and run.holder.kind == DETACHED and is_alive(run.holder) is True


def await_detached(engine: Engine, run_id: str, deadline: float | None, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait (until ``deadline``, a ``time.monotonic()``) while a detached executor holds the run; True once it let go.

    ``proc`` is the executor this process just started: until it takes the lease, its exit ends the wait too.
    """
    from runner.engine.execution import RESERVE

    taken = proc is None
    while True:
        run = engine.store.get_run(run_id)
        if held_by_detached(run):
            taken = True
        elif taken or run.state != RunState.RUNNING or (proc is not None and proc.poll() is not None):
            return True
        if deadline is not None and time.monotonic() + _POLL + RESERVE >= deadline:
            return False
        time.sleep(_POLL)
