"""Pre-flight: before a run's first step, resolve everything that can be resolved, and fail with every problem at once.

Run at the start of every drive that has steps left (the first one and each resume: the runbook may have been
edited, a secret or a key file removed meanwhile), over the steps still to run:

- every declared secret and every secret param: resolved through their providers;
- the inventory (when a step fans out over ``targets`` or runs ``ssh``), and the targets of every fan-out step;
  the items of every ``for_each`` step (a list, keys distinct);
- every step's action and rollback action, rendered as they will run (per target or item) and validated by
  their step type, then the step type's own :meth:`~runner.steptypes.StepType.preflight` (ssh: the key file and
  the host's known_hosts entry; http: the refusals it makes before sending; shell: the program and directory);
- sub-runbooks: that they exist and load, their params, and (with those params) the same checks inside them.

What depends on an earlier step's output (``{{ steps.x.output... }}``, a ``when`` on it) cannot be known yet and is
left for when the step runs (a step that names a *later* step, or itself outside its rollback, is a problem: it
could never see it); a step whose ``when`` is false now is not checked. Nothing is changed: no action or
probe runs, no host is contacted. A run with problems ends ``failed`` before its first step with one
``run.preflight_failed`` event listing them (see :func:`refuse`); ``runbook retry`` and ``resume`` after the fix.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.engine.effects import covers, render_effects
from runner.engine.probes import Prober
from runner.engine.units import ITEM, host_of, resolve_units
from runner.errors import SecretError, StepFailed, UsageError
from runner.steptypes import PreflightFacts, StepType

if TYPE_CHECKING:
    from runner.catalog import Catalog, LoadedRunbook
    from runner.engine.execution import Execution
    from runner.model import Action, Step
    from runner.plugin import PluginHost
    from runner.secrets import Redactor, SecretResolver
    from runner.settings import Settings
    from runner.templating import Renderer

__all__ = ["KnownSteps", "NotYetKnown", "Preflight", "PreflightProblem", "check_execution", "refuse", "unit_ctx"]


class NotYetKnown(Exception):
    """A template needs what a step that has not run yet will say (its output or state)."""

    def __init__(self, step_id: str) -> None:
        super().__init__(f"needs the outcome of step '{step_id}', which has not run yet")
        self.step_id = step_id


class KnownSteps(Mapping[str, Any]):
    """``steps`` for templates before a run reaches them: finished steps as they ended; any other step of the runbook
    raises :class:`NotYetKnown` (an unknown id is a lookup error, as at run time)."""

    def __init__(self, done: Mapping[str, Any], ids: Collection[str]) -> None:
        self._done, self._ids = done, ids

    def __getitem__(self, key: str) -> Any:
        if key in self._done:
            return self._done[key]
        if key in self._ids:
            raise NotYetKnown(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._done)

    def __len__(self) -> int:
        return len(self._done)


@dataclass(frozen=True)
class PreflightProblem:
    """One thing that would fail the run: where (step, target or item) and what."""

    message: str
    step: str | None = None
    target: str | None = None

    def line(self) -> str:
        """``step 'fan' (web2): message``."""
        if self.step is None:
            return self.message
        return f"step '{self.step}'" + (f" ({self.target})" if self.target else "") + f": {self.message}"

    def as_json(self) -> dict[str, Any]:
        """JSON form (events, ``plan --json``)."""
        return {"step": self.step, "target": self.target, "message": self.message}


def unit_ctx(tctx: Mapping[str, Any], target: dict[str, Any] | None) -> dict[str, Any]:
    """``tctx`` for one unit: ``target`` set to its host, or ``item`` to its item."""
    out = {**tctx, "target": host_of(target)}
    if target is not None and ITEM in target:
        out[ITEM] = target[ITEM]
    return out


@dataclass
class Preflight:
    """One pre-flight pass: what it renders and resolves with, and what it found."""

    host: PluginHost
    renderer: Renderer
    settings: Settings
    catalog: Catalog
    redactor: Redactor
    resolver: SecretResolver
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    memo: dict[Any, Any] = field(default_factory=dict)
    depth_limit: int = 8

    def runbook(self, rb: LoadedRunbook, steps: Sequence[Step], tctx: Mapping[str, Any], *, trail: tuple[str, ...] = (),
                done_units: Mapping[str, Collection[str]] | None = None) -> list[PreflightProblem]:  # fmt: skip
        """Problems of running ``steps`` of ``rb`` with ``tctx`` (its ``steps`` a :class:`KnownSteps`)."""
        out = self._secrets(rb, tctx)
        inventory_ok = True
        if self.settings.inventory and any(s.targets is not None or s.action.type == "ssh" for s in steps):
            inventory_ok = self._inventory(out)
        prober = Prober(self.host, self.renderer, rb.file, self.redactor)
        written: list[str] = []
        for step in steps:
            out += self._step(rb, prober, step, tctx, inventory_ok, written, trail, (done_units or {}).get(step.id, ()))
            with contextlib.suppress(NotYetKnown, UsageError):  # per-unit or later-known writes excuse nothing
                written += render_effects(step.writes, self.renderer, tctx, file=rb.file, step=step.id, field="writes") or []
        return _unique(out)

    # ------------------------------------------------------------------ what the run as a whole needs

    def _secrets(self, rb: LoadedRunbook, tctx: Mapping[str, Any]) -> list[PreflightProblem]:
        """Every declared secret and every secret param given, resolved: a run resolves them all when it starts (so
        each is masked from the first step on) and fails if one cannot be (see docs/secrets.md)."""
        from runner.secrets import SecretsUnavailable, resolve_at_start

        params = tctx["params"]
        given = {name: True for name in params}  # (`in` on the mapping would resolve a secret param)
        try:
            resolve_at_start(tctx["secrets"], params, rb.spec.params, given)
        except SecretsUnavailable as exc:
            return [PreflightProblem(exc.reason)]
        return []

    def _inventory(self, out: list[PreflightProblem]) -> bool:
        from runner.inventory import load_inventory

        try:
            load_inventory(self.settings.inventory)
        except UsageError as exc:
            out.append(PreflightProblem(str(exc)))
            return False
        return True

    # ------------------------------------------------------------------ one step

    def _step(self, rb: LoadedRunbook, prober: Prober, step: Step, tctx: Mapping[str, Any], inventory_ok: bool,
              written: list[str], trail: tuple[str, ...], done: Collection[str]) -> list[PreflightProblem]:  # fmt: skip
        out: list[PreflightProblem] = []
        if step.when is not None:
            try:
                if not self.renderer.truthy(step.when, tctx, file=rb.file, step=step.id, field="when"):
                    return []  # it will be skipped
            except NotYetKnown as exc:
                if (later := _not_before(rb, step, exc.step_id)) is not None:
                    out.append(PreflightProblem(f"when: {later}", step.id))
                # else: decided when the run gets there; checked as if it runs
            except UsageError as exc:
                out.append(PreflightProblem(self.redactor.text(str(exc)), step.id))
        units: list[dict[str, Any] | None] = [None]
        if step.fans_out:
            units = []
            if step.targets is None or inventory_ok:
                try:
                    units = [u for u in resolve_units(step, self.renderer, tctx, file=rb.file, inventory=self.settings.inventory)
                             if u["name"] not in done]  # fmt: skip
                except NotYetKnown as exc:
                    if (later := _not_before(rb, step, exc.step_id)) is not None:
                        out.append(PreflightProblem(later, step.id))
                    # else: resolved when the step starts
                except (UsageError, StepFailed) as exc:
                    out.append(PreflightProblem(_own(step.id, self.redactor.text(str(exc))), step.id))
        for unit in units:
            utctx = unit_ctx(tctx, unit)
            for kind, action in (("action", step.action), ("rollback", step.rollback)):
                if action is not None:
                    for problem in self._action(rb, prober, step, kind, action, utctx, unit, written, trail):
                        out.append(PreflightProblem(problem, step.id, unit["name"] if unit else None))
        return out

    def _action(self, rb: LoadedRunbook, prober: Prober, step: Step, kind: str, action: Action, tctx: Mapping[str, Any],
                unit: dict[str, Any] | None, written: list[str], trail: tuple[str, ...]) -> list[str]:  # fmt: skip
        step_type = self.host.step_types.get(action.type)
        hook = type(step_type).preflight is not StepType.preflight
        if not hook and action.validated is not None and action.type != "runbook":
            return []  # nothing to render and nothing to ask: the cheap path of a plain step
        where = "" if kind == "action" else "rollback: "
        try:
            model = prober.render_config(step_type, action.config, tctx, step.id, kind, action.validated)
        except NotYetKnown as exc:
            later = _not_before(rb, step, exc.step_id, rollback=kind == "rollback")
            return [] if later is None else [where + later]
        except SecretError:
            return []  # reported once, with the secret's name
        except (UsageError, StepFailed) as exc:
            return [where + _own(step.id, self.redactor.text(str(exc)))]
        out: list[str] = []
        if hook:
            facts = PreflightFacts(step_id=step.id, raw=action.config, target=host_of(unit), settings=self.settings,
                                   redactor=self.redactor, env=self.env, memo=self.memo)  # fmt: skip
            for finding in self.host.preflight_action(step_type, model, facts):
                if finding.resource is None or not covers(written, finding.resource):
                    out.append(where + _own(step.id, self.redactor.text(finding.message)))
        if action.type == "runbook":
            out += [where + p for p in self._child(model, step, tctx, trail)]
        return out

    # ------------------------------------------------------------------ sub-runbooks

    def _child(self, model: Any, step: Step, tctx: Mapping[str, Any], trail: tuple[str, ...]) -> list[str]:
        from runner.engine.runtime import ParamValues
        from runner.params import validate_params
        from runner.secrets import SecretsView

        name, given = str(getattr(model, "name", "")), dict(getattr(model, "params", None) or {})
        if name in trail or len(trail) >= self.depth_limit:
            return []  # a cycle or the nesting limit: refused when the child would start
        try:
            child = self.catalog.get(name)
            values = validate_params(name, child.params_model, given).model_dump(mode="json")
        except UsageError as exc:
            return [f"sub-runbook '{name}': {self.redactor.text(str(exc))}"]
        ctx = {"params": ParamValues(values, child.spec.params, self.resolver), "secrets": SecretsView(child.spec.secrets, self.resolver),
               "steps": KnownSteps({}, list(child.spec.steps.ids)), "run": {**tctx["run"], "runbook": name},
               "alert": tctx.get("alert"), "target": None}  # fmt: skip
        inner = self.runbook(child, child.spec.steps, ctx, trail=(*trail, name))
        return [f"in sub-runbook '{name}': {p.line()}" for p in inner]


def _unique(problems: list[PreflightProblem]) -> list[PreflightProblem]:
    """Each problem once: a step's that repeats the run's (an unreadable inventory, found again by an ssh step) is left out."""
    general = {p.message for p in problems if p.step is None}
    seen: set[PreflightProblem] = set()
    out = []
    for p in problems:
        if p not in seen and (p.step is None or not any(g in p.message for g in general)):
            seen.add(p)
            out.append(p)
    return out


def _not_before(rb: LoadedRunbook, step: Step, needed: str, *, rollback: bool = False) -> str | None:
    """Why ``step`` can never see step ``needed`` (one that comes after it, or itself outside its rollback), or None
    when ``needed`` runs before it (its outcome is then known when ``step`` runs)."""
    index = rb.spec.steps.index_set
    at, there = index.get(step.id), index.get(needed)
    if at is None or there is None or there < at or (there == at and rollback):
        return None
    if there == at:
        return f"refers to step '{needed}' itself, whose output and state are known only once it has finished"
    return f"refers to step '{needed}', which runs after this one: a step sees only the steps before it"


def _own(step_id: str, text: str) -> str:
    """A message about ``step_id`` without the ``step 'ID': `` it may start with (the problem names the step)."""
    return text.removeprefix(f"step '{step_id}': ")


# ---------------------------------------------------------------------- a run's pre-flight


def check_execution(exe: Execution) -> list[PreflightProblem]:
    """Pre-flight the steps of ``exe``'s run that are not done (the units of a fan-out that finished are skipped)."""
    from runner.store.records import DONE_STEP_STATES

    todo = exe.spec.steps.select(lambda sid: exe.steps[sid].state not in DONE_STEP_STATES)  # (no models held: issue 19)
    if not todo:
        return []
    done_units = {sid: done for sid in todo.ids
                  if (done := {n for n, t in exe.steps[sid].progress.targets.items() if t.state in DONE_STEP_STATES})}  # fmt: skip
    tctx = {**exe.template_ctx(None), "steps": KnownSteps(exe.steps_view, exe.spec.steps.index_set)}
    engine = exe.engine
    check = Preflight(engine.host, engine.renderer, engine.settings, engine.catalog, exe.redactor, exe.resolver)
    return check.runbook(exe.rb, todo, tctx, trail=(exe.spec.name,), done_units=done_units)


def refuse(exe: Execution, problems: list[PreflightProblem]) -> None:
    """End the run ``failed`` before any step started: ``run.preflight_failed`` lists every problem."""
    from runner.store.records import DONE_STEP_STATES, NewEvent
    from runner.store.transitions import RunEvent, run_after

    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    reason = f"pre-flight found {count}; nothing was changed:\n" + "\n".join(f"  - {p.line()}" for p in problems)
    first = next((sid for sid in exe.spec.steps.ids if exe.steps[sid].state not in DONE_STEP_STATES), None)
    detail = f"{count}: " + "; ".join(p.line() for p in problems)
    events = [NewEvent("run.preflight_failed", data={"problems": [p.as_json() for p in problems], "detail": detail}),
              NewEvent("run.failed", data={"reason": reason, "preflight": True})]  # fmt: skip
    exe.journal.commit(events, {"state": run_after(exe.run.state, RunEvent.FAIL), "reason": reason, "cursor": first,
                                "finished_at": time.time()})  # fmt: skip
