"""Walking a compiled runbook: every template string and every step-type config, with where it was written.

The compiled form puts a step's action under ``action: {type, config}`` and a check's probe under
``{type, config}``; the file has the step type's key instead (``shell: ...``). :func:`source_path` maps one to
the other so that a problem found in the compiled form is located in the file (or the included file, or the
``defaults:`` entry) where it was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.registry import StepTypeRegistry
    from runner.yamlsafe import Located

__all__ = ["ConfigAt", "StringAt", "configs", "source_path", "step_configs", "strings"]

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class StringAt:
    """A template string of step ``index`` (None: the runbook's ``lock``) at ``path`` in the compiled JSON."""

    path: Path_
    text: str
    index: int | None
    condition: bool  # an expression even without braces (`when`, a check's `expr`)
    target: bool  # rendered per fan-out target
    rollback: bool
    item: bool = False  # rendered per `for_each` item


@dataclass(frozen=True)
class ConfigAt:
    """A step-type config (an action, a rollback, a probe) at ``path`` (of the config) in the compiled JSON."""

    path: Path_
    type: str
    config: dict[str, Any]
    index: int


def strings(spec_json: dict[str, Any], registry: StepTypeRegistry) -> Iterator[StringAt]:
    """Every string the engine renders as a template, with the context it is rendered in."""
    if isinstance(spec_json.get("lock"), str):
        yield StringAt(("lock",), spec_json["lock"], None, False, False, False)
    for i, step in enumerate(spec_json.get("steps", [])):
        fan, each = step.get("targets") is not None, step.get("for_each") is not None
        base: Path_ = ("steps", i)
        if isinstance(step.get("when"), str):
            yield StringAt((*base, "when"), step["when"], i, True, False, False)
        for key in ("targets", "for_each"):
            for path, value in _leaves(step.get(key), (*base, key)):
                yield StringAt(path, value, i, False, False, False)
        for key in ("reads", "writes"):  # rendered per unit, like the action
            for path, value in _leaves(step.get(key), (*base, key)):
                yield StringAt(path, value, i, False, fan, False, each)
        for at in step_configs(step, i, registry):
            rollback = at.path[2] == "rollback"
            step_type = registry.get(at.type) if at.type in registry else None
            for key, value in at.config.items():
                if step_type is not None and key in step_type.check_fields:
                    for j, check in enumerate(value or []):
                        if isinstance(check, dict) and isinstance(check.get("expr"), str):
                            yield StringAt((*at.path, key, j, "expr"), check["expr"], i, True, fan, rollback, each)
                elif step_type is None or key not in step_type.unrendered:
                    for path, text in _leaves(value, (*at.path, key)):
                        yield StringAt(path, text, i, False, fan, rollback, each)
        for path, check in _checks(step, base):
            if isinstance(check.get("expr"), str):
                yield StringAt((*path, "expr"), check["expr"], i, True, fan, False, each)


def configs(spec_json: dict[str, Any], registry: StepTypeRegistry) -> Iterator[ConfigAt]:
    """Every step-type config of the runbook: actions, rollbacks, probes, and probes nested in configs."""
    for i, step in enumerate(spec_json.get("steps", [])):
        yield from step_configs(step, i, registry)


def step_configs(step: dict[str, Any], index: int, registry: StepTypeRegistry) -> Iterator[ConfigAt]:
    """The configs of one step (``index`` in the runbook)."""
    base: Path_ = ("steps", index)
    yield from _config(step.get("action") or {}, (*base, "action"), registry, index)
    if step.get("rollback"):
        yield from _config(step["rollback"], (*base, "rollback"), registry, index)
    for path, check in _checks(step, base):
        yield from _config(check, path, registry, index)


def _checks(step: dict[str, Any], base: Path_) -> Iterator[tuple[Path_, dict[str, Any]]]:
    for kind in ("precondition", "check"):
        for j, check in enumerate(step.get(kind) or []):
            yield (*base, kind, j), check
    for j, check in enumerate((step.get("verify") or {}).get("checks") or []):
        yield (*base, "verify", "checks", j), check


def _config(node: dict[str, Any], path: Path_, registry: StepTypeRegistry, index: int) -> Iterator[ConfigAt]:
    kind, config = node.get("type"), node.get("config")
    if not isinstance(kind, str) or not isinstance(config, dict):
        return
    yield ConfigAt((*path, "config"), kind, config, index)
    for name in registry.get(kind).check_fields if kind in registry else ():
        for j, check in enumerate(config.get(name) or []):
            if isinstance(check, dict):
                yield from _config(check, (*path, "config", name, j), registry, index)


def _leaves(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))


def source_path(spec_json: dict[str, Any], path: Path_, located: Located | None) -> Path_:
    """``path`` in the compiled JSON as the path written in the file (step-type keys instead of ``action``/``config``)."""
    node: Any = spec_json
    out: list[str | int] = []
    skip = False
    for key in path:
        if key == "action" and len(out) == 2 and out[0] == "steps":
            node = node.get("action") if isinstance(node, dict) else None
            continue
        if key == "config" and isinstance(node, dict) and isinstance(node.get("type"), str):
            out.append(node["type"])
            node = node.get("config")
            shorthand = located is not None and not isinstance(_at(located, out), dict | type(None))
            skip = shorthand  # `shell: [argv]`, `http: URL`: the value written is the one field it stands for
            continue
        if skip:
            skip = False
            node = _child(node, key)
            continue
        if key == "checks" and out[-1:] == ["verify"] and located is not None and isinstance(_at(located, out), list):
            node = node.get("checks") if isinstance(node, dict) else None
            continue  # `verify: [checks]` in the file
        out.append(key)
        node = _child(node, key)
    return tuple(out)


def _child(node: Any, key: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def _at(located: Located, path: list[str | int]) -> Any:
    there, rest = located.resolve(tuple(path))
    node: Any = there.data
    for key in rest:
        node = _child(node, key)
    return node
