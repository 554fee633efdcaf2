"""Compile a runbook document (YAML data or the Python form's equivalent) into a :class:`RunbookSpec`.

Every problem found is collected, located (file, line, column, step id and
field) and raised together as one :class:`~runner.errors.ValidationError`, so
``runbook validate`` reports all errors, not just the first.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from runner.errors import Problem, ValidationError
from runner.model import NAME_PATTERN, STEP_ID_PATTERN, Action, Check, RunbookSpec, Step
from runner.params import ParamSpec
from runner.registry import StepTypeRegistry
from runner.steptypes import remember_reusable_configs
from runner.yamlsafe import Located

__all__ = ["compile_runbook"]

Path_ = tuple[str | int, ...]
_STEP_FIELDS = ("id", "description", "when", "precondition", "check", "verify", "expect", "retry", "timeout",
                "expected", "idempotent", "rollback", "targets", "batch")  # fmt: skip


class _Ctx:
    """Collects problems located against the source document."""

    def __init__(self, located: Located, registry: StepTypeRegistry) -> None:
        self.located, self.registry = located, registry
        self.problems: list[Problem] = []

    def add(self, path: Path_, message: str, *, value: bool = False) -> None:
        self.problems.append(self.located.problem(path, message, where=_where(self.located.data, path), value=value))

    def pydantic(self, base: Path_, exc: PydanticValidationError) -> None:
        self.problems += self.located.pydantic_problems(base, exc, where=lambda path: _where(self.located.data, path))


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
    steps: list[Any]


def compile_runbook(data: Any, registry: StepTypeRegistry, *, located: Located | None = None, file: str = "<input>") -> RunbookSpec:
    """Validate ``data`` (a runbook document) and return the compiled spec."""
    located = located or Located(data=data, file=file)
    ctx = _Ctx(located, registry)
    if not isinstance(data, dict):
        raise ValidationError([located.problem((), f"expected a mapping with name, description and steps, got {type(data).__name__}")])
    _refuse_non_finite(ctx, data, ())
    if ctx.problems:
        raise ValidationError(ctx.problems)
    try:
        top = _Top.model_validate(data)
    except PydanticValidationError as exc:
        ctx.pydantic((), exc)
        raise ValidationError(ctx.problems) from None
    out: dict[str, Any] = top.model_dump(exclude={"steps", "params"})
    out["version"] = str(top.version)
    out["params"] = _params(ctx, top.params)
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(top.steps):
        step = _step(ctx, ("steps", i), raw)
        ident = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(ident, str):
            if ident in seen:
                line = located.position(("steps", seen[ident], "id"))[0]
                ctx.add(("steps", i, "id"), f"duplicate step id '{ident}' (first used at line {line})")
            seen.setdefault(ident, i)
        if step is not None:
            steps.append(step)
    if not top.steps:
        ctx.add(("steps",), "a runbook needs at least one step")
    out["steps"] = steps
    if ctx.problems:
        raise ValidationError(sorted(ctx.problems, key=lambda p: (p.line or 0, p.column or 0)))
    try:
        spec = RunbookSpec.model_validate(out)
    except PydanticValidationError as exc:
        ctx.pydantic((), exc)
        raise ValidationError(ctx.problems) from None
    # Runs keep the compiled runbook as JSON (the snapshot, the compile cache): compile to what reads back from
    # it, so that a YAML date or binary value in a param default or an expectation means the same in every run,
    # after a resume from the snapshot and after a cache hit.
    spec = RunbookSpec.model_validate(spec.model_dump(mode="json", by_alias=True))
    remember_reusable_configs(spec.step_actions(), registry)
    return spec


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
            ctx.pydantic(path, exc)
    return out


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
            return None
        else:
            kind = "check" if probes_only else "step"
            close = difflib.get_close_matches(str(key), [*fields, *names], n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            ctx.add(
                (*path, key),
                f"unknown key '{key}': {guess}expected a {kind} field ({', '.join(fields)}) or a step type ({', '.join(names)})",
            )
            return None
    if len(found) > 1:
        ctx.add(
            (*path, found[1]), f"more than one step type ({', '.join(found)}); a {('check' if probes_only else 'step')} has exactly one"
        )
        return None
    if not found:
        return None
    return found[0], raw[found[0]]


def _action(ctx: _Ctx, path: Path_, type_name: str, raw_config: Any) -> Action | None:
    step_type = ctx.registry.get(type_name)
    config = step_type.shorthand(raw_config)
    try:
        model = step_type.Config.model_validate(config)
    except PydanticValidationError as exc:
        ctx.pydantic((*path, type_name), exc)
        return None
    dumped = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for name in step_type.check_fields:
        if dumped.get(name) is not None:
            checks = _checks(ctx, (*path, type_name, name), config[name])
            if checks is None:
                return None
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
        action = _action(ctx, path, *split)
        if action is None:
            return None
        rest.update(type=action.type, config=action.config)
    try:
        return Check.model_validate(rest)
    except PydanticValidationError as exc:
        ctx.pydantic(path, exc)
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
        fields["action"] = _action(ctx, path, *split)
        if "targets" in raw and ctx.registry.get(split[0]).may_wait:
            ctx.add((*path, "targets"), f"a '{split[0]}' step cannot fan out over targets (it waits for the whole run); "
                                        "put the fan-out in the steps around it")  # fmt: skip
    for key in ("precondition", "check"):
        if key in fields:
            fields[key] = _checks(ctx, (*path, key), fields[key])
    if "verify" in fields:
        fields["verify"] = _verify(ctx, (*path, "verify"), fields["verify"])
    if isinstance(fields.get("retry"), int) and not isinstance(fields.get("retry"), bool):
        fields["retry"] = {"attempts": fields["retry"]}
    if "rollback" in fields:
        fields["rollback"] = _rollback(ctx, (*path, "rollback"), fields["rollback"])
    if len(ctx.problems) > before:
        return None
    try:
        return Step.model_validate(fields)
    except PydanticValidationError as exc:
        ctx.pydantic(path, exc)
        return None


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


def is_valid_name(name: str) -> bool:
    """True if ``name`` is a valid runbook name."""
    return re.fullmatch(NAME_PATTERN, name) is not None
