"""Runbook parameters: the declared spec, the pydantic model built from it, and CLI parsing.

YAML runbooks declare params JSON-Schema style (``{type: string, pattern: ...}``);
Python runbooks subclass :class:`Params`. Both end up as the same
:class:`ParamSpec` mapping in the compiled runbook, and as a pydantic model that
validates values and exports the params JSON Schema.

A param declared ``secret: true`` (YAML) or typed :data:`Secret` (Python) takes a
*reference* such as ``env:DB_PASSWORD`` or ``file:/run/secrets/token``, never the
value itself: only the reference is stored in the journal, the value is resolved
when a step needs it and redacted from everything the run records or prints.
"""

from __future__ import annotations

import json
import re
import types
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, create_model, model_validator
from pydantic import ValidationError as PydanticValidationError

from runner.errors import ParamsError

__all__ = ["ParamSpec", "Params", "Regex", "Secret", "SecretAllow", "build_params_model", "parse_cli_params", "spec_from_model"]

ParamType = Literal["string", "integer", "number", "boolean", "array", "object"]
_PY_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}
SECRET_REF = re.compile(r"^[a-z][a-z0-9_]*:.+$", re.S)


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_compiles)]
"""A field holding a Python regular expression; an invalid one is a validation error naming the problem."""


def _secret_ref(value: str) -> str:
    if not SECRET_REF.match(value):
        raise ValueError(
            "a secret param takes a reference such as 'env:NAME' or 'file:/path', never the value itself, so that it is never stored"
        )
    return value


Secret = Annotated[
    str,
    AfterValidator(_secret_ref),
    WithJsonSchema({"type": "string", "pattern": SECRET_REF.pattern, "x-secret": True}),
]
"""Type of a secret param in a Python :class:`Params` class."""


class SecretAllow:
    """The references callers may choose for a Python secret param: ``Annotated[Secret, SecretAllow("env:DB_*")]``.

    The same list as ``allow:`` in YAML (see :mod:`runner.secretrefs`); exported as ``x-allow`` in the schema.
    """

    def __init__(self, *patterns: str) -> None:
        from runner.secretrefs import check_allow_pattern

        self.patterns = [check_allow_pattern(p) for p in patterns]

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        schema["x-allow"] = list(self.patterns)
        return schema


class Params(BaseModel):
    """Base class of a Python runbook's typed params. Unknown params are errors."""

    model_config = ConfigDict(extra="forbid")


class ParamSpec(BaseModel):
    """One declared param, as written in a YAML runbook's ``params`` mapping."""

    model_config = ConfigDict(extra="forbid")

    type: ParamType = "string"
    description: str = ""
    default: Any = None
    required: bool | None = None
    enum: list[Any] | None = None
    pattern: Regex | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    items: ParamType | None = None
    secret: bool = False
    allow: list[str] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # absent from stored specs and hashes unless given: older runs' hashes stay valid
        description="secret params: the references callers may choose ('env:DB_*', 'file:/etc/app/secrets/*'); "
        "without it, only the default (or the operator's RUNBOOK_SECRET_ALLOW)",
    )

    @model_validator(mode="after")
    def _secret_default_is_a_reference(self) -> ParamSpec:
        if self.secret and self.default is not None:
            _secret_ref(self.default if isinstance(self.default, str) else repr(self.default))
        return self

    @model_validator(mode="after")
    def _allow_is_for_secrets(self) -> ParamSpec:
        from runner.secretrefs import check_allow_pattern

        if self.allow is not None:
            if not self.secret:
                raise ValueError("'allow' lists the references a secret param may take: it needs 'secret: true'")
            for pattern in self.allow:
                check_allow_pattern(pattern)
        return self

    @model_validator(mode="after")
    def _explicit_required(self) -> ParamSpec:
        # Whether a default was given is known only while the written form is at hand; the stored form (a run's
        # snapshot, the compile cache) always has a default key. Saying so keeps a required param required there.
        if self.required is None and "default" not in self.model_fields_set:
            self.required = True
        return self

    def is_required(self) -> bool:
        """Required unless it has a default or says ``required: false``."""
        if self.required is not None:
            return self.required
        return "default" not in self.model_fields_set


