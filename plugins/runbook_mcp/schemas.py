"""Tool output schemas and results: one shape per result, or the error document, and never two copies of it.

Every tool's ``outputSchema`` is ``{"type": "object", "oneOf": [<result>, <error>]}``: a successful call's ``structuredContent`` is the result, a failed call's (``isError: true``) is the
error document of :func:`runner.views.error_document`, so both conform to what the tool declares. Output
schemas are contracts, trimmed to keep ``tools/list`` small: no titles, descriptions or defaults; each shape
names its required fields and types its top-level ones (``next.action`` as an enum); nested shapes name their
required fields only (docs/agents.md documents every shape whole). The text content of a result is one summary line, not a copy of the JSON (see docs/agents.md,
"Results").
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

__all__ = ["ERROR_SCHEMA", "error_body", "input_schema", "output_schema"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["type", "message", "hint", "exit_code"]}, "next": {"type": "object"}},
}
"""The error document (``{"error": {type, message, hint, exit_code, problems?}, "next"?, "run_id"?}``; docs/agents.md)."""

_DROP = frozenset({"title", "description", "examples", "default"})
_ACTIONS = ["none", "resume", "wait", "await_approval", "decide", "fix_and_retry", "wait_elsewhere", "conflict", "handoff"]


def _trim(node: Any) -> Any:
    """``node`` as a contract: no titles, descriptions or defaults, and of each object only its required
    properties (a document with more still validates: objects stay open)."""
    if isinstance(node, list):
        return [_trim(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    required = set(node.get("required", ()))
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            kept = {name: _trim(sub) for name, sub in value.items() if name in required}
            if kept:
                out[key] = kept
        elif key == "additionalProperties" and value is True:
            continue
        elif key not in _DROP:
            out[key] = _trim(value)
    return _nullable(out)


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``{"anyOf": [{"type": T}, {"type": "null"}]}`` as ``{"type": [T, "null"]}``."""
    options = node.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = next(o for o in options if o != {"type": "null"})
        if set(other) == {"type"} and isinstance(other["type"], str):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return {**rest, "type": [other["type"], "null"]}
    return node


@lru_cache(maxsize=32)
def _output(model: type[BaseModel]) -> dict[str, Any]:
    schema = _trim(model.model_json_schema(mode="serialization", ref_template="#/$defs/{model}"))
    defs = dict(schema.pop("$defs", {}))
    for key, sub in list(defs.items()):  # nested shapes: their required field names only (docs/agents.md has them whole)
        if key != "NextAction" and "properties" in sub:
            defs[key] = {"type": "object", "required": sub.get("required", [])}
        elif "enum" in sub:
            defs[key] = {"type": "string"}
    if "NextAction" in defs:  # the one field every caller branches on
        defs["NextAction"]["properties"]["action"]["enum"] = _ACTIONS
    props = schema.get("properties", {})
    schema["properties"] = {k: v for k, v in props.items() if not (isinstance(v.get("type"), list) or v.get("type") == "object")}
    return {"type": "object", "oneOf": [_inline(schema, defs), ERROR_SCHEMA]}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` into ``defs`` replaced by what it names (the shapes are not recursive)."""
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _inline(defs[ref.removeprefix("#/$defs/")], defs)
    return {k: _inline(v, defs) for k, v in node.items()}


def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The ``outputSchema`` of a tool whose result is ``model``: that shape or the error document."""
    return copy.deepcopy(_output(model))


def input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema as listed: pydantic's without titles, the model's docstring or ``null`` for optional
    arguments (an optional argument is left out, not null); descriptions stay: they guide the model."""
    out = {k: v for k, v in schema.items() if k not in ("title", "description")}
    props = out.get("properties")
    if isinstance(props, dict):
        out["properties"] = {name: _optional(prop) for name, prop in props.items()}
    return out


def _optional(prop: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in prop.items() if k != "title" and not (k == "default" and v is None)}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        out.pop("anyOf")
        if len(rest) == 1:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
    return out


def error_body(message: str, kind: str, *, hint: str | None = None, exit_code: int = 2) -> dict[str, Any]:
    """An error document for an error that is not a :class:`~runner.errors.RunbookError` (bad arguments, a bug)."""
    return {"error": {"type": kind, "message": message, "hint": hint, "exit_code": exit_code}}
