"""``runbook plan``: what a run would do, from read-only probes only. No mutation, no run record."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from runner.context import Context
from runner.engine.probes import Prober
from runner.engine.runtime import ParamValues, Resources
from runner.errors import SecretError, StepFailed, UsageError
from runner.params import validate_params
from runner.secrets import Redactor, SecretResolver, SecretsView

if TYPE_CHECKING:
    from runner.engine.engine import Engine
    from runner.model import Check, Step
    from runner.steptypes import ActionResult, Wait

__all__ = ["PlanStep", "PlanView", "plan"]


class PlanStep(BaseModel):
    """The verdict for one step."""

    id: str
    type: str
    verdict: str  # would-run | already-satisfied | would-skip | blocked | would-wait | cannot-know
    reason: str
    evidence: list[dict[str, Any]] = []


class PlanView(BaseModel):
    """JSON shape of ``runbook plan --json``."""

    runbook: str
    params: dict[str, Any]
    steps: list[PlanStep]
    summary: dict[str, int]


class _PlanServices:
    """Services for probes during a plan: nothing is written anywhere."""

    def __init__(self, prober: Prober, tctx: dict[str, Any], resources: Resources) -> None:
        self.prober, self.tctx, self.resources = prober, tctx, resources

    def run_action(self, ctx: Context, type_name: str, config: dict[str, Any]) -> ActionResult | Wait:
        raise StepFailed("plan does not run actions")

    def evaluate_checks(self, ctx: Context, checks: list[Check], kind: str) -> tuple[bool, list[dict[str, Any]]]:
        return self.prober.evaluate(checks, self.tctx, lambda: ctx, kind)

    def approvals(self, ctx: Context) -> list[dict[str, Any]]:
        return []

    def child_run(self, ctx: Context, runbook: str, params: dict[str, Any]) -> dict[str, Any]:
        raise StepFailed("plan does not look into sub-runbooks")

    def journal(self, ctx: Context, kind: str, data: dict[str, Any]) -> None:
        return None

    def output(self, ctx: Context, stream: str, line: str) -> None:
        return None  # a plan shows probes' results, not their live output

    def last_seq(self) -> int:
        return 0

    def persist_state(self, ctx: Context) -> None:
        return None

    def resource(self, key: str, factory: Callable[[], Any]) -> Any:
        return self.resources.get(key, factory)


def plan(engine: Engine, name: str, params: dict[str, Any], *, trigger: dict[str, Any] | None = None) -> PlanView:
    """Evaluate params and templates and run only ``when``, ``precondition`` and ``check`` probes."""
    rb = engine.catalog.get(name)
    model = validate_params(name, rb.params_model, params)
    values = model.model_dump(mode="json")
    redactor = Redactor()
    resolver = SecretResolver(engine.host.secret_providers, redactor)
    prober = Prober(engine.host, engine.renderer, rb.file, redactor)
    tctx: dict[str, Any] = {
        "params": ParamValues(values, rb.spec.params, resolver), "steps": {}, "secrets": SecretsView(rb.spec.secrets, resolver),
        "run": {"id": None, "runbook": name, "started_by": engine.settings.actor, "trigger": trigger},
        "alert": (trigger or {}).get("alert"), "target": None,
    }  # fmt: skip
    for secret in rb.spec.secrets:  # resolved (and so masked) before any probe runs; unresolvable ones hold no value
        with contextlib.suppress(SecretError):
            tctx["secrets"][secret]
    for pname, spec in rb.spec.params.items():
        if spec.secret and values.get(pname) is not None:
            with contextlib.suppress(SecretError):
                tctx["params"][pname]
    resources = Resources()
    services = _PlanServices(prober, tctx, resources)

    def make_ctx(step: Step) -> Callable[[], Context]:
        return lambda: Context(run_id="plan", runbook=name, step_id=step.id, attempt=0, params=model, param_values=tctx["params"],
                               outputs={}, settings=engine.settings, secrets=tctx["secrets"], redactor=redactor, services=services,
                               started_by=engine.settings.actor, timeout=step.timeout or 60.0)  # fmt: skip

    out: list[PlanStep] = []
    try:
        for step in rb.spec.steps:
            out.append(_plan_step(engine, prober, step, tctx, make_ctx(step), redactor))
    finally:
        resources.close()
    summary: dict[str, int] = {}
    for s in out:
        summary[s.verdict] = summary.get(s.verdict, 0) + 1
    return PlanView(runbook=name, params=redactor.value(values), steps=out, summary=summary)


def _plan_step(engine: Engine, prober: Prober, step: Step, tctx: dict[str, Any], make: Callable[[], Context],
               redactor: Redactor) -> PlanStep:  # fmt: skip
    step_type = engine.host.step_types.get(step.action.type)

    def verdict(v: str, reason: str, evidence: list[dict[str, Any]] | None = None) -> PlanStep:
        return PlanStep(id=step.id, type=step.action.type, verdict=v, reason=redactor.text(reason), evidence=evidence or [])

    evidence: list[dict[str, Any]] = []
    try:
        if step.when is not None and not engine.renderer.truthy(step.when, tctx, file=prober.file, step=step.id, field="when"):
            return verdict("would-skip", f"when: {step.when} is false")
        if step.targets is not None:
            return verdict("cannot-know", "fans out over targets; run `plan` per target is not supported, checks run per target")
        if step.precondition:
            held, ev = prober.evaluate(step.precondition, tctx, make, "precondition")
            evidence += ev
            if not held:
                return verdict("blocked", f"precondition does not hold: {ev[-1]['detail']}", evidence)
        if step.check:
            held, ev = prober.evaluate(step.check, tctx, make, "check")
            evidence += ev
            if held:
                return verdict("already-satisfied", "check holds: " + "; ".join(e["check"] for e in ev), evidence)
            return verdict("would-run", f"check does not hold: {ev[-1]['detail']}", evidence)
        if step_type.may_wait:
            return verdict("would-wait", f"{step.action.type}: {step_type.summary(step.action.config)}")
        return verdict("would-run", "no check: the action would run")
    except UsageError as exc:
        return verdict("cannot-know", f"depends on what earlier steps do ({exc})", evidence)
    except StepFailed as exc:
        return verdict("cannot-know", str(exc), evidence)
