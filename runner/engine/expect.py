"""Applying ``expect`` to an action or probe result."""

from __future__ import annotations

import re
from typing import Any

from runner.model import Expect
from runner.steptypes import ActionResult

__all__ = ["evaluate", "json_path"]

_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")
_MISSING = object()


def json_path(data: Any, path: str) -> Any:
    """Value at ``a.b[0].c`` (a leading ``$.`` is allowed); a private sentinel if absent."""
    path = path[2:] if path.startswith("$.") else path.lstrip("$")
    for key, index in _TOKEN.findall(path):
        if index:
            if not isinstance(data, list) or int(index) >= len(data):
                return _MISSING
            data = data[int(index)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return _MISSING
    return data


def _text(name: str, text: str | None, spec: dict[str, Any]) -> list[str]:
    text = text or ""
    out = []
    if spec.get("contains") is not None and spec["contains"] not in text:
        out.append(f"{name} does not contain {spec['contains']!r}")
    if spec.get("not_contains") is not None and spec["not_contains"] in text:
        out.append(f"{name} contains {spec['not_contains']!r}")
    if spec.get("matches") is not None and re.search(spec["matches"], text) is None:
        out.append(f"{name} does not match /{spec['matches']}/")
    return out


def _status_ok(status: int | None, want: Any) -> bool:
    if status is None:
        return False
    if isinstance(want, str):
        return str(status)[0] == want[0] if want.endswith("xx") else status == int(want)
    if isinstance(want, list):
        return status in want
    return bool(status == want)


def evaluate(expect: Expect | None, default: dict[str, Any], result: ActionResult) -> tuple[bool, str]:
    """(holds, why): apply the step type's default expectation overridden by ``expect``."""
    if result.ok is False:
        return False, result.detail or "returned false"
    spec = dict(default)
    if expect is not None:
        spec.update(expect.model_dump(by_alias=True, exclude_none=True))
    problems: list[str] = []
    if "exit_code" in spec:
        want = spec["exit_code"] if isinstance(spec["exit_code"], list) else [spec["exit_code"]]
        if result.exit_code not in want:
            problems.append(f"exit code {result.exit_code}, expected {' or '.join(map(str, want))}")
    for name in ("stdout", "stderr", "body"):
        if name in spec:
            problems += _text(name, getattr(result, name), spec[name])
    if "status" in spec and not _status_ok(result.status, spec["status"]):
        problems.append(f"status {result.status}, expected {spec['status']}")
    for path, want in (spec.get("json") or {}).items():
        source = result.json if result.json is not None else result.output
        got = json_path(source, path)
        if got is _MISSING:
            problems.append(f"json {path} is missing, expected {want!r}")
        elif got != want:
            problems.append(f"json {path} is {got!r}, expected {want!r}")
    for name, part in (spec.get("header") or {}).items():
        value = {k.lower(): v for k, v in (result.headers or {}).items()}.get(name.lower())
        if value is None or part not in value:
            problems.append(f"header {name} is {value!r}, expected it to contain {part!r}")
    if "output" in spec and result.output != spec["output"]:
        problems.append(f"output is {result.output!r}, expected {spec['output']!r}")
    if problems:
        return False, "; ".join(problems)
    return True, result.detail or "ok"
