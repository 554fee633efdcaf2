"""``runbook plan``: what a run would do, from read-only probes only. No mutation, no run record.

Each step is planned as the run would meet it: ``when``, then (per target or ``for_each`` item, rendered with
it) ``precondition`` and ``check`` probes; the action is rendered as it would run (secrets masked by the run's
redactor) and a sub-runbook step is planned in turn with the params it would get. A probe's answer *now* is
not the answer the run would get when an earlier step that would run changes what the probe reads: such a
step is ``depends-on-earlier-change`` (see :mod:`runner.engine.planview` for every verdict), found from the
steps' declared ``reads``/``writes`` (:mod:`runner.engine.effects`), from declared writes its probes name, or,
failing that, conservatively: a check that holds (or a precondition that does not) after a step that would run
and might change anything is not reported as settled unless the step declares ``reads: []``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.context import Context
from runner.engine.effects import overlaps, render_effects
from runner.engine.planview import PlanStep, PlanUnit, PlanView, aggregate
from runner.engine.preflight import KnownSteps, NotYetKnown, Preflight, unit_ctx
from runner.engine.probes import Prober
from runner.engine.runtime import ParamValues, Resources
from runner.engine.units import ITEM, host_of, resolve_units
from runner.errors import SecretError, StepFailed, UsageError
from runner.params import validate_params
from runner.secrets import Redactor, SecretResolver, SecretsView

if TYPE_CHECKING:
    from runner.catalog import LoadedRunbook
    from runner.engine.engine import Engine
    from runner.model import Check, Step
    from runner.steptypes import ActionResult, Wait

__all__ = ["PlanStep", "PlanUnit", "PlanView", "plan"]

_CHANGING = frozenset({"would-run", "depends-on-earlier-change", "cannot-know"})
_MAX_DEPTH = 8


class _PlanServices:
    """Services for probes during a plan: nothing is written anywhere."""

    def __init__(self, prober: Prober, tctx: Mapping[str, Any], resources: Resources) -> None:
        self.prober, self.tctx, self.resources = prober, tctx, resources

    def run_action(self, ctx: Context, type_name: str, config: dict[str, Any]) -> ActionResult | Wait:
        raise StepFailed("plan does not run actions")

    def evaluate_checks(self, ctx: Context, checks: list[Check], kind: str) -> tuple[bool, list[dict[str, Any]]]:
        return self.prober.evaluate(checks, self.tctx, lambda: ctx, kind)

    def approvals(self, ctx: Context) -> list[dict[str, Any]]:
        return []

    def child_run(self, ctx: Context, runbook: str, params: dict[str, Any]) -> dict[str, Any]:
        raise StepFailed("plan does not start sub-runbooks (it plans them)")

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


@dataclass
class _Earlier:
    """What a planned step means for the steps after it."""

    id: str
    changes: bool  # it would (or might) act
    writes: list[str] | None  # what it declares it changes (None: nothing declared: anything)


@dataclass
class _Unit:
    """A step's (or one target's) plan while it is worked out."""

    verdict: str = "would-run"
    reason: str = ""
    now: str | None = None
    depends_on: list[str] = field(default_factory=list)
    action: str | None = None
    config: dict[str, Any] | None = None
    reads: list[str] | None = None
    writes: list[str] | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    child: PlanView | None = None
    changes: bool = False


def plan(engine: Engine, name: str, params: dict[str, Any], *, trigger: dict[str, Any] | None = None) -> PlanView:
    """Evaluate params and templates, pre-flight the run, and run only ``when``, ``precondition`` and ``check`` probes."""
    rb = engine.catalog.get(name)
    redactor = Redactor(engine.extra_secrets)
    resolver = SecretResolver(engine.host.secret_providers, redactor)
    resources = Resources()
    try:
        return _Planner(engine, redactor, resolver, resources, trigger).runbook(rb, params, [], (name,))
    finally:
        resources.close()


class _Planner:
    def __init__(self, engine: Engine, redactor: Redactor, resolver: SecretResolver, resources: Resources,
                 trigger: dict[str, Any] | None) -> None:  # fmt: skip
        self.engine, self.redactor, self.resolver, self.resources, self.trigger = engine, redactor, resolver, resources, trigger

    def runbook(self, rb: LoadedRunbook, params: dict[str, Any], earlier: list[_Earlier], trail: tuple[str, ...]) -> PlanView:
        """The plan of ``rb`` with ``params`` after the ``earlier`` steps (of a parent runbook)."""
        engine = self.engine
        model = validate_params(rb.name, rb.params_model, params)
        values = model.model_dump(mode="json")
        tctx: dict[str, Any] = {
            "params": ParamValues(values, rb.spec.params, self.resolver), "steps": KnownSteps({}, list(rb.spec.steps.ids)),
            "secrets": SecretsView(rb.spec.secrets, self.resolver), "alert": (self.trigger or {}).get("alert"), "target": None,
            "run": {"id": None, "runbook": rb.name, "started_by": engine.settings.actor, "trigger": self.trigger},
        }  # fmt: skip
        _resolve_all(rb, tctx)
        check = Preflight(engine.host, engine.renderer, engine.settings, engine.catalog, self.redactor, self.resolver)
        problems = check.runbook(rb, rb.spec.steps, tctx, trail=trail)
        steps = _Steps(self, rb, model, tctx, trail)
        out: list[PlanStep] = []
        seen = list(earlier)
        for step in rb.spec.steps:
            planned, mark = steps.step(step, seen)
            out.append(planned)
            seen.append(mark)
        summary: dict[str, int] = {}
        for s in out:
            summary[s.verdict] = summary.get(s.verdict, 0) + 1
        stops = next((s.id for s in out if s.verdict == "blocked"), None)
        return PlanView(runbook=rb.name, params=self.redactor.value(values), steps=out, summary=summary,
                        problems=[p.as_json() for p in problems], stops_at=stops)  # fmt: skip


class _Steps:
    """Plans the steps of one runbook."""

    def __init__(self, planner: _Planner, rb: LoadedRunbook, model: Any, tctx: dict[str, Any], trail: tuple[str, ...]) -> None:
        self.p, self.rb, self.model, self.tctx, self.trail = planner, rb, model, tctx, trail
        self.engine, self.redactor = planner.engine, planner.redactor
        self.prober = Prober(self.engine.host, self.engine.renderer, rb.file, self.redactor)
        self.services = _PlanServices(self.prober, tctx, planner.resources)

    def step(self, step: Step, earlier: list[_Earlier]) -> tuple[PlanStep, _Earlier]:
        """The plan of ``step`` and what it means for later steps."""
        base = PlanStep(id=step.id, type=step.action.type, verdict="would-run", reason="")
        try:
            if step.when is not None and not self.engine.renderer.truthy(
                step.when, self.tctx, file=self.rb.file, step=step.id, field="when"
            ):
                return base.model_copy(update={"verdict": "would-skip", "reason": f"when: {step.when} is false"}), _Earlier(
                    step.id, False, []
                )
        except NotYetKnown as exc:
            return self._unknown(base, step, f"its when ({step.when}) {exc}")
        except UsageError as exc:
            return self._unknown(base, step, f"its when cannot be evaluated: {exc}")
        if not step.fans_out:
            unit = self._unit(step, None, earlier)
            return base.model_copy(update=_fields(unit)), _Earlier(step.id, unit.changes, unit.writes)
        what = "items" if step.for_each is not None else "targets"
        try:
            targets = resolve_units(step, self.engine.renderer, self.tctx, file=self.rb.file, inventory=self.engine.settings.inventory)
        except NotYetKnown as exc:
            return self._unknown(base, step, f"its {what} {exc}")
        except (UsageError, StepFailed) as exc:
            return self._unknown(base, step, f"its {what} cannot be resolved: {exc}")
        units = []
        for target in targets:
            unit = self._unit(step, target, earlier)
            item = self.redactor.value(target[ITEM]) if ITEM in target else None
            units.append((unit, PlanUnit(name=target["name"], item=item, **_fields(unit, unit_fields=True))))
        verdict, reason = aggregate([u for _, u in units], what)
        writes = None if any(u.writes is None for u, _ in units) else sorted({w for u, _ in units for w in u.writes or []})
        reads = None if any(u.reads is None for u, _ in units) else sorted({r for u, _ in units for r in u.reads or []})
        depends = sorted({d for u, _ in units for d in u.depends_on})
        planned = base.model_copy(update={"verdict": verdict, "reason": self.redactor.text(reason), "targets": [u for _, u in units],
                                          "writes": writes, "reads": reads, "depends_on": depends})  # fmt: skip
        return planned, _Earlier(step.id, any(u.changes for u, _ in units), writes)

    def _unknown(self, base: PlanStep, step: Step, reason: str) -> tuple[PlanStep, _Earlier]:
        step_type = self.engine.host.step_types.get(step.action.type)
        shown = self.redactor.text(step_type.summary(step.action.config))
        writes: list[str] | None = [] if step.writes is not None and not step.writes else None  # only `[]` is known unrendered
        return base.model_copy(update={"verdict": "cannot-know", "reason": self.redactor.text(reason), "action": shown}), _Earlier(
            step.id, writes != [], writes
        )

    # ------------------------------------------------------------------ one unit

    def _unit(self, step: Step, target: dict[str, Any] | None, earlier: list[_Earlier]) -> _Unit:
        tctx = unit_ctx(self.tctx, target)
        unit = _Unit()
        self._render(step, tctx, unit)
        unit.reads, unit.writes = self._effect(step, "reads", tctx), self._effect(step, "writes", tctx)
        try:
            self._probe(step, tctx, target, unit, earlier)
        except NotYetKnown as exc:
            unit.verdict, unit.reason = "cannot-know", f"its probes {exc}"
        except UsageError as exc:
            unit.verdict, unit.reason = "cannot-know", f"depends on what earlier steps do ({exc})"
        except StepFailed as exc:
            unit.verdict, unit.reason = "cannot-know", str(exc)
        if unit.verdict in ("already-satisfied", "blocked", "would-run") and (step.check or step.precondition):
            self._depends(step, tctx, unit, earlier)
        unit.changes = unit.changes or (unit.verdict in _CHANGING and unit.writes != [])
        unit.reason = self.redactor.text(unit.reason)
        return unit

    def _render(self, step: Step, tctx: Mapping[str, Any], unit: _Unit) -> None:
        """The action as it would run: its one-line summary and its config, rendered, secrets masked."""
        step_type = self.engine.host.step_types.get(step.action.type)
        try:
            model = self.prober.render_config(step_type, step.action.config, tctx, step.id, "action", step.action.validated)
        except NotYetKnown as exc:
            unit.action = self.redactor.text(step_type.summary(step.action.config)) + f" (rendered once step '{exc.step_id}' has run)"
            return
        except (UsageError, StepFailed) as exc:
            unit.action = self.redactor.text(f"{step_type.summary(step.action.config)} (cannot be rendered: {exc})")
            return
        dumped = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
        unit.config = self.redactor.value(dumped)
        unit.action = self.redactor.text(step_type.summary(dumped))

    def _effect(self, step: Step, key: str, tctx: Mapping[str, Any]) -> list[str] | None:
        try:
            return render_effects(getattr(step, key), self.engine.renderer, tctx, file=self.rb.file, step=step.id, field=key)
        except (NotYetKnown, UsageError):
            return None

    def _probe(self, step: Step, tctx: Mapping[str, Any], target: dict[str, Any] | None, unit: _Unit, earlier: list[_Earlier]) -> None:
        """What the probes say now (and a sub-runbook's own plan)."""
        make = self._ctx_factory(step, target)
        if step.precondition:
            held, ev = self.prober.evaluate(step.precondition, tctx, make, "precondition")
            unit.evidence += ev
            if not held:
                unit.verdict, unit.reason = "blocked", f"precondition does not hold: {ev[-1]['detail']}"
                return
        if step.check:
            held, ev = self.prober.evaluate(step.check, tctx, make, "check")
            unit.evidence += ev
            unit.verdict = "already-satisfied" if held else "would-run"
            unit.reason = "check holds: " + "; ".join(e["check"] for e in ev) if held else f"check does not hold: {ev[-1]['detail']}"
            return
        step_type = self.engine.host.step_types.get(step.action.type)
        if step.action.type == "runbook":
            self._child(step, unit, earlier)
        elif step_type.may_wait:
            unit.verdict, unit.reason = "would-wait", f"{step.action.type}: {unit.action}"
        else:
            unit.verdict, unit.reason = "would-run", "no check: the action would run"

    def _ctx_factory(self, step: Step, target: dict[str, Any] | None) -> Callable[[], Context]:
        engine, tctx = self.engine, self.tctx
        return lambda: Context(run_id="plan", runbook=self.rb.name, step_id=step.id, attempt=0, params=self.model,
                               param_values=tctx["params"], outputs={}, settings=engine.settings, secrets=tctx["secrets"],
                               redactor=self.redactor, services=self.services, started_by=engine.settings.actor,
                               timeout=step.timeout or 60.0, target=host_of(target), item=(target or {}).get(ITEM),
                               unit=target["name"] if target else None)  # fmt: skip

    def _child(self, step: Step, unit: _Unit, earlier: list[_Earlier]) -> None:
        """A sub-runbook step: the child's own plan, with the params it would get."""
        config = unit.config
        if config is None:
            unit.verdict, unit.reason = "cannot-know", unit.action or "the sub-runbook's name or params are known only at run time"
            return
        name = str(config.get("name"))
        if name in self.trail or len(self.trail) >= _MAX_DEPTH:
            unit.reason, unit.changes = f"starts sub-runbook '{name}' (not planned: it is already being planned above)", True
            return
        try:
            child = self.p.runbook(self.engine.catalog.get(name), dict(config.get("params") or {}), earlier, (*self.trail, name))
        except (UsageError, SecretError) as exc:
            unit.verdict, unit.reason = "cannot-know", f"sub-runbook '{name}': {exc}"
            return
        unit.child = child
        counts = ", ".join(f"{n} {v}" for v, n in child.summary.items())
        unit.verdict, unit.reason = ("blocked", f"sub-runbook '{name}' would fail at step '{child.stops_at}'") if child.stops_at else (
            "would-run", f"starts sub-runbook '{name}': {counts}")  # fmt: skip
        acting = [s for s in child.steps if s.verdict in _CHANGING]
        unit.changes = bool(acting)
        unit.writes = None if any(s.writes is None for s in acting) else sorted({w for s in acting for w in s.writes or []})

    # ------------------------------------------------------------------ what earlier steps change

    def _depends(self, step: Step, tctx: Mapping[str, Any], unit: _Unit, earlier: list[_Earlier]) -> None:
        """Turn what the probes say now into ``depends-on-earlier-change`` when an earlier step changes what they read."""
        changers = [e for e in earlier if e.changes and e.writes != []]
        if not changers or unit.reads == []:
            return
        definite: list[tuple[str, str]] = []  # (step, what)
        if unit.reads is not None:
            definite = [(e.id, w) for e in changers for w in e.writes or [] if any(overlaps(w, r) for r in unit.reads or [])]
            vague = [e.id for e in changers if e.writes is None]
        else:
            text = self._probe_text(step, tctx)
            definite = [(e.id, w) for e in changers for w in e.writes or [] if w in text]
            vague = [e.id for e in changers if e.id not in {d for d, _ in definite}]
        now = {"already-satisfied": "its check holds now", "blocked": "its precondition does not hold now",
               "would-run": "its check does not hold now"}[unit.verdict]  # fmt: skip
        if definite:
            ids = list(dict.fromkeys(d for d, _ in definite))
            what = "; ".join(f"step '{d}' writes {w}" for d, w in dict.fromkeys(definite))
            unit.reason = f"{now}, but it reads what an earlier step would change first ({what})"
        elif vague and unit.verdict in ("already-satisfied", "blocked"):
            ids = vague
            unit.reason = (f"{now}, but {_names(ids)} would run first and may change what it reads (say what they change with "
                           "`writes:`, or what this step's checks read with `reads:`)")  # fmt: skip
        else:
            return
        unit.now, unit.verdict, unit.depends_on = unit.verdict, "depends-on-earlier-change", ids

    def _probe_text(self, step: Step, tctx: Mapping[str, Any]) -> str:
        """The step's probes, rendered, as one text (to find the declared writes of earlier steps they name)."""
        parts = []
        for check in (*step.precondition, *step.check):
            try:
                value = self.engine.renderer.render(check.config if check.expr is None else check.expr, tctx, file=self.rb.file,
                                                    step=step.id, field="check")  # fmt: skip
            except (NotYetKnown, UsageError, SecretError):
                value = check.config if check.expr is None else check.expr
            parts.append(json.dumps(value, default=str))
        return "\n".join(parts)


def _resolve_all(rb: LoadedRunbook, tctx: Mapping[str, Any]) -> None:
    """Resolve every secret and secret param, so each is masked before any probe runs (unresolvable ones hold no value)."""
    for name in rb.spec.secrets:
        with contextlib.suppress(SecretError):
            tctx["secrets"][name]
    given = set(tctx["params"])
    for name, spec in rb.spec.params.items():
        if spec.secret and name in given:
            with contextlib.suppress(SecretError):
                tctx["params"][name]


def _names(ids: list[str]) -> str:
    return ("step " if len(ids) == 1 else "steps ") + ", ".join(f"'{i}'" for i in ids)


def _fields(unit: _Unit, *, unit_fields: bool = False) -> dict[str, Any]:
    out = {"verdict": unit.verdict, "reason": unit.reason, "now": unit.now, "depends_on": unit.depends_on, "action": unit.action,
           "config": unit.config, "evidence": unit.evidence}  # fmt: skip
    if not unit_fields:
        out.update(reads=unit.reads, writes=unit.writes, runbook=unit.child.model_dump(mode="json") if unit.child else None)
    return out
