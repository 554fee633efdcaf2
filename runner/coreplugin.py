"""Hook implementations of the core itself (registered from ``runner.plugin._CORE_PLUGINS``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from runner.plugin import hookimpl

if TYPE_CHECKING:
    from runner.context import Context
    from runner.registry import TemplateFilterRegistry
    from runner.steptypes import ActionResult, Finding, PreflightFacts, StepType, Wait


@hookimpl(trylast=True)
def runbook_execute_action(step_type: StepType, config: Any, ctx: Context) -> ActionResult | Wait:
    """Run the action: the innermost implementation, which wrappers surround."""
    return step_type.execute(config, ctx)


@hookimpl(trylast=True)
def runbook_preflight_action(step_type: StepType, config: Any, facts: PreflightFacts) -> list[Finding]:
    """The step type's own pre-flight: the innermost implementation."""
    return step_type.preflight(config, facts)


@hookimpl
def runbook_register_template_filters(registry: TemplateFilterRegistry) -> None:
    """Filters every runbook may use: ``to_json``, ``from_json``, ``b64encode``, ``b64decode``."""
    registry.add("to_json", lambda value: json.dumps(value, sort_keys=True, default=str))
    registry.add("from_json", json.loads)
    registry.add("b64encode", _b64encode)
    registry.add("b64decode", _b64decode)


def _b64encode(value: Any) -> str:
    import base64

    data = value if isinstance(value, bytes) else str(value).encode()
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: Any) -> str:
    import base64

    return base64.b64decode(str(value), validate=True).decode("utf-8")
