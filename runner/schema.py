"""JSON Schema (draft 2020-12) of the runbook file format, for editors and CI.

Built from the registered step types' ``Config`` models, so a third-party step
type appears in the schema as soon as its plugin is installed. Use it with
yaml-language-server by putting this first line in a runbook::

    # yaml-language-server: $schema=./runbook.schema.json

JSON Schema cannot express everything ``runbook validate`` checks (unique step
ids, YAML aliases, template syntax); the loader checks those.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from runner.model import NAME_PATTERN, STEP_ID_PATTERN, Batch, Expect, Retry
from runner.params import SECRET_REF, ParamSpec
from runner.registry import StepTypeRegistry

__all__ = ["runbook_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_DURATION = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)\s*)+$|^\d+(\.\d+)?$"},
    ]
}
_REF = "#/$defs/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def runbook_schema(registry: StepTypeRegistry) -> dict[str, Any]:
    """The JSON Schema of a runbook file given the registered step types."""
    step_types = registry.items()
    kinds: list[type[BaseModel]] = [Expect, Retry, Batch, ParamSpec, *(st.Config for _, st in step_types)]
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(m, "validation") for m in kinds]
    keys, top = models_json_schema(models, ref_template=_REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))

    def model_ref(model: Any) -> dict[str, Any]:
        return dict(keys[(model, "validation")])

    type_props: dict[str, Any] = {}
    for name, st in step_types:
        config = model_ref(st.Config)
        shorthand = getattr(st, "shorthand_schema", None)
        type_props[name] = {"anyOf": [config, shorthand]} if shorthand else config
        if st.description:
            type_props[name] = {**type_props[name], "description": st.description}
    probes = [name for name, st in step_types if st.probe]

    defs["check"] = {
        "type": "object",
        "description": "A read-only probe (one probe step type plus 'expect') or an 'expr' template",
        "additionalProperties": False,
        "properties": {
            **{name: type_props[name] for name in probes},
            "expect": model_ref(Expect),
            "expr": {"type": "string"},
            "description": {"type": "string"},
        },
        "oneOf": [{"required": [name]} for name in probes] + [{"required": ["expr"]}],
    }
    defs["checks"] = {"anyOf": [_ref("check"), {"type": "array", "items": _ref("check")}]}
    defs["verify"] = {
        "anyOf": [
            {"type": "array", "items": _ref("check")},
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["checks"],
                "properties": {"within": _DURATION, "every": _DURATION, "checks": {"type": "array", "items": _ref("check")}},
            },
        ]
    }
    defs["action"] = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
        "properties": type_props,
    }
    defs["step"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "pattern": STEP_ID_PATTERN},
            "description": {"type": "string"},
            "when": {"type": ["string", "boolean"]},
            "precondition": _ref("checks"),
            "check": _ref("checks"),
            "verify": _ref("verify"),
            "expect": model_ref(Expect),
            "retry": {"anyOf": [{"type": "integer", "minimum": 1}, model_ref(Retry)]},
            "timeout": _DURATION,
            "expected": _DURATION,
            "idempotent": {"type": "boolean"},
            "rollback": _ref("action"),
            "targets": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "for_each": {
                "anyOf": [{"type": "array"}, {"type": "string", "pattern": r"\{\{|\{%"}],
                "description": "run the step once per item of a list (or of a template that gives one); `{{ item }}` is the item",
            },
            "batch": model_ref(Batch),
            "reads": {
                "type": "array",
                "items": {"type": "string"},
                "description": "what the step's checks read (paths or keys; templates allowed); [] = nothing earlier steps change",
            },
            "writes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "what the step's action changes (paths or keys; templates allowed); [] = nothing",
            },
            **type_props,
        },
        "oneOf": [{"required": [name]} for name, _ in step_types],
    }
    defs["include"] = {
        "type": "string",
        "pattern": r"^(?!/)(?!.*(^|/)\.\.(/|$)).+\.ya?ml$",
        "description": "a YAML file on the runbook search path (relative, no '..')",
    }
    defs["defaults"] = {
        "type": "object",
        "description": "default config per step type, merged into every use of that type (the step's values win)",
        "additionalProperties": False,
        "properties": {name: _defaults_schema(st, defs, model_ref(st.Config)) for name, st in step_types},
    }
    param_types = ["string", "integer", "number", "boolean", "array", "object"]
    return {
        "$schema": DIALECT,
        "$id": "https://runbook.dev/schema/runbook.json",
        "title": "runbook",
        "description": "A runbook file: typed, idempotent steps with checks and verifications",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "steps"],
        "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "description": {"type": "string"},
            "version": {"type": ["string", "number"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "params": {
                "type": "object",
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                "additionalProperties": {"anyOf": [model_ref(ParamSpec), {"enum": param_types}]},
            },
            "secrets": {"type": "object", "additionalProperties": {"type": "string", "pattern": SECRET_REF.pattern}},
            "lock": {"type": "string"},
            "on_failure": {"enum": ["stop", "rollback"]},
            "defaults": _ref("defaults"),
            "include": {"anyOf": [_ref("include"), {"type": "array", "items": _ref("include")}]},
            "steps": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        _ref("step"),
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["include"],
                            "properties": {"include": _ref("include")},
                        },
                    ]
                },
            },
        },
        "$defs": defs,
    }


def _defaults_schema(step_type: Any, defs: dict[str, Any], config_ref: dict[str, Any]) -> dict[str, Any]:
    """A step type's config with nothing required, plus the keys only its defaults take (``base_url``)."""
    name = str(config_ref.get("$ref", "")).rsplit("/", 1)[-1]
    properties = dict(defs.get(name, {}).get("properties", {}))
    properties.update(step_type.defaults_keys)
    return {"type": "object", "additionalProperties": False, "properties": properties}
