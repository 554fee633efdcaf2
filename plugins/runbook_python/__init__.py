"""Built-in ``python`` step type: call a Python function.

``python: {call: "package.module:function", args: {...}}`` calls
``function(ctx, params, **args)``. Functions of Python runbooks (decorated with
``@rb.step``) compile to exactly this form. As a probe (``check``,
``precondition``, ``verify``) the function's truthiness decides, unless the
check gives an ``expect``.
"""

from __future__ import annotations

from runner.plugin import hookimpl
from runner.registry import StepTypeRegistry

__all__ = ["runbook_register_step_types"]


@hookimpl
def runbook_register_step_types(registry: StepTypeRegistry) -> None:
    """Register the ``python`` step type."""
    registry.add_lazy("python", "runbook_python.step:PythonStep")
