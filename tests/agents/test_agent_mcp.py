"""``runbook mcp`` through the MCP SDK's own stdio client: budgets, the ``next`` cursor, schemas, errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio

from tests.agents.agentkit import Agent, MCPServerProcess, dump, lines
from tests.conftest import Project

CLIENT_SLACK = 0.25
"""Seconds a tool call may take beyond its budget as seen by the client: the server measures the budget
from the moment it receives the call, so the stdio round trip, JSON (de)serialisation and the client's
validation of the result against the tool's output schema come on top. Measured: 10-40 ms."""

FIVE = """
name: five
description: Five one-second steps, each appending its id to a file.
steps:
{steps}
"""


def five_steps(log: Path) -> str:
    step = '  - {{id: s{i}, expected: 1s, shell: {{script: "echo s{i} >> {log}; sleep 1"}}}}'
    return FIVE.format(steps="\n".join(step.format(i=i, log=log) for i in range(1, 6)))


def test_budgeted_start_then_advance_over_calls_following_next(project: Project, mcp_server: MCPServerProcess) -> None:
    """must-show 1: five 1 s steps with a 2.5 s budget per call: several calls, each within budget, each step once."""
    log = project.root / "steps.log"
    project.write("five.yaml", five_steps(log))
    calls: list[Any] = []

    async def scenario() -> None:
        async with mcp_server.connect() as agent:
            assert "start_run" in await agent.tools()
            result = await agent.call("start_run", {"runbook": "five", "budget": 2.5})
            calls.append(result)
            while not result.is_error and result.data["next"]["action"] != "none":
                assert result.data["next"]["action"] == "resume", dump(result.data)
                assert len(calls) < 10, "too many calls"
                result = await agent.call("resume_run", {"run_id": result.data["run_id"], "budget": "2.5s"})
                calls.append(result)

    anyio.run(scenario)
    assert not calls[-1].is_error, calls[-1]
    assert calls[-1].data["state"] == "succeeded" and calls[-1].data["exit_code"] == 0
    assert 3 <= len(calls) <= 5, f"five 1 s steps need three to five 2.5 s calls, took {len(calls)}: {calls}"
    for call in calls[:-1]:
        assert call.data["state"] == "paused" and "budget reached" in call.data["reason"], call
    assert all(c.elapsed < 2.5 + CLIENT_SLACK for c in calls), [round(c.elapsed, 3) for c in calls]
    assert lines(log) == ["s1", "s2", "s3", "s4", "s5"], "each step executed exactly once, in order"
    assert [s["attempts"] for s in calls[-1].data["steps"]] == [1, 1, 1, 1, 1]


RUNBOOKS = {
    "restart-service.yaml": """
        name: restart-service
        description: |
          Restart a unit on one host.
          Second line of the description.
        params:
          host: {type: string, description: Host to act on}
          service: {type: string, pattern: '^[a-zA-Z0-9@._-]+$'}
          count: {type: integer, minimum: 1, maximum: 5, default: 1}
          mode: {type: string, enum: [soft, hard], default: soft}
          dry: {type: boolean, default: false}
          tags: {type: array, items: string, default: []}
          token: {type: string, secret: true, default: "env:TOKEN"}
        steps:
          - {id: noop, shell: [echo, "{{ params.host }}"]}
    """,
    "no-params.yaml": """
        name: no-params
        steps:
          - {id: noop, shell: [echo, hi]}
    """,
}


def test_tool_list_and_input_schemas_match_runbook_list_json(project: Project, mcp_server: MCPServerProcess) -> None:
    """start_run names the runbooks in an enum; list_runbooks and describe_runbook give each one's params JSON Schema."""
    for name, text in RUNBOOKS.items():
        project.write(name, text)
    listed = project.run("list", "--json")
    assert listed.code == 0, listed
    catalog = listed.json()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_server.connect() as agent:
            got["tools"] = await agent.tools()
            got["listing"] = await agent.call("list_runbooks")
            got["described"] = await agent.call("describe_runbook", {"name": "restart-service"})

    anyio.run(scenario)
    tools = got["tools"]
    by_name = {rb["name"]: rb for rb in catalog["runbooks"]}
    assert tools["start_run"].input_schema["properties"]["runbook"]["enum"] == sorted(by_name)
    assert got["described"].data["params_schema"] == by_name["restart-service"]["params_schema"]
    assert got["listing"].data == catalog, "list_runbooks returns the `runbook list --json` document"
    expected = {"list_runbooks", "describe_runbook", "plan_run", "start_run", "resume_run", "get_run", "list_runs",
                "read_events", "read_logs", "pause_run", "cancel_run"}  # fmt: skip
    assert set(tools) == expected, "no approve tool without a policy allowing it"
    assert tools["get_run"].annotations.read_only_hint and not tools["start_run"].annotations.read_only_hint


