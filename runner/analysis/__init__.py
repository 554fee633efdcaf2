"""Static analysis: what ``runbook validate`` finds without running anything, beyond what compiling finds.

Compiling a runbook (every command does it) checks its structure, its step-type configs, its expectations and
its param defaults. This package checks what needs the whole catalog or reads templates, which only
``validate`` pays for:

- templates: syntax; names a template cannot see (undeclared params and secrets, steps that do not run
  before the step, unknown fields of ``steps.X``, ``steps.X.output``, ``target``, ``run``; ``target`` outside a
  fan-out), see :mod:`runner.analysis.templates`;
- secret references whose scheme no plugin provides;
- each step type's own static rules (:meth:`runner.steptypes.StepType.lint`, e.g. http's secret and host rules);
- sub-runbooks: that they exist (and load), the params given to them, and cycles (:mod:`runner.analysis.runbooks`).

Every problem is located (``file:line:column``) where the text at fault was written: the runbook, an included
file, or a ``defaults:`` entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runner.analysis.runbooks import Finder, check_cycles, check_subrunbooks
from runner.analysis.templates import Scope, StepInfo, check_template, reads_secret
from runner.analysis.walk import configs, source_path, strings
from runner.errors import Problem

if TYPE_CHECKING:
    from runner.catalog import Catalog, LoadedRunbook
    from runner.plugin import PluginHost
    from runner.steptypes import StepType
    from runner.templating import Renderer

__all__ = ["check_catalog", "check_runbook", "locate"]

Path_ = tuple[str | int, ...]


def check_catalog(catalog: Catalog, host: PluginHost, env: Mapping[str, str] | None = None, *,
                  elsewhere: Sequence[Catalog] = ()) -> list[Problem]:  # fmt: skip
    """Problems found statically in every runbook of ``catalog`` and across them (not those of loading).

    Sub-runbooks are looked up in ``catalog``, then in ``elsewhere`` (``validate FILE``: the runbooks beside the
    file and on the search path), whose own problems are not reported.
    """
    from runner.templating import Renderer

    renderer = Renderer(dict(host.template_filters.items()))
    finder = Finder(catalog, elsewhere)
    problems: list[Problem] = []
    for rb in catalog:
        problems += check_runbook(rb, catalog, host, renderer=renderer, env=env, finder=finder)
    for rb in catalog.partial:  # a runbook with problems gets its templates checked too
        problems += check_runbook(rb, catalog, host, renderer=renderer, env=env, finder=finder, compiled=False)
    problems += check_cycles(catalog, finder)
    return problems


def check_runbook(rb: LoadedRunbook, catalog: Catalog, host: PluginHost, *, renderer: Renderer | None = None,
                  env: Mapping[str, str] | None = None, finder: Finder | None = None, compiled: bool = True) -> list[Problem]:  # fmt: skip
    """Problems found statically in one runbook: templates, secret references, step-type rules, sub-runbooks
    (looked up with ``finder``, by default in ``catalog``). ``compiled=False``: what compiled of a runbook with
    problems, whose configs with problems a step type's own rules are not asked about."""
    from runner.steptypes import StaticFacts
    from runner.templating import Renderer

    renderer = renderer or Renderer(dict(host.template_filters.items()))
    registry = host.step_types
    spec = rb.spec_json
    problems: list[Problem] = []
    steps = _step_infos(rb)
    params, secrets = set(rb.spec.params), set(rb.spec.secrets)
    for at in strings(spec, registry):
        text = at.text
        if at.condition and "{{" not in text and "{%" not in text:
            text = "{{ " + text + " }}"  # a condition is an expression even without braces
        if "{{" not in text and "{%" not in text:
            continue
        scope = Scope(params, secrets, steps, index=at.index, self_visible=at.rollback, target=at.target, item=at.item)
        if at.index is None:
            scope.only, scope.place = frozenset({"params", "run"}), "the lock (rendered when the run starts)"
        problems += [locate(rb, at.path, m) for m in check_template(renderer, text, scope)]
    problems += _secret_refs(rb, host)
    secret_params = {n for n, p in rb.spec.params.items() if p.secret}
    facts = StaticFacts(lambda text: reads_secret(renderer, text, secret_params), os.environ if env is None else env)
    for config in configs(spec, registry):
        if config.type in registry and (compiled or _validates(registry.get(config.type), config.config)):
            for finding in registry.get(config.type).lint(config.config, facts):
                problems.append(locate(rb, (*config.path, *finding.path), finding.message))
    problems += check_subrunbooks(rb, finder or Finder(catalog))
    return problems


def _validates(step_type: StepType, config: dict[str, Any]) -> bool:
    """True if ``config`` is valid for ``step_type`` (a config with problems is kept, unvalidated, for its templates)."""
    from pydantic import ValidationError as PydanticValidationError

    try:
        step_type.Config.model_validate(config)
    except PydanticValidationError:
        return False
    return True


def _step_infos(rb: LoadedRunbook) -> dict[str, StepInfo]:
    out = {}
    for i, step in enumerate(rb.spec.steps):
        step_type = rb.registry.get(step.action.type) if step.action.type in rb.registry else None
        fields = step_type.output_fields if step_type is not None and not step.fans_out else None
        out[step.id] = StepInfo(i, step.action.type, fields, never_runs=step.when is False)
    return out


def _secret_refs(rb: LoadedRunbook, host: PluginHost) -> list[Problem]:
    """A reference whose scheme no plugin provides fails every run that needs it."""
    known = host.secret_providers.names()
    out = []
    refs: list[tuple[Path_, Any]] = [(("secrets", name), ref) for name, ref in rb.spec.secrets.items()]
    refs += [(("params", name, "default"), p.default) for name, p in rb.spec.params.items() if p.secret and p.default]
    for path, ref in refs:
        scheme = str(ref).partition(":")[0]
        if scheme not in known:
            out.append(locate(rb, path, f"secret reference '{ref}': no secret provider for '{scheme}:' (known: "
                                        f"{', '.join(f'{k}:' for k in known)})", value=True))  # fmt: skip
    return out


def locate(rb: LoadedRunbook, spec_path: Path_, message: str, *, value: bool = True) -> Problem:
    """A problem about ``spec_path`` of ``rb``'s compiled JSON, located where that part was written."""
    located = rb.positions()
    path = source_path(rb.spec_json, spec_path, located)
    where = _where(rb, path)
    if located is None:
        return Problem(message, file=rb.file, where=where)
    return located.problem(path, message, where, value=value)


def _where(rb: LoadedRunbook, path: Path_) -> str | None:
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int) and path[1] < len(rb.spec.steps):
        field = ".".join(str(p) for p in path[2:])
        label = f"step '{rb.spec.steps[path[1]].id}'"
        return f"{label}, field '{field}'" if field else label
    return f"field '{'.'.join(str(p) for p in path)}'" if path else None
