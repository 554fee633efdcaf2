"""Built-in flow step types: ``wait``, ``approval`` and ``runbook`` (sub-runbook).

All three can leave a run ``waiting`` without a live process: their deadlines
and progress live in the journal, and any later ``resume`` (or a worker)
polls them again.
"""

from __future__ import annotations

from runner.plugin import hookimpl
from runner.registry import StepTypeRegistry

__all__ = ["runbook_register_step_types"]


@hookimpl
def runbook_register_step_types(registry: StepTypeRegistry) -> None:
    """Register ``wait``, ``approval`` and ``runbook``."""
    registry.add_lazy("wait", "runbook_flow.steps:WaitStep")
    registry.add_lazy("approval", "runbook_flow.steps:ApprovalStep")
    registry.add_lazy("runbook", "runbook_flow.steps:SubRunbookStep")