def test_results_have_the_cli_json_shapes(project: Project, mcp_server: MCPServerProcess) -> None:
    """get_run, list_runs, read_events, plan_run and describe_runbook return what the matching --json commands print."""
    for name, text in RUNBOOKS.items():
        project.write(name, text)
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_server.connect(env={"TOKEN": "a-token-value"}) as agent:
            started = await agent.call("start_run", {"runbook": "restart-service", "params": {"host": "web1", "service": "nginx"}})
            rid = started.data["run_id"]
            got["started"] = started
            got["get"] = await agent.call("get_run", {"run_id": rid})
            got["runs"] = await agent.call("list_runs", {"runbook": "restart-service"})
            got["events"] = await agent.call("read_events", {"run_id": rid, "after": 2})
            got["plan"] = await agent.call("plan_run", {"runbook": "restart-service", "params": {"host": "h", "service": "s"}})
            got["show"] = await agent.call("describe_runbook", {"name": "no-params"})

    anyio.run(scenario)
    for key, call in got.items():
        assert not call.is_error, (key, call)
    rid = got["started"].data["run_id"]
    assert got["started"].data["state"] == "succeeded" and got["started"].data["started_by"] == "agent:tester"
    assert got["started"].data["notices"] == []
    assert got["get"].data == project.run("status", rid, "--json").json()
    assert got["runs"].data == project.run("runs", "--runbook", "restart-service", "--json").json()
    assert got["events"].data == project.run("events", rid, "--after", "2", "--json").json()
    assert got["events"].data["events"][0]["seq"] == 3
    plan = project.run("plan", "restart-service", "-p", "host=h", "-p", "service=s", "--json", env={"TOKEN": "a-token-value"}).json()
    assert got["plan"].data == plan and plan["problems"] == [], "the same plan, its secrets resolved as the server's"
    assert got["show"].data == project.run("show", "no-params", "--json").json()


def test_errors_are_tool_errors_with_clear_messages(project: Project, mcp_server: MCPServerProcess) -> None:
    for name, text in RUNBOOKS.items():
        project.write(name, text)
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_server.connect() as agent:
            got["unknown runbook"] = await agent.call("start_run", {"runbook": "nope"})
            got["bad params"] = await agent.call("start_run", {"runbook": "restart-service",
                                                               "params": {"host": "web1", "service": "x; rm -rf /", "count": 9}})  # fmt: skip
            got["unknown arg"] = await agent.call("get_run", {"run_id": "01ABCDEF", "extra": 1})
            got["no such run"] = await agent.call("get_run", {"run_id": "01ABCDEFGH"})
            got["bad budget"] = await agent.call("start_run", {"runbook": "no-params", "budget": "soon"})

    anyio.run(scenario)
    expect = {
        "unknown runbook": "no runbook named 'nope'",
        "bad params": "invalid params for runbook 'restart-service'",
        "unknown arg": "unknown argument 'extra'",
        "no such run": "no run with id '01ABCDEFGH'",
        "bad budget": "budget: expected a duration",
    }
    for key, text in expect.items():
        call = got[key]
        assert call.is_error and text in call.text, (key, call)
        assert "Traceback" not in call.text and call.data["error"]["message"], (key, call)
    assert got["bad params"].data["error"]["type"] == "ParamsError" and got["bad params"].data["error"]["exit_code"] == 2
    assert "count" in got["bad params"].text and "service" in got["bad params"].text


def test_a_call_returns_by_its_budget_even_when_a_step_declares_no_duration(project: Project, mcp_server: MCPServerProcess) -> None:
    """A step without timeout/expected runs in a detached executor; the call returns on time (next: resume) and the run
    pauses after that step, which runs once and is never cut short when the MCP session ends."""
    log = project.root / "slow.log"
    project.write(
        "slow.yaml",
        f"""
        name: slow
        steps:
          - {{id: slow, shell: {{script: "sleep 6; echo slow >> {log}"}}}}
          - {{id: after, shell: {{script: "echo after >> {log}"}}}}
    """,
    )
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_server.connect() as agent:
            first = got["first"] = await agent.call("start_run", {"runbook": "slow", "budget": 3})
            rid = first.data["run_id"]
            view = await _poll(agent, rid, lambda v: v["state"] != "running")
            got["settled"] = view
            got["last"] = await agent.call("resume_run", {"run_id": rid, "budget": 5})

    anyio.run(scenario)
    first = got["first"]
    assert not first.is_error, first
    assert first.elapsed < 3 + CLIENT_SLACK, first
    assert first.data["state"] == "running" and first.data["next"]["action"] == "resume", dump(first.data)
    assert "detached executor" in first.data["next"]["reason"], dump(first.data)
    assert got["settled"]["state"] == "paused" and got["settled"]["next"]["step"] == "after", dump(got["settled"])
    assert got["last"].data["state"] == "succeeded", got["last"]
    assert lines(log) == ["slow", "after"]


def test_a_client_that_goes_away_leaves_its_run_paused_at_a_step_boundary(project: Project, mcp_server: MCPServerProcess) -> None:
    log = project.root / "steps.log"
    project.write("five.yaml", five_steps(log))

    async def scenario() -> None:
        async with mcp_server.connect("--budget", "30s") as agent:
            with anyio.move_on_after(1.5):  # the agent's own time runs out mid-call; it disconnects
                await agent.call("start_run", {"runbook": "five"})

    anyio.run(scenario)
    runs = project.run("runs", "--json").json()["runs"]
    assert len(runs) == 1 and runs[0]["state"] == "paused", runs
    done = project.run("resume", runs[0]["run_id"], "--json")
    assert done.code == 0, done
    assert lines(log) == ["s1", "s2", "s3", "s4", "s5"], "nothing lost, nothing run twice"


async def _poll(agent: Agent, run_id: str, done: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = (await agent.call("get_run", {"run_id": run_id})).data
        if done(view):
            return view
        await anyio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not settle within {timeout}s")


def test_without_the_mcp_sdk_the_command_says_which_extra_to_install(project: Project, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    (blocked / "mcp").mkdir(parents=True)
    (blocked / "mcp" / "__init__.py").write_text("raise ImportError('mcp is not installed here')\n")
    result = project.run("mcp", env={"PYTHONPATH": str(blocked)})
    assert result.code == 2, result
    assert "`runbook mcp` needs the 'mcp' package, which is not installed" in result.err
    assert "pip install 'runbook[agent]'" in result.err and "Traceback" not in result.err
