"""A start form generated from a runbook's params JSON Schema, and the typed params read back from it.

Each property becomes one labelled field: an ``enum`` or a boolean a ``<select>``, an integer or number a
number input (with its bounds), an array a textarea of one item per line, an object a JSON textarea, a secret
param a text input for its *reference* (``env:NAME``, ``file:/path``; never the value), anything else a text
input. Empty optional fields are left out, so the runbook's default applies. Conversion problems are reported
per field; everything else (patterns, lengths, unknown params, secret schemes) is validated by the engine, the
same as for ``POST /v1/runs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from runner.params import SECRET_REF

__all__ = ["FormField", "fields_for", "params_from_form"]

_TYPES = ("string", "integer", "number", "boolean", "array", "object")


@dataclass
class FormField:
    """One input of a start form."""

    name: str
    label: str
    kind: str
    """``text``, ``secret``, ``integer``, ``number``, ``select``, ``lines`` or ``json``."""
    required: bool
    description: str = ""
    value: str = ""
    options: list[tuple[str, str]] = field(default_factory=list)
    """(value, label) of a select."""
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    rules: list[str] = field(default_factory=list)
    """Constraints a person should know before submitting (pattern, items type, ...)."""
    error: str = ""

    @property
    def input_id(self) -> str:
        """The element id (and label target) of this field."""
        return f"param-{self.name}"


def _flatten(prop: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` (an optional Python param) as X."""
    any_of = prop.get("anyOf")
    if isinstance(any_of, list):
        non_null = [p for p in any_of if isinstance(p, dict) and p.get("type") != "null"]
        if len(non_null) == 1:
            return {**non_null[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    return prop


def _kind(prop: dict[str, Any]) -> str:
    if prop.get("x-secret"):
        return "secret"
    if "enum" in prop or prop.get("type") == "boolean":
        return "select"
    return {"integer": "integer", "number": "number", "array": "lines", "object": "json"}.get(str(prop.get("type")), "text")


def _shown(value: Any, kind: str) -> str:
    """A default (or a submitted value) as the field's text."""
    if value is None:
        return ""
    if kind == "lines" and isinstance(value, list):
        return "\n".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    if kind == "json" or isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_for(schema: dict[str, Any], values: dict[str, str] | None = None) -> list[FormField]:
    """The form fields of a params schema, filled with ``values`` (a resubmitted form) or the defaults."""
    required = set(schema.get("required") or [])
    out = []
    for name, raw in (schema.get("properties") or {}).items():
        prop = _flatten(raw if isinstance(raw, dict) else {})
        kind = _kind(prop)
        f = FormField(name=name, label=name, kind=kind, required=name in required, description=str(prop.get("description") or ""),
                      minimum=prop.get("minimum"), maximum=prop.get("maximum"), min_length=prop.get("minLength"),
                      max_length=prop.get("maxLength"))  # fmt: skip
        f.value = values.get(name, "") if values is not None else _shown(prop.get("default"), kind)
        if kind == "secret" and not SECRET_REF.fullmatch(f.value):
            f.value = ""  # never show back what may be the secret itself, typed where its reference belongs
        if kind == "select":
            choices = prop.get("enum", [True, False])
            f.options = [(_shown(c, "text"), _shown(c, "text")) for c in choices]
            if not f.required:
                f.options.insert(0, ("", "(default)" if "default" in prop else "(none)"))
            elif not f.value:
                f.options.insert(0, ("", "choose…"))
        if kind == "secret":
            f.rules.append("a secret reference such as env:NAME or file:/path, never the secret itself")
        elif prop.get("pattern"):
            f.rules.append(f"must match {prop['pattern']}")
        if kind == "lines":
            items = (prop.get("items") or {}).get("type", "string")
            f.rules.append(f"one {items} per line")
        if kind == "json":
            f.rules.append("a JSON object")
        out.append(f)
    return out


def _convert(prop: dict[str, Any], text: str) -> Any:
    """The typed value of one submitted field (ValueError with a message a person understands)."""
    kind = _kind(prop)
    if kind == "select":
        for choice in prop.get("enum", [True, False]):
            if _shown(choice, "text") == text:
                return choice
        raise ValueError("choose one of the listed values")
    if kind == "lines":
        items = (prop.get("items") or {}).get("type", "string")
        return [_scalar(items, line.strip()) for line in text.splitlines() if line.strip()]
    if kind == "json":
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    return _scalar(str(prop.get("type", "string")), text)


def _scalar(kind: str, text: str) -> Any:
    if kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"'{text[:40]}' is not a whole number") from None
    if kind == "number":
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"'{text[:40]}' is not a number") from None
    if kind == "boolean":
        if text.strip().lower() in ("true", "false"):
            return text.strip().lower() == "true"
        raise ValueError("expected true or false")
    return text


def params_from_form(schema: dict[str, Any], form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The params a submitted start form gives (empty optional fields left out), and conversion errors by param."""
    required = set(schema.get("required") or [])
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, raw in (schema.get("properties") or {}).items():
        prop = _flatten(raw if isinstance(raw, dict) else {})
        text = form.get(f"param.{name}", "")
        if text.strip() == "" and _kind(prop) != "text":
            if name in required:
                errors[name] = "required"
            continue
        if text == "" and name not in required:
            continue
        try:
            params[name] = _convert(prop, text)
        except ValueError as exc:
            errors[name] = str(exc)
    return params, errors
