"""Built-in ``shell`` step type: run a local command.

Two forms:

``command``
    An argv list, run without a shell. Templates render each argument as data,
    so a param such as ``x; rm -rf /`` is one literal argument.
``script``
    Shell text run by ``sh -e``. The text is *not* templated: params reach it
    as environment variables (``"$service"``), so values are never pasted into
    code. ``env`` values may be templates.

The process runs in its own process group; a timeout or a cancellation stops
the whole group (SIGTERM, then SIGKILL after ``kill_grace``). stdout and stderr
are captured up to ``max_output`` bytes each.
"""

from __future__ import annotations

from runner.plugin import hookimpl
from runner.registry import StepTypeRegistry

__all__ = ["runbook_register_step_types"]


@hookimpl
def runbook_register_step_types(registry: StepTypeRegistry) -> None:
    """Register the ``shell`` step type."""
    registry.add_lazy("shell", "runbook_shell.step:ShellStep")
