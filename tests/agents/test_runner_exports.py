"""The public surface of ``runner``: exactly these names, each resolvable, and none loaded before it is used."""

from __future__ import annotations

import subprocess
import sys

import runner

EXPORTED = [
    "ActionResult", "Client", "Context", "Params", "PlanView", "RunView", "Runbook", "RunbookError", "Secret", "StepType",
    "Wait", "__version__", "approve", "cancel", "deny", "events", "hookimpl", "list_runs", "pause", "plan", "resume",
    "start", "status", "step",
]  # fmt: skip


def test_exported_members_are_exactly_the_documented_ones() -> None:
    assert runner.__all__ == EXPORTED
    assert runner.__all__ == sorted(runner.__all__), "keep __all__ sorted"
    assert dir(runner) == sorted(EXPORTED)
    for name in EXPORTED:
        value = getattr(runner, name)
        assert value is not None and (name == "__version__" or value.__doc__), f"runner.{name} has no docstring"


def test_exports_resolve_lazily() -> None:
    """``import runner`` loads neither the API nor pydantic; touching ``runner.start`` loads the API."""
    code = (
        "import sys, runner\n"
        "before = {m for m in ('runner.api', 'runner.engine', 'pydantic') if m in sys.modules}\n"
        "runner.start\n"
        "print(sorted(before), 'runner.api' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[] True"
