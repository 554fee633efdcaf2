"""The MCP surface over stdio (the SDK's own client, every server message checked against the spec's schema):
a lean tool list with correct annotations, progress per step, cancellation at the next boundary, resources,
subscriptions, the prompt, and list_changed when a runbook file is added."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.agents.agentkit import dump, lines
from tests.agents.mcpkit import REPO, Capture, McpAgent, connect_stdio
from tests.conftest import Project, require

pytestmark = pytest.mark.usefixtures("mcp_server")  # skipped locally without the mcp SDK; a failure in CI

ANNOTATIONS = {  # tool: (readOnly, destructive, idempotent, openWorld)
    "list_runbooks": (True, False, True, False),
    "describe_runbook": (True, False, True, False),
    "plan_run": (True, False, True, True),
    "start_run": (False, True, False, True),
    "resume_run": (False, True, False, True),
    "get_run": (True, False, True, False),
    "list_runs": (True, False, True, False),
    "read_events": (True, False, True, False),
    "read_logs": (True, False, True, False),
    "pause_run": (False, False, True, False),
    "cancel_run": (False, True, True, True),
    "approve_run": (False, True, False, False),
    "deny_run": (False, False, False, False),
}

STEPS = """
name: steps
description: Three steps, each appending its id to a file; the second is long.
steps:
  - {{id: one, expected: 1s, shell: {{script: "echo one | tee -a {log}"}}}}
  - {{id: two, expected: 10s, shell: {{script: "sleep {long}; echo two >> {log}"}}}}
  - {{id: three, expected: 1s, shell: {{script: "echo three >> {log}"}}}}
