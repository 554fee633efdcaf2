"""Rendering step configs and evaluating checks (shared by execution and ``plan``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from runner.engine.expect import evaluate
from runner.errors import RunControl, StepFailed, UsageError
from runner.steptypes import ActionResult, StepType, Wait

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runner.context import Context
    from runner.model import Action, Check
    from runner.plugin import PluginHost
    from runner.secrets import Redactor
    from runner.templating import Renderer

__all__ = ["Prober", "evidence_of"]

SNIPPET = 512


def _snippet(text: str | None, redact: Callable[[str], str]) -> str | None:
    if text is None:
        return None
    text = redact(text)  # mask first: a secret cut in two by the snippet would otherwise show its first half
    return text if len(text) <= SNIPPET else text[:SNIPPET] + f"... ({len(text)} chars)"


def evidence_of(result: ActionResult | None, holds: bool, why: str, *, redact: Callable[[str], str] = str,
                **extra: Any) -> dict[str, Any]:  # fmt: skip
    """Compact, JSON-ready record of what a probe or action saw (``redact`` masks secrets before cutting)."""
    ev: dict[str, Any] = {"holds": holds, "detail": why, **extra}
    if result is not None:
        for key in ("exit_code", "status"):
            value = getattr(result, key)
            if value is not None:
                ev[key] = value
        for key in ("stdout", "stderr", "body"):
            snippet = _snippet(getattr(result, key), redact)
            if snippet:
                ev[key] = snippet
        if result.duration is not None:
            ev["duration"] = round(result.duration, 4)
    return ev


class Prober:
    """Renders configs and runs probes for one runbook file."""

    def __init__(self, host: PluginHost, renderer: Renderer, file: str, redactor: Redactor) -> None:
        self.host, self.renderer, self.file, self.redactor = host, renderer, file, redactor

    def render_config(self, step_type: StepType, config: dict[str, Any], tctx: Mapping[str, Any], step_id: str,
                      field: str, validated: BaseModel | None = None) -> BaseModel:  # fmt: skip
        """Render the templates in ``config`` (not the type's unrendered fields) and validate it.

        ``validated`` is the compiler's model of a config without templates (:attr:`Action.validated
        <runner.model.Action.validated>`): rendering would change nothing, so a shallow copy of it is the answer.
        """
        if validated is not None and type(validated) is step_type.Config:
            return validated.model_copy()
        unrendered = step_type.unrendered
        rendered = {
            key: value if key in unrendered else self.renderer.render(value, tctx, file=self.file, step=step_id, field=f"{field}.{key}")
            for key, value in config.items()
        }  # fmt: skip
        try:
            return step_type.Config.model_validate(rendered, context={"rendered": True})
        except PydanticValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or field}: {e['msg']}" for e in exc.errors(include_url=False))
            raise StepFailed(self.redactor.text(f"step '{step_id}': {field} after rendering templates: {problems}")) from None

    def invoke(self, action: Action, tctx: Mapping[str, Any], ctx: Context, field: str) -> ActionResult | Wait:
        """Render, validate and run one action (or rollback action) through the plugin hook."""
        step_type = self.host.step_types.get(action.type)
        config: dict[str, Any] = action.config
        model = self.render_config(step_type, config, tctx, ctx.step_id, field, action.validated)
        ctx.raw_config = config
        ctx.kind = "rollback" if field == "rollback" else "action"
        result: ActionResult | Wait = self.host.execute_action(step_type, model, ctx)
        return result

    def evaluate(self, checks: tuple[Check, ...] | list[Check], tctx: Mapping[str, Any], make_ctx: Callable[[], Context],
                 kind: str, *, all_of: bool = True) -> tuple[bool, list[dict[str, Any]]]:  # fmt: skip
        """Evaluate checks in order until one fails; (all held, evidence of each evaluated check)."""
        evidence: list[dict[str, Any]] = []
        for i, check in enumerate(checks):
            label = check.description or (f"expr {check.expr}" if check.expr is not None else self._summary(check))
            if check.expr is not None:
                holds = self.renderer.truthy(check.expr, tctx, file=self.file, step=make_ctx().step_id, field=f"{kind}[{i}].expr")
                evidence.append({"kind": kind, "index": i, "check": label, "holds": holds, "detail": "expression"})
            else:
                ctx = make_ctx()
                step_type = self.host.step_types.get(check.type or "")
                try:
                    model = self.render_config(step_type, check.config, tctx, ctx.step_id, f"{kind}[{i}].{check.type}")
                    ctx.raw_config = check.config
                    ctx.kind = kind
                    if not check.description:  # name the probe as it ran (rendered), not as written
                        label = f"{check.type}: {self.redactor.text(step_type.summary(model.model_dump(mode='json', by_alias=True)))}"
                    result = self.host.execute_action(step_type, model, ctx)
                except StepFailed as exc:
                    evidence.append({"kind": kind, "index": i, "check": label, "holds": False, "detail": self.redactor.text(str(exc))})
                    holds = False
                except (UsageError, RunControl):
                    raise  # a template or secret error is the runbook's; cancellation is the run's
                except Exception as exc:  # e.g. a NUL byte in an argument: the probe could not run, so it does not hold
                    detail = self.redactor.text(f"{type(exc).__name__}: {exc}")
                    evidence.append({"kind": kind, "index": i, "check": label, "holds": False, "detail": detail})
                    holds = False
                else:
                    if isinstance(result, Wait):
                        raise StepFailed(f"step type '{check.type}' cannot be used as a check: it waits")
                    holds, why = evaluate(check.expect, step_type.default_expect, result)
                    evidence.append(self.redactor.value({"kind": kind, "index": i, "check": label,
                                                         **evidence_of(result, holds, why, redact=self.redactor.text)}))  # fmt: skip
                finally:
                    ctx.release()
            if not holds and all_of:
                return False, evidence
        return True, evidence

    def _summary(self, check: Check) -> str:
        step_type = self.host.step_types.get(check.type or "")
        return f"{check.type}: {self.redactor.text(step_type.summary(check.config))}"
