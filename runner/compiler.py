"""Compile a runbook document (YAML data or the Python form's equivalent) into a :class:`RunbookSpec`.

Every problem found is collected, located (file, line, column, step id and
field) and raised together as one :class:`~runner.errors.ValidationError`, so
``runbook validate`` reports all errors, not just the first.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from runner.defaults import Defaults
from runner.errors import Problem, ValidationError
from runner.includes import expand_includes, include_roots
from runner.model import NAME_PATTERN, STEP_ID_PATTERN, Action, Check, Expect, RunbookSpec, Step, Steps
from runner.params import ParamSpec
from runner.registry import StepTypeRegistry
from runner.steptypes import is_template, remember_reusable_configs
from runner.yamlsafe import Located

__all__ = ["compile_document", "compile_runbook"]

Path_ = tuple[str | int, ...]
_STEP_FIELDS = ("id", "description", "when", "precondition", "check", "verify", "expect", "retry", "timeout",
                "expected", "idempotent", "rollback", "targets", "for_each", "batch", "reads", "writes")  # fmt: skip
_UNSET: Any = object()
_PLACEHOLDER = Action(type="-", config={})  # stands in for an action with problems while the rest of its step is checked
_EXPECT_KEYS = frozenset(f.alias or name for name, f in Expect.model_fields.items())


class _Ctx:
    """Collects problems located against the source document."""

    def __init__(self, located: Located, registry: StepTypeRegistry) -> None:
        self.located, self.registry = located, registry
        self.problems: list[Problem] = []
        self.defaults = Defaults(located, registry)
        self.best: dict[Path_, Step] = {}
        self.partial_top: dict[str, Any] | None = None  # the top-level fields without a problem, when some have one

    def add(self, path: Path_, message: str, *, value: bool = False) -> None:
        self.problems.append(self.located.problem(path, message, where=_where(self.located.data, path), value=value))

    def pydantic(self, base: Path_, exc: PydanticValidationError, value: Any = _UNSET) -> None:
        kwargs = {} if value is _UNSET else {"value": value}
        self.problems += self.located.pydantic_problems(base, exc, where=lambda path: _where(self.located.data, path), **kwargs)


def _where(data: Any, path: Path_) -> str | None:
    """``step 'restart', field 'ssh.port'`` for a path under ``steps``."""
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = data.get("steps") if isinstance(data, dict) else None
        step = steps[path[1]] if isinstance(steps, list) and path[1] < len(steps) else None
        ident = step.get("id") if isinstance(step, dict) else None
        label = f"step '{ident}'" if isinstance(ident, str) else f"step #{path[1] + 1}"
        field = ".".join(str(p) for p in path[2:])
        return f"{label}, field '{field}'" if field else label
    if path:
        return f"field '{'.'.join(str(p) for p in path)}'"
    return None


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    version: str | int | float = "1"
    tags: list[str] = []
    params: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    lock: str | None = None
    on_failure: Literal["stop", "rollback"] = "stop"
    defaults: Any = None  # checked by runner.defaults.Defaults


def compile_runbook(data: Any, registry: StepTypeRegistry, *, located: Located | None = None, file: str = "<input>",
                    search: Sequence[str | os.PathLike[str]] | None = None) -> RunbookSpec:  # fmt: skip
    """Validate ``data`` (a runbook document) and return the compiled spec.

    ``search`` is the runbook search path includes are looked up in (default: the file's own directory).
    """
    return compile_document(located or Located(data=data, file=file), registry, search=search)[0]


def compile_document(located: Located, registry: StepTypeRegistry, *,
                     search: Sequence[str | os.PathLike[str]] | None = None) -> tuple[RunbookSpec, Located]:  # fmt: skip
    """Compile the document of ``located``: the spec, and the document as compiled (includes expanded, every value
    linked to where it was written; ``located`` itself when it has no includes). Raises :class:`ValidationError`
    with every problem found, each located."""
    data = located.data
    if not isinstance(data, dict):
        raise ValidationError([located.problem((), f"expected a mapping with name, description and steps, got {type(data).__name__}")])
    roots = include_roots(search if search else ([located.file] if os.path.exists(located.file) else []))
    expanded, problems = expand_includes(located, roots)
    ctx = _Ctx(expanded, registry)
    ctx.problems += problems
    data = expanded.data
    _refuse_non_finite(ctx, data, ())
    top = _top(ctx, data)
    ctx.defaults.load(data.get("defaults"), ctx.add)
    params = _params(ctx, data["params"]) if isinstance(data.get("params"), dict) else {}
    compiled = _steps(ctx, data.get("steps"))  # each step as its JSON text: 5000 step models are 13 MiB (issue 19)
    if ctx.problems or top is None:
        error = ValidationError(_ordered(ctx.problems, located.file))
        best = [_from_text(s) or ctx.best.get(("steps", i)) for i, s in enumerate(compiled)]
        error.partial = (_partial(data, top or ctx.partial_top, params, best), expanded)  # type: ignore[attr-defined]
        raise error
    try:
        spec = RunbookSpec.model_validate({**top, "params": params})
    except PydanticValidationError as exc:
        ctx.pydantic((), exc)
        raise ValidationError(ctx.problems) from None
    # Runs keep the compiled runbook as JSON (the snapshot, the compile cache): compile to what reads back from
    # it, so that a YAML date or binary value in a param default or an expectation means the same in every run,
    # after a resume from the snapshot and after a cache hit. Steps are held as a cache hit holds them.
    spec = RunbookSpec.model_validate(spec.model_dump(mode="json", by_alias=True))
    texts = [text for text, _ in (s for s in compiled if s is not None)]
    ids = [ident for _, ident in (s for s in compiled if s is not None)]

    def prepare(step: Step) -> None:
        remember_reusable_configs([a for a in (step.action, step.rollback) if a is not None], registry)

    return spec.model_copy(update={"steps": Steps.lazy(texts, ids, prepare, check=True)}), expanded


def _as_text(step: Step | None) -> tuple[bytes, str] | None:
    """A compiled step as the compact JSON text it is kept as, with its id."""
    if step is None:
        return None
    return step.json_text(), step.id


def _from_text(compiled: tuple[bytes, str] | None) -> Step | None:
    return None if compiled is None else Step.model_validate_json(compiled[0])


def _top(ctx: _Ctx, data: dict[str, Any]) -> dict[str, Any] | None:
    """The top-level fields but ``steps`` (checked on their own, so a problem here hides none of theirs)."""
    given = {k: v for k, v in data.items() if k != "steps"}
    try:
        top = _Top.model_validate(given)
    except PydanticValidationError as exc:
        ctx.pydantic((), exc)
        # the fields without a problem, for what `validate` checks beyond them (the lock's template): a top-level
        # error hides no other error; with its problems recorded, the runbook never runs
        bad = {e["loc"][0] for e in exc.errors(include_url=False) if e["loc"]}
        with contextlib.suppress(PydanticValidationError):
            ctx.partial_top = _top_fields(_Top.model_validate({k: v for k, v in given.items() if k not in bad}))
        return None
    return _top_fields(top)


def _top_fields(top: _Top) -> dict[str, Any]:
    out: dict[str, Any] = top.model_dump(exclude={"params", "defaults"})
    out["version"] = str(top.version)
    return out


def _partial(data: dict[str, Any], top: dict[str, Any] | None, params: dict[str, ParamSpec], compiled: list[Step | None]) -> RunbookSpec:
    """What did compile of a runbook with problems, unvalidated, so ``validate`` can check its templates too: the
    steps that compiled, stand-ins (no action) for the others, so that references to them resolve."""
    raw = data.get("steps")
    raw_steps: list[Any] = raw if isinstance(raw, list) else []
    steps = []
    for i, (step, raw) in enumerate(zip(compiled, raw_steps, strict=False)):
        ident = raw.get("id") if isinstance(raw, dict) else None
        steps.append(step or Step.model_construct(id=ident if isinstance(ident, str) else f"#{i + 1}", action=_PLACEHOLDER))
    declared = data.get("params")
    for name in declared if isinstance(declared, dict) else {}:
        params.setdefault(str(name), ParamSpec())
    given = data.get("secrets")
    secrets: dict[Any, Any] = given if isinstance(given, dict) else {}
    name = data.get("name") if isinstance(data.get("name"), str) else "-"
    fields = dict(top or {"name": name, "secrets": {str(k): str(v) for k, v in secrets.items()}})
    fields["tags"] = tuple(fields.get("tags") or ())
    if not isinstance(fields.get("lock"), str | None):
        fields.pop("lock")
    return RunbookSpec.model_construct(**{**fields, "params": params, "steps": Steps(steps)})


def _steps(ctx: _Ctx, raw: Any) -> list[tuple[bytes, str] | None]:
    if raw is None:
        ctx.add((), "missing required key 'steps': a runbook needs at least one step")
        return []
    if not isinstance(raw, list):
        ctx.add(("steps",), f"expected 'steps' to be a list of steps, got {type(raw).__name__}")
        return []
    if not raw:
        ctx.add(("steps",), "a runbook needs at least one step")
    steps: list[tuple[bytes, str] | None] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        step = _step(ctx, ("steps", i), item)
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str):
            if ident in seen:
                first = ctx.located.problem(("steps", seen[ident], "id"), "")
                at = (
                    f"line {first.line}" if first.file == ctx.located.problem(("steps", i, "id"), "").file else f"{first.file}:{first.line}"
                )
                ctx.add(("steps", i, "id"), f"duplicate step id '{ident}' (first used at {at})")
            seen.setdefault(ident, i)
        steps.append(_as_text(step))
    return steps


def _ordered(problems: list[Problem], root: str) -> list[Problem]:
    """Problems without repeats (a default reaching many steps is reported once), the runbook's own file first."""
    first: dict[tuple[Any, ...], Problem] = {}
    for p in problems:
        first.setdefault((p.file, p.line, p.column, p.message, p.included_from), p)
    unique = list(first.values())
    return sorted(unique, key=lambda p: (p.file != root, p.file or "", p.line or 0, p.column or 0))


def _refuse_non_finite(ctx: _Ctx, value: Any, path: Path_) -> None:
    """``.inf`` and ``.nan`` have no JSON form: the stored runbook would hold ``null`` instead."""
    if isinstance(value, float) and not math.isfinite(value):
        ctx.add(path, f"{value} is not allowed (a number must be finite)", value=True)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(ctx, item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_non_finite(ctx, item, (*path, i))


def _params(ctx: _Ctx, raw: dict[str, Any]) -> dict[str, ParamSpec]:
    out: dict[str, ParamSpec] = {}
    for name, spec in raw.items():
        path: Path_ = ("params", name)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
            ctx.add(path, f"param name '{name}' must be an identifier (letters, digits, underscore)")
            continue
        if isinstance(spec, str):  # shorthand: `host: string`
            spec = {"type": spec}
        try:
            out[name] = ParamSpec.model_validate(spec)
        except PydanticValidationError as exc:
            ctx.pydantic(path, exc, spec)
            continue
        _param_default(ctx, path, name, out[name])
    return out


def _param_default(ctx: _Ctx, path: Path_, name: str, spec: ParamSpec) -> None:
    """A default must be a value of the param's own type and constraints: nothing checks it at run time."""
    if spec.secret or spec.default is None or "default" not in spec.model_fields_set:
        return
    from runner.params import build_params_model

    spec = ParamSpec.model_validate(spec.model_dump(mode="json", exclude_unset=True))  # as runs store it (a YAML date: text)
    try:
        build_params_model("default", {name: spec.model_copy(update={"required": True})}).model_validate({name: spec.default}, strict=True)
    except PydanticValidationError as exc:
        why = "; ".join(e["msg"] for e in exc.errors(include_url=False))
        kind = f"one of {spec.enum}" if spec.enum else spec.type
        ctx.add((*path, "default"), f"default {spec.default!r} of param '{name}' is not a valid {kind}: {why}", value=True)


def _split_type(ctx: _Ctx, path: Path_, raw: dict[str, Any], fields: tuple[str, ...], probes_only: bool) -> tuple[str, Any] | None:
    """Find the one step-type key of a step or check; report unknown or extra keys."""
    names = ctx.registry.probes() if probes_only else ctx.registry.names()
    found: list[str] = []
    for key in raw:
        if key in fields:
            continue
        if key in ctx.registry and (not probes_only or ctx.registry.get(key).probe):
            found.append(key)
        elif key in ctx.registry:
            ctx.add((*path, key), f"step type '{key}' cannot be used as a check; probe types: {', '.join(names)}")
        else:  # every unknown key is reported, not only the first
            kind = "check" if probes_only else "step"
            close = difflib.get_close_matches(str(key), [*fields, *names], n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            ctx.add(
                (*path, key),
                f"unknown key '{key}': {guess}expected a {kind} field ({', '.join(fields)}) or a step type ({', '.join(names)})",
            )
    if len(found) > 1:
        ctx.add(
            (*path, found[1]), f"more than one step type ({', '.join(found)}); a {('check' if probes_only else 'step')} has exactly one"
        )
        return None
    if not found:
        return None
    return found[0], raw[found[0]]  # even with unknown keys beside it: the type's own problems are reported too


def _action(ctx: _Ctx, path: Path_, type_name: str, raw_config: Any) -> Action | None:
    step_type = ctx.registry.get(type_name)
    config = ctx.defaults.apply(type_name, step_type.shorthand(raw_config), (*path, type_name))
    try:
        model = step_type.Config.model_validate(config)
    except PydanticValidationError as exc:
        ctx.pydantic((*path, type_name), exc, config)
        if not isinstance(config, dict):
            return None
        # the fields without a problem stay, unvalidated, so that `validate` checks their templates too (a type error
        # in one field hides no template error in another); with its problems recorded, the runbook never runs
        bad = {e["loc"][0] for e in exc.errors(include_url=False) if e["loc"]}
        dumped = {k: v for k, v in config.items() if k not in bad}
        partial = True
    else:
        dumped, partial = model.model_dump(mode="json", by_alias=True, exclude_unset=True), False
    for name in step_type.check_fields:
        if dumped.get(name) is not None:
            checks = _checks(ctx, (*path, type_name, name), config[name])
            if checks is None and not partial:
                return None
            if checks is None:
                del dumped[name]
                continue
            dumped[name] = [c.model_dump(mode="json", by_alias=True, exclude_defaults=True) for c in checks]
    return Action(type=type_name, config=dumped)


def _check(ctx: _Ctx, path: Path_, raw: Any) -> Check | None:
    if not isinstance(raw, dict):
        ctx.add(path, "expected a check: a mapping with one probe step type (and 'expect'), or 'expr'")
        return None
    fields = ("expect", "expr", "description")
    before = len(ctx.problems)
    split = _split_type(ctx, path, raw, fields, probes_only=True)
    rest = {k: v for k, v in raw.items() if k in fields}
    if split is None and "expr" not in raw:
        if len(ctx.problems) == before:
            ctx.add(path, f"a check needs one probe step type ({', '.join(ctx.registry.probes())}) or 'expr'")
        return None
    if split is not None:
        _expect_keys(ctx, path, split[0], raw.get("expect"))
        action = _action(ctx, path, *split)
        if action is None:
            return None
        rest.update(type=action.type, config=action.config)
    elif isinstance(raw.get("expect"), dict):
        ctx.add((*path, "expect"), "'expect' has no effect on an 'expr' check: it holds when the expression is true")
        return None
    try:
        return Check.model_validate(rest)
    except PydanticValidationError as exc:
        ctx.pydantic(path, exc, rest)
        return None


def _checks(ctx: _Ctx, path: Path_, raw: Any) -> list[Check] | None:
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    checks = [_check(ctx, (*path, i) if isinstance(raw, list) else path, item) for i, item in enumerate(items)]
    return None if any(c is None for c in checks) else [c for c in checks if c is not None]


def _step(ctx: _Ctx, path: Path_, raw: Any) -> Step | None:
    if not isinstance(raw, dict):
        ctx.add(path, "expected a step: a mapping with 'id' and one step type")
        return None
    before = len(ctx.problems)
    ident = raw.get("id")
    if not isinstance(ident, str):
        ctx.add(path if "id" not in raw else (*path, "id"), "every step needs an 'id' (a string)")
    elif not re.fullmatch(STEP_ID_PATTERN, ident):
        ctx.add((*path, "id"), f"step id '{ident}' must match {STEP_ID_PATTERN}")
    split = _split_type(ctx, path, raw, _STEP_FIELDS, probes_only=False)
    if split is None and len(ctx.problems) == before:
        ctx.add(path, f"step has no step type; expected exactly one of: {', '.join(ctx.registry.names())}")
    fields: dict[str, Any] = {k: v for k, v in raw.items() if k in _STEP_FIELDS}
    if split is not None:
        _expect_keys(ctx, path, split[0], raw.get("expect"))
        fields["action"] = _action(ctx, path, *split)
        for key, what in (("targets", "fan out over targets"), ("for_each", "run once per item")):
            if key in raw and ctx.registry.get(split[0]).may_wait:
                ctx.add((*path, key), f"a '{split[0]}' step cannot {what} (it waits for the whole run); "
                                      "put the loop in the steps around it")  # fmt: skip
    _fan_out_fields(ctx, path, raw)
    for key in ("precondition", "check"):
        if key in fields:
            fields[key] = _checks(ctx, (*path, key), fields[key])
    if "verify" in fields:
        fields["verify"] = _verify(ctx, (*path, "verify"), fields["verify"])
    if isinstance(fields.get("retry"), int) and not isinstance(fields.get("retry"), bool):
        fields["retry"] = {"attempts": fields["retry"]}
    if "rollback" in fields:
        fields["rollback"] = _rollback(ctx, (*path, "rollback"), fields["rollback"])
    failed = len(ctx.problems) > before or fields.get("action") is None
    # the step's other fields are checked even when its type or checks had problems (those are reported already)
    for key in ("precondition", "check", "verify", "rollback"):
        if key in fields and fields[key] is None and raw.get(key) is not None:
            del fields[key]
    if fields.get("action") is None:
        fields["action"] = _PLACEHOLDER
    try:
        step = Step.model_validate(fields)
    except PydanticValidationError as exc:
        ctx.pydantic(path, exc, fields)
        return None
    if failed:
        ctx.best[path] = step  # with its problems, still what `validate` checks the templates of
        return None
    return step


def _fan_out_fields(ctx: _Ctx, path: Path_, raw: dict[str, Any]) -> None:
    """``targets`` and ``for_each`` exclude each other; ``for_each`` is a list or a template that gives one."""
    if raw.get("targets") is not None and raw.get("for_each") is not None:
        ctx.add((*path, "for_each"), "a step has either 'targets' (hosts) or 'for_each' (items), not both; "
                                     "loop over hosts with 'targets' and read each host as 'target'")  # fmt: skip
    items = raw.get("for_each")
    if isinstance(items, str) and not is_template(items):
        ctx.add((*path, "for_each"), f'expected a list or a template that gives one ("{{{{ params.names }}}}"), got {items!r}', value=True)
    elif items is not None and not isinstance(items, str | list):
        ctx.add((*path, "for_each"), f"expected a list or a template that gives one, got {type(items).__name__}", value=True)


def _expect_keys(ctx: _Ctx, path: Path_, type_name: str, expect: Any) -> None:
    """Each ``expect`` key must mean something for the step type's results (the type declares which)."""
    allowed = ctx.registry.get(type_name).expect_keys
    if allowed is None or not isinstance(expect, dict):
        return
    for key in expect:
        if key in _EXPECT_KEYS and key not in allowed:
            ctx.add(
                (*path, "expect", key), f"expect '{key}' does not apply to a '{type_name}' step; it checks: {', '.join(sorted(allowed))}"
            )


def _verify(ctx: _Ctx, path: Path_, raw: Any) -> dict[str, Any] | None:
    if isinstance(raw, list):
        raw = {"checks": raw}
    if not isinstance(raw, dict):
        ctx.add(path, "expected verify: {within, every, checks: [...]} or a list of checks")
        return None
    out = dict(raw)
    if "checks" not in out:
        ctx.add(path, "verify needs 'checks'")
        return None
    out["checks"] = _checks(ctx, (*path, "checks"), raw["checks"])
    return out


def _rollback(ctx: _Ctx, path: Path_, raw: Any) -> Action | None:
    if not isinstance(raw, dict) or len(raw) != 1:
        ctx.add(path, f"expected a rollback action: a mapping with exactly one step type ({', '.join(ctx.registry.names())})")
        return None
    type_name, config = next(iter(raw.items()))
    if type_name not in ctx.registry:
        ctx.add((*path, type_name), f"unknown step type '{type_name}'; known: {', '.join(ctx.registry.names())}")
        return None
    return _action(ctx, path, type_name, config)