"""


def _run(scenario: Any) -> None:
    anyio.run(scenario)


def test_tool_list_is_lean_named_and_annotated_for_the_shipped_examples(project: Project) -> None:
    """must-show 4: tools/list for runbooks/ is under 16 KB; every name is a plain identifier; annotations per tool."""
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_stdio(project, "--policy", str(_may_approve(project)), capture=capture,
                                 env={"RUNBOOK_PATH": str(REPO / "runbooks")}) as agent:  # fmt: skip
            got["tools"] = await agent.tools()

    _run(scenario)
    listing = next(m["result"] for m in capture.received if "tools" in m.get("result", {}))
    size = len(json.dumps(listing, separators=(",", ":")).encode())
    assert size < 16 * 1024, f"tools/list is {size} bytes"
    tools = got["tools"]
    assert set(tools) == set(ANNOTATIONS), sorted(tools)
    for name, tool in tools.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name), name
        a = tool.annotations
        assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint) == ANNOTATIONS[name], name
        assert tool.output_schema["type"] == "object" and len(tool.output_schema["oneOf"]) == 2, name
    names = sorted(p.stem.replace("_", "-") for p in (REPO / "runbooks").iterdir() if p.suffix in (".yaml", ".py"))
    assert tools["start_run"].input_schema["properties"]["runbook"]["enum"] == names
    assert not any(n.startswith("run_") and n != "run_id" for n in tools), "no per-runbook tools: start_run takes the name"


def _may_approve(project: Project) -> Path:
    path = project.root / "policy.yaml"
    path.write_text("runbooks:\n  '*': {agents_may_approve: true}\n")
    return path


def test_progress_per_step_and_results_once(project: Project) -> None:
    """must-show 2: a call with a progress token gets one notification per step; text content is one summary line."""
    log = project.root / "steps.log"
    project.write("steps.yaml", STEPS.format(log=log, long=0.2))
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        reports: list[tuple[float, float | None, str | None]] = []

        async def progress(p: float, total: float | None, message: str | None) -> None:
            reports.append((p, total, message))

        async with connect_stdio(project, capture=capture) as agent:
            got["tools"] = await agent.tools()
            got["done"] = await agent.call("start_run", {"runbook": "steps", "budget": "30s"}, progress=progress)
            got["reports"] = reports

    _run(scenario)
    done = got["done"]
    assert not done.is_error and done.data["state"] == "succeeded", done
    assert [(p, t) for p, t, _ in got["reports"]] == [(1, 3), (2, 3), (3, 3)], got["reports"]
    assert [m.split("'")[1] for _, _, m in got["reports"] if m] == ["one", "two", "three"]
    assert "\n" not in done.text and done.text.startswith(f"run {done.data['run_id']} (steps) succeeded"), done.text
    assert json.dumps(done.data)[:50] not in done.text, "the text is a summary, not a copy of the JSON"
    assert len(capture.notifications("notifications/progress")) == 3


def test_cancel_stops_at_the_next_boundary_and_resume_completes_each_step_once(project: Project) -> None:
    """must-show 2: a cancel during a long step returns at once; the run pauses within 1 s of the step's end
    (a pause by the agent); resuming completes it, each step once."""
    log = project.root / "steps.log"
    project.write("steps.yaml", STEPS.format(log=log, long=8))
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_stdio(project, capture=capture) as agent:
            got["tools"] = await agent.tools()
            scope = anyio.CancelScope()

            async def call() -> None:
                with scope:
                    await agent.call("start_run", {"runbook": "steps", "budget": "30s"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                with anyio.fail_after(60):  # step two (8 s) under way, whatever the machine's load
                    while not await anyio.to_thread.run_sync(_step_two_running, project):
                        await anyio.sleep(0.05)
                started = time.monotonic()
                scope.cancel()
            got["cancel_returned"] = time.monotonic() - started
            rid = project.run("runs", "--json").json()["runs"][0]["run_id"]
            got["paused"] = await _poll(agent, rid, lambda v: v["state"] != "running")
            got["done"] = await agent.call("resume_run", {"run_id": rid, "budget": "30s"})

    _run(scenario)
    assert got["cancel_returned"] < 1.5, got["cancel_returned"]
    paused = got["paused"]
    assert paused["state"] == "paused" and paused["next"]["action"] == "resume", dump(paused)
    assert [s["state"] for s in paused["steps"]] == ["succeeded", "succeeded", "pending"], dump(paused)
    events = project.run("events", paused["run_id"], "--json").json()["events"]
    two_done = next(e for e in events if e["type"] == "step.finished" and e["step_id"] == "two")
    pause = next(e for e in events if e["type"] == "run.paused")
    request = next(e for e in events if e["type"] == "request.pause")
    assert request["actor"] == "agent:tester" and "cancelled the call" in request["data"].get("reason", json.dumps(request))
    assert _ts(pause) - _ts(two_done) < 1.0, (two_done, pause)
    assert got["done"].data["state"] == "succeeded", got["done"]
    assert lines(log) == ["one", "two", "three"], "each step once"


def _step_two_running(project: Project) -> bool:
    runs = project.run("runs", "--json").json()["runs"]
    if not runs:
        return False
    steps = project.run("status", runs[0]["run_id"], "--json").json()["steps"]
    return bool(steps[1]["state"] == "running")


def _ts(event: dict[str, Any]) -> float:
    from tests.agents.agentkit import parse_time

    value = parse_time(event["ts"])
    assert value is not None
    return value


async def _poll(agent: McpAgent, run_id: str, done: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = (await agent.call("get_run", {"run_id": run_id})).data
        if done(view):
            return view
        await anyio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not settle within {timeout}s")


def test_resources_prompt_subscription_and_list_changed(project: Project) -> None:
    """must-show 3: resources/read of a run is get_run's view; a subscription hears the state change; a new
    runbook file sends tools/list_changed; templates and the operate-runbook prompt are listed."""
    log = project.root / "steps.log"
    project.write("steps.yaml", STEPS.format(log=log, long=0.1))
    project.write("gate.yaml", "name: gate\nsteps:\n  - {id: ok, approval: {message: go?}}\n  - {id: after, shell: [true]}\n")
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_stdio(project, capture=capture) as agent:
            s = agent.session
            got["tools"] = await agent.tools()
            gated = await agent.call("start_run", {"runbook": "gate"})
            rid = gated.data["run_id"]
            got["get"] = (await agent.call("get_run", {"run_id": rid})).data
            read = await s.read_resource(f"runbook://runs/{rid}")
            got["read"] = json.loads(read.contents[0].text)
            got["runbook"] = json.loads((await s.read_resource("runbook://runbooks/steps")).contents[0].text)
            got["templates"] = [t.uri_template for t in (await s.list_resource_templates()).resource_templates]
            got["resources"] = [r.uri for r in (await s.list_resources()).resources]
            prompt = await s.get_prompt("operate-runbook", {"runbook": "gate", "params": "{}"})
            got["prompt"] = prompt.messages[0].content.text
            await _subscribe(s, f"runbook://runs/{rid}")
            assert project.run("approve", rid, "--by", "pat").code == 0
            await agent.call("resume_run", {"run_id": rid})
            await _until(lambda: capture.notifications("notifications/resources/updated"), what="resources/updated")
            shutil.copy(project.runbooks / "steps.yaml", project.runbooks / "steps2.yaml")
            (project.runbooks / "steps2.yaml").write_text(
                (project.runbooks / "steps.yaml").read_text().replace("name: steps", "name: steps2")
            )
            await _until(lambda: capture.notifications("notifications/tools/list_changed"), what="tools/list_changed")
            got["after"] = await agent.tools()
            ran = await agent.call("start_run", {"runbook": "steps"})
            got["logs"] = (await s.read_resource(f"runbook://runs/{ran.data['run_id']}/logs/one")).contents[0].text

    _run(scenario)
    assert got["read"]["run_id"] == got["get"]["run_id"] and got["read"]["steps"] == got["get"]["steps"]
    assert got["read"]["next"]["action"] == got["get"]["next"]["action"] == "await_approval"
    assert got["runbook"]["name"] == "steps" and [s["id"] for s in got["runbook"]["runbook"]["steps"]] == ["one", "two", "three"]
    assert got["templates"] == ["runbook://runbooks/{name}", "runbook://runs/{run_id}", "runbook://runs/{run_id}/logs/{step}"]
    assert "runbook://runbooks/gate" in got["resources"]
    assert "start_run" in got["prompt"] and "resume_run" in got["prompt"] and "`gate`" in got["prompt"]
    assert "steps2" in got["after"]["start_run"].input_schema["properties"]["runbook"]["enum"]
    assert got["logs"] == "stdout| one\n"


async def _subscribe(session: Any, uri: str) -> None:
    """resources/subscribe (the 2025-11-25 method; the SDK's helper warns that 2026-07-28 replaces it)."""
    import mcp.types as types

    await session.send_request(types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)), types.EmptyResult)


