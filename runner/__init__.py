"""``runner``: the core of the ``runbook`` executable runbook framework.

Public API (imported lazily so ``runbook --help`` stays fast):

- Authoring: :class:`Runbook`, :class:`Params`, :data:`Secret`, :class:`Context`
- Running from Python: :class:`Client`, :func:`start`, :func:`resume`, :func:`step`, :func:`status`,
  :func:`plan`, :func:`pause`, :func:`cancel`, :func:`approve`, :func:`deny`, :func:`list_runs`,
  :func:`events`, returning :class:`RunView` / :class:`PlanView` (see :mod:`runner.api`)
- Errors: :class:`RunbookError` and its tree in :mod:`runner.errors`
- Plugins: :data:`hookimpl`, :class:`StepType`, :class:`ActionResult`, :class:`Wait`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner._version import __version__

if TYPE_CHECKING:
    from runner.api import Client, PlanView, RunView, approve, cancel, deny, events, list_runs, pause, plan, resume, start, status, step
    from runner.context import Context
    from runner.errors import RunbookError
    from runner.params import Params, Secret
    from runner.plugin import hookimpl
    from runner.pyform import Runbook
    from runner.steptypes import ActionResult, StepType, Wait

__all__ = [
    "ActionResult",
    "Client",
    "Context",
    "Params",
    "PlanView",
    "RunView",
    "Runbook",
    "RunbookError",
    "Secret",
    "StepType",
    "Wait",
    "__version__",
    "approve",
    "cancel",
    "deny",
    "events",
    "hookimpl",
    "list_runs",
    "pause",
    "plan",
    "resume",
    "start",
    "status",
    "step",
]

_LAZY = {
    "ActionResult": "runner.steptypes",
    "Context": "runner.context",
    "Params": "runner.params",
    "Runbook": "runner.pyform",
    "RunbookError": "runner.errors",
    "Secret": "runner.params",
    "StepType": "runner.steptypes",
    "Wait": "runner.steptypes",
    "hookimpl": "runner.plugin",
    "Client": "runner.api",
    "PlanView": "runner.api",
    "RunView": "runner.api",
    "approve": "runner.api",
    "cancel": "runner.api",
    "deny": "runner.api",
    "events": "runner.api",
    "list_runs": "runner.api",
    "pause": "runner.api",
    "plan": "runner.api",
    "resume": "runner.api",
    "start": "runner.api",
    "status": "runner.api",
    "step": "runner.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
