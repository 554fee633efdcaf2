"""MCP resources and the prompt: runbooks, runs and step logs by URI, and ``operate-runbook``.

=====================================  ==========================================================================
URI (template)                         content
=====================================  ==========================================================================
``runbook://runbooks/{name}``          ``describe_runbook``'s document: description, params schema, steps (JSON)
``runbook://runs/{run_id}``            ``get_run``'s bounded view (JSON); subscribe to hear when its state changes
``runbook://runs/{run_id}/logs/{step}`` the step's whole captured output as ``runbook logs`` prints it (text)
=====================================  ==========================================================================

Every read goes through the same authority check as the tools (an agent reads only runs its policy lets it
read, and only runbooks it may start). No SDK import here: the server turns these into MCP types.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.api import Client

__all__ = ["PROMPT", "TEMPLATES", "Listed", "Parsed", "list_resources", "parse_uri", "prompt_text", "read", "run_state"]

TEMPLATES = [
    ("runbook", "runbook://runbooks/{name}", "A runbook: description, params JSON Schema, steps.", "application/json"),
    ("run", "runbook://runs/{run_id}", "A run: state, steps (outputs bounded to their tail) and next; subscribe for changes.",
     "application/json"),
    ("step-log", "runbook://runs/{run_id}/logs/{step}", "The whole output a step of a run captured (runbook logs RUN STEP).",
     "text/plain"),
]  # fmt: skip
"""(name, URI template, description, MIME type) of each resource template."""

_URI = re.compile(r"^runbook://(?:runbooks/(?P<runbook>[^/]+)|runs/(?P<run>[A-Za-z0-9]+)(?:/logs/(?P<step>[^/]+))?)$")

PROMPT = "operate-runbook"
_PROMPT_TEXT = """\
Operate the runbook `{runbook}` with params {params}. Do not improvise: the runbook is the procedure.
1. describe_runbook("{runbook}") to check its params; plan_run to see what it would change.
2. start_run(runbook="{runbook}", params=..., budget="20s", idempotency_key=<a key of your own>).
3. Each wake-up: get_run(run_id); if next.not_before is in the future, wait until then. Then act on next.action:
   resume or wait -> resume_run(run_id); await_approval -> give a person next.human_command, then resume_run later;
   decide / fix_and_retry -> report next.reason to a person; wait_elsewhere -> get_run later, never resume;
   conflict -> another run holds the lock (next.holder): wait for it, never act on it; handoff -> a longer budget
   is needed: hand over; none -> report the final state and stop.
4. Act only on runs you started; a person's approve/decide/retry only records, you continue with resume_run.
"""


@dataclass(frozen=True)
class Parsed:
    """A resource URI, parsed: a runbook, a run, or a step's log."""

    runbook: str | None = None
    run_id: str | None = None
    step: str | None = None


@dataclass(frozen=True)
class Listed:
    """One concrete resource for ``resources/list``."""

    uri: str
    name: str
    description: str
    mime_type: str


def parse_uri(uri: str) -> Parsed | None:
    """The parts of a ``runbook://`` URI, or None if it is not one of ours."""
    m = _URI.match(uri)
    if m is None:
        return None
    return Parsed(runbook=m.group("runbook"), run_id=m.group("run"), step=m.group("step"))


def list_resources(client: Client, *, runs: int = 20) -> list[Listed]:
    """The runbooks the caller may start and its most recent readable runs."""
    from runbook_mcp.tools import ListRunsArgs, _readable_runs

    out = [Listed(f"runbook://runbooks/{rb.name}", rb.name, (rb.description or "").strip().split("\n")[0], "application/json")
           for rb in client.runbooks().runbooks]  # fmt: skip
    for row in _readable_runs(client, ListRunsArgs(limit=runs)).runs:
        out.append(Listed(f"runbook://runs/{row.run_id}", f"run {row.run_id}", f"{row.runbook}: {row.state}", "application/json"))
    return out


def read(client: Client, uri: str) -> tuple[str, str]:
    """(MIME type, text) of the resource at ``uri``; raises the engine's errors (not found, refused)."""
    from runner.errors import UsageError

    parsed = parse_uri(uri)
    if parsed is None:
        raise UsageError(f"unknown resource URI '{uri}'", hint="URIs: " + ", ".join(t[1] for t in TEMPLATES))
    if parsed.runbook is not None:
        return "application/json", _json(client.describe(parsed.runbook).model_dump(mode="json"))
    assert parsed.run_id is not None
    if parsed.step is None:
        return "application/json", _json(client.status(parsed.run_id).model_dump(mode="json"))
    lines = client.logs(parsed.run_id, step=parsed.step)
    return "text/plain", "".join(f"{line.stream}| {line.text}\n" for line in lines)


def run_state(client: Client, run_id: str) -> str:
    """The state of a run the caller may read: what a subscription compares."""
    rid = client.engine().resolve_id(run_id)
    client.status(rid)  # the authority check
    return str(client.store.get_run(rid).state)


def prompt_text(arguments: dict[str, Any] | None) -> str:
    """The ``operate-runbook`` prompt for ``arguments`` (``runbook``, ``params`` as JSON text or a value)."""
    args = arguments or {}
    params = args.get("params") or "{}"
    return _PROMPT_TEXT.format(runbook=args.get("runbook") or "NAME", params=params)


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