async def _until(check: Any, timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.05)


def test_errors_are_tool_errors_that_fit_the_declared_schema(project: Project) -> None:
    """Errors are isError results whose structured content is the documented error document (the tool's
    outputSchema allows it); an unknown tool is a protocol error, as the spec says."""
    project.write("steps.yaml", STEPS.format(log=project.root / "x.log", long=0))
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        from mcp.shared.exceptions import MCPError

        async with connect_stdio(project, capture=capture) as agent:
            got["tools"] = await agent.tools()
            got["unknown runbook"] = await agent.call("start_run", {"runbook": "nope"})
            got["bad arg"] = await agent.call("get_run", {"run_id": "01ABCDEF", "extra": 1})
            got["no run"] = await agent.call("get_run", {"run_id": "01ABCDEFGH"})
            with pytest.raises(MCPError, match="unknown tool 'run_steps'"):
                await agent.session.call_tool("run_steps", {})

    _run(scenario)
    for key in ("unknown runbook", "bad arg", "no run"):
        call = got[key]
        assert call.is_error and call.text.startswith("error: ") and set(call.data) >= {"error"}, (key, call)
        assert set(call.data["error"]) >= {"type", "message", "hint", "exit_code"}, call
    assert got["no run"].data["error"]["type"] == "RunNotFound"


def test_the_conformance_schema_is_there_in_ci() -> None:
    """The spec's schema is needed for the checks above (a missing one is a failure in CI)."""
    from tests.agents.mcpkit import schema_for

    require(True, "")
    assert "JSONRPCMessage" in schema_for("2025-11-25")["$defs"]


RETRIED = """
name: retried
steps:
  - id: flaky
    retry: {{attempts: 2, delay: 0s}}
    shell: [sh, -c, 'if [ -e {mark} ]; then echo second; else touch {mark}; echo first; exit 3; fi']
"""


def test_read_logs_labels_each_attempt(project: Project) -> None:
    """read_logs gives every attempt's lines, each with its attempt and part (as ``runbook logs --json``)."""
    project.write("retried.yaml", RETRIED.format(mark=project.root / "mark"))
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_stdio(project, capture=Capture()) as agent:
            done = await agent.call("start_run", {"runbook": "retried", "budget": "30s"})
            got["done"] = done
            got["logs"] = await agent.call("read_logs", {"run_id": done.data["run_id"]})

    _run(scenario)
    assert got["done"].data["state"] == "succeeded", got["done"]
    lines = [(line["attempt"], line["part"], line["stream"], line["line"]) for line in got["logs"].data["lines"]]
    assert lines == [(1, "action", "stdout", "first"), (2, "action", "stdout", "second")], lines