def _annotation(spec: ParamSpec) -> Any:
    if spec.secret:
        return Annotated[Secret, SecretAllow(*spec.allow)] if spec.allow is not None else Secret
    if spec.enum:
        return Literal[tuple(spec.enum)]
    base = _PY_TYPES[spec.type]
    if spec.type == "array" and spec.items:
        return types.GenericAlias(list, (_PY_TYPES[spec.items],))
    return base


def _field(spec: ParamSpec) -> Any:
    kwargs: dict[str, Any] = {"description": spec.description or None}
    if spec.pattern is not None:
        kwargs["pattern"] = spec.pattern
    if spec.minimum is not None:
        kwargs["ge"] = spec.minimum
    if spec.maximum is not None:
        kwargs["le"] = spec.maximum
    if spec.min_length is not None:
        kwargs["min_length"] = spec.min_length
    if spec.max_length is not None:
        kwargs["max_length"] = spec.max_length
    if spec.is_required():
        return Field(**kwargs)
    return Field(default=spec.default, **kwargs)


def build_params_model(runbook: str, specs: dict[str, ParamSpec]) -> type[Params]:
    """Build the pydantic model that validates ``runbook``'s params."""
    fields = {name: (_annotation(spec), _field(spec)) for name, spec in specs.items()}
    title = "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]", runbook) if part) + "Params"
    model = create_model(title, __base__=Params, **fields)  # type: ignore[call-overload]
    return model


def spec_from_model(model: type[BaseModel]) -> dict[str, ParamSpec]:
    """Derive the :class:`ParamSpec` mapping of a Python :class:`Params` class."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    out: dict[str, ParamSpec] = {}
    for name, prop in schema.get("properties", {}).items():
        prop = _flatten_nullable(prop)
        data: dict[str, Any] = {}
        if prop.get("x-secret"):
            data["secret"] = True
            if isinstance(prop.get("x-allow"), list):
                data["allow"] = prop["x-allow"]
        elif "enum" in prop or "const" in prop:
            data["enum"] = prop.get("enum", [prop.get("const")])
            kinds = {type(v) for v in data["enum"]}
            data["type"] = _json_type(kinds.pop()) if len(kinds) == 1 else "string"
        elif prop.get("type") in _PY_TYPES:
            data["type"] = prop["type"]
        if prop.get("type") == "array" and isinstance(prop.get("items"), dict) and prop["items"].get("type") in _PY_TYPES:
            data["items"] = prop["items"]["type"]
        for key, target in (("description", "description"), ("pattern", "pattern"), ("minimum", "minimum"),
                            ("maximum", "maximum"), ("minLength", "min_length"), ("maxLength", "max_length")):  # fmt: skip
            if key in prop and not (data.get("secret") and key == "pattern"):
                data[target] = prop[key]
        if "default" in prop:
            data["default"] = prop["default"]
        elif name not in required:
            data["required"] = False
        out[name] = ParamSpec.model_validate(data)
    return out


def _flatten_nullable(prop: dict[str, Any]) -> dict[str, Any]:
    any_of = prop.get("anyOf")
    if isinstance(any_of, list):
        non_null = [p for p in any_of if p.get("type") != "null"]
        if len(non_null) == 1:
            merged = {k: v for k, v in prop.items() if k != "anyOf"}
            return {**non_null[0], **merged}
    return prop


def _json_type(kind: type) -> str:
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(kind, "string")


def validate_params(runbook: str, model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """Validate ``values`` against ``model``; raise :class:`ParamsError` naming each bad param."""
    try:
        return model.model_validate(values)
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "params"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown param; this runbook takes: {', '.join(model.model_fields) or 'no params'}"
            problems.append(f"{loc}: {msg}")
        raise ParamsError(runbook, problems) from None


def parse_cli_params(runbook: str, model: type[BaseModel], pairs: list[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``-p key=value`` pairs into raw values typed by ``model`` (arrays/objects as JSON)."""
    values = dict(base or {})
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParamsError(runbook, [f"'{pair}': expected key=value"])
        field = model.model_fields.get(key)
        values[key] = _typed(raw, field.annotation if field is not None else str)
    return values


def _typed(raw: str, annotation: Any) -> Any:
    text = str(annotation)
    if annotation in (list, dict) or text.startswith(("list", "dict", "typing.Dict", "typing.List")):
        try:
            return json.loads(raw)
        except ValueError:
            return [part for part in raw.split(",") if part] if "list" in text.lower() or annotation is list else raw
    return raw
