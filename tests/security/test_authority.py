"""One authority check for every action by every principal (issue 17, must-shows 1, 2 and 6).

An agent — on the CLI (``--as-agent``), through the Python API (``Client(agent=True)``), over HTTP (an ``agent``
token) and over MCP — cannot resume, retry, decide, cancel or read a run of a runbook its policy denies, cannot run
a denied runbook, a forbidden param value or an ungated gated step through any depth of sub-runbooks; every refusal
names the rule. A policy edit applies on the next call of a running ``runbook serve`` and ``runbook mcp``. A stale
executor (SIGSTOPped past its lease, taken over) never starts another action.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import Project, require
from tests.server.serverkit import start_server

POLICY = """
allow: ["*"]
deny: ["db-*"]
runbooks:
  "restart-*":
    params:
      count: {minimum: 1, maximum: 3}
  gated-child:
    require_approval: [act]
"""

RUNBOOKS = {
    "db-migrate.yaml": "name: db-migrate\nsteps:\n  - {id: a, shell: [sh, -c, 'echo db >> LOG']}\n  - {id: b, shell: ['false']}\n",
    "wrapper.yaml": "name: wrapper\nsteps:\n  - id: inner\n    runbook: {name: db-migrate}\n",
    "deeper.yaml": "name: deeper\nsteps:\n  - id: mid\n    runbook: {name: wrapper}\n",
    "restart-x.yaml": "name: restart-x\nparams: {count: {type: integer}}\nsteps:\n  - {id: go, shell: [sh, -c, 'echo restart >> LOG']}\n",
    "passes.yaml": "name: passes\nparams: {count: {type: integer}}\nsteps:\n  - id: call\n    runbook: {name: restart-x, params: {count: '{{ params.count }}'}}\n",
    "gated-child.yaml": "name: gated-child\nsteps:\n  - {id: act, shell: [sh, -c, 'echo gated >> LOG']}\n",
    "gates.yaml": "name: gates\nsteps:\n  - id: child\n    runbook: {name: gated-child}\n",
    "mine.yaml": "name: mine\nsteps:\n  - id: gate\n    approval: {message: ok?}\n",
}


@pytest.fixture
def world(project: Project) -> tuple[Project, Path, Path]:
    log = project.root / "effects.log"
    for name, text in RUNBOOKS.items():
        project.write(name, text.replace("LOG", str(log)))
    policy = project.root / "policy.yaml"
    policy.write_text(POLICY)
    return project, policy, log


def _effects(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_an_agent_cannot_steer_or_read_a_persons_run_of_a_denied_runbook_on_the_cli_and_api(world: Any) -> None:
    from runner.api import Client
    from runner.errors import PolicyDenied

    project, policy, log = world
    person = project.run("run", "db-migrate", "--json")
    assert person.code == 1, person
    rid = person.json()["run_id"]
    agent = ["--as-agent", "--policy", str(policy), "--json"]
    for args in (("resume", rid, "--retry"), ("retry", rid), ("decide", rid, "--retry-step", "b"), ("cancel", rid), ("pause", rid)):
        res = project.run(*args, *agent)
        assert res.code == 2, (args, res)
        error = res.json()["error"]
        assert error["type"] == "PolicyDenied" and "deny pattern 'db-*'" in error["message"] and str(policy) in error["message"], error
    with Client(project_dir=project.root, agent=True, policy=str(policy)) as client:
        for call in (lambda: client.resume(rid, retry=True), lambda: client.retry(rid), lambda: client.cancel(rid),
                     lambda: client.decide(rid, retry_step="b"), lambda: client.status(rid), lambda: client.events(rid),
                     lambda: client.logs(rid)):  # fmt: skip
            with pytest.raises(PolicyDenied, match=r"agents_may_read|deny pattern"):
                call()
    assert _effects(log) == ["db"], "no step of the person's run ran again"
    assert project.run("status", rid, "--json").json()["state"] == "failed"


def test_an_agent_acts_on_its_own_runs_but_not_on_others_without_a_grant(world: Any) -> None:
    project, policy, _ = world
    own = project.run("run", "mine", "--as-agent", "--policy", str(policy), "--json").json()["run_id"]
    theirs = project.run("run", "mine", "--json").json()["run_id"]
    agent = ["--as-agent", "--policy", str(policy), "--json"]
    assert project.run("pause", own, *agent).code == 0
    refused = project.run("pause", theirs, *agent)
    assert refused.code == 2 and "agents_may_steer" in refused.json()["error"]["message"], refused
    policy.write_text(POLICY + "  mine:\n    agents_may_steer: true\n")  # the edit applies to the next call
    assert project.run("pause", theirs, *agent).code == 0


def test_sub_runbooks_never_escape_the_policy(world: Any) -> None:
    project, policy, log = world
    agent = ["--as-agent", "--policy", str(policy), "--json"]
    for name in ("wrapper", "deeper"):  # a denied runbook, called through one and two levels of allowed ones
        res = project.run("run", name, *agent)
        assert res.code == 1, res
        assert "runbook 'db-migrate' is denied to agents (deny pattern 'db-*' in" in res.json()["reason"], res.json()["reason"]
    passed = project.run("run", "passes", "-p", "count=99", *agent)  # a forbidden value passed through a wrapper
    assert passed.code == 1 and "param 'count' = 99 is not allowed" in passed.json()["reason"], passed.json()["reason"]
    gated = project.run("run", "gates", *agent)  # a policy-gated step inside a child waits for a person
    assert gated.code == 4 and gated.json()["next"]["action"] == "await_approval", gated
    assert _effects(log) == [], "nothing the policy forbids ran"
    assert project.run("approve", gated.json()["run_id"], "--by", "pat").code == 0
    assert project.run("resume", gated.json()["run_id"], "--json").code == 0
    assert _effects(log) == ["gated"]
    children = [r for r in project.run("runs", "--json").json()["runs"] if r["parent_run_id"]]
    assert children and all(r["started_by"] == "tester" for r in children)


def test_http_agent_tokens_and_a_live_policy_edit(world: Any, tmp_path: Path) -> None:
    project, policy, log = world
    require(importlib.util.find_spec("fastapi") is not None, "fastapi")
    config = f"""
    agent_policy: {policy}
    tokens:
      - {{name: bot, token: env:BOT_TOKEN, scopes: [agent]}}
      - {{name: ops, token: env:OPS_TOKEN, scopes: [admin]}}
    """
    env = {"BOT_TOKEN": "bot-token-0123456789", "OPS_TOKEN": "ops-token-0123456789"}
    server = start_server(project, config, workers=1, env=env)
    try:
        ops, bot = server.client(env["OPS_TOKEN"]), server.client(env["BOT_TOKEN"])
        person = ops.post("/v1/runs", json={"runbook": "db-migrate", "wait": 20}).json()
        rid = person["run_id"]
        for method, path, body in (("post", f"/v1/runs/{rid}/resume", {"retry": True}), ("post", f"/v1/runs/{rid}/retry", {}),
                                   ("post", f"/v1/runs/{rid}/cancel", {}), ("post", f"/v1/runs/{rid}/decide", {"retry_step": "b"}),
                                   ("get", f"/v1/runs/{rid}", None), ("get", f"/v1/runs/{rid}/events", None),
                                   ("get", f"/v1/runs/{rid}/logs", None)):  # fmt: skip
            r = getattr(bot, method)(path, **({"json": body} if body is not None else {}))
            assert r.status_code == 403, (path, r.status_code, r.text)
            assert "db-*" in r.json()["error"]["message"] or "agents_may_read" in r.json()["error"]["message"], r.text
        assert rid not in [row["run_id"] for row in bot.get("/v1/runs").json()["runs"]], "an agent lists only what it may read"
        assert bot.post("/v1/runs", json={"runbook": "mine"}).status_code == 201
        policy.write_text(POLICY.replace('deny: ["db-*"]', 'deny: ["db-*", "mine"]'))  # the edit applies to the next request
        refused = bot.post("/v1/runs", json={"runbook": "mine"})
        assert refused.status_code == 403 and "'mine'" in refused.json()["error"]["message"], refused.text
    finally:
        server.stop()
    assert _effects(log) == ["db"]


def test_a_policy_edit_applies_to_the_next_call_of_a_running_mcp_server(world: Any) -> None:
    from tests.agents.agentkit import MCPServerProcess

    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK")
    project, policy, _ = world
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with MCPServerProcess(project).connect("--policy", str(policy)) as agent:
            got["before"] = await agent.call("start_run", {"runbook": "mine", "budget": 5})
            policy.write_text(POLICY.replace('deny: ["db-*"]', 'deny: ["db-*", "mine"]'))
            got["after"] = await agent.call("start_run", {"runbook": "mine", "budget": 5})
            got["tools"] = await agent.tools()

    anyio.run(scenario)
    assert not got["before"].is_error, got["before"]
    assert got["after"].is_error and "'mine' is denied to agents" in got["after"].text, got["after"]
    assert "mine" not in got["tools"]["start_run"].input_schema["properties"]["runbook"].get("enum", [])


def test_an_mcp_agent_cannot_steer_or_read_a_persons_run_of_a_denied_runbook(world: Any) -> None:
    """must-show 1 over MCP (stdio): every tool on a person's run of a denied runbook is a tool error naming the rule,
    and so are reading and subscribing to its resources; ``agents_may_read`` opens reading only."""
    from mcp.shared.exceptions import MCPError

    from tests.agents.agentkit import MCPServerProcess

    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK")
    project, policy, log = world
    person = project.run("run", "db-migrate", "--json")
    assert person.code == 1, person
    rid = person.json()["run_id"]
    calls = {"resume_run": {"run_id": rid, "retry": True}, "cancel_run": {"run_id": rid}, "pause_run": {"run_id": rid},
             "get_run": {"run_id": rid}, "read_events": {"run_id": rid}, "read_logs": {"run_id": rid}}  # fmt: skip
    uris = [f"runbook://runs/{rid}", f"runbook://runs/{rid}/logs/a"]
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with MCPServerProcess(project).connect("--policy", str(policy)) as agent:
            got["tools"] = {name: await agent.call(name, args) for name, args in calls.items()}
            got["resources"] = []
            for uri in uris:
                with pytest.raises(MCPError) as refused:
                    await agent.session.read_resource(uri)
                got["resources"].append(refused.value)
            with pytest.raises(MCPError) as refused:
                await _subscribe(agent.session, uris[0])
            got["resources"].append(refused.value)
            policy.write_text(POLICY + "  db-migrate:\n    agents_may_read: true\n")  # a grant to read, not to steer
            got["granted"] = json.loads((await agent.session.read_resource(uris[0])).contents[0].text)
            got["read"] = await agent.call("get_run", {"run_id": rid})
            got["steer"] = await agent.call("resume_run", {"run_id": rid, "retry": True})

    anyio.run(scenario)
    for name, call in got["tools"].items():  # steering names the deny rule; reading the missing grant
        rule = "agents_may_read" if name in ("get_run", "read_events", "read_logs") else "deny pattern 'db-*'"
        assert call.is_error and call.data["error"]["type"] == "PolicyDenied", (name, call)
        assert rule in call.text and str(policy) in call.text, (name, call.text)
    for error in got["resources"]:
        assert "agents_may_read" in error.error.message and str(policy) in error.error.message, error.error
        assert error.error.data["type"] == "PolicyDenied", error.error
    assert got["granted"]["run_id"] == rid and not got["read"].is_error and got["read"].data["state"] == "failed"
    assert got["steer"].is_error and "deny pattern 'db-*'" in got["steer"].text, got["steer"]
    assert _effects(log) == ["db"], "no step of the person's run ran again"
    assert project.run("status", rid, "--json").json()["state"] == "failed"


async def _subscribe(session: Any, uri: str) -> None:
    import mcp.types as types

    await session.send_request(types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)), types.EmptyResult)


FENCED = """
from pathlib import Path
from runner import Context, Runbook

rb = Runbook("fenced")


@rb.step(idempotent=True)
def two(ctx: Context, p) -> str:
    marks = Path("{root}")
    ctx.shell(["sh", "-c", "echo first >> {root}/marks"])
    (marks / "between").touch()
    while not (marks / "go").exists():
        ctx.sleep(0.05)
    ctx.shell(["sh", "-c", "echo second-$RUNBOOK_RUN_ID >> {root}/marks"])
    return "done"
"""


def test_a_stale_executor_never_starts_another_action(project: Project) -> None:
    """SIGSTOP an executor inside a Python step between two ctx.shell calls past its lease, let another executor take
    the run over and finish it, SIGCONT: the second call never runs in the stale executor."""
    root = project.root
    project.write("fenced.py", FENCED.format(root=root))
    env = {"RUNBOOK_LEASE_TTL": "1"}
    stale = project.popen("run", "fenced", env=env)
    deadline = time.monotonic() + 30
    while not (root / "between").exists():
        assert time.monotonic() < deadline and stale.poll() is None, stale.communicate()
        time.sleep(0.05)
    os.kill(stale.pid, signal.SIGSTOP)
    try:
        time.sleep(2.5)  # past the lease
        (root / "go").touch()
        rid = project.run("runs", "--json").json()["runs"][0]["run_id"]
        took = project.run("resume", rid, "--json", env=env)  # the lease expired: this executor takes over (idempotent step)
        assert took.code == 0 and took.json()["state"] == "succeeded", took
    finally:
        os.kill(stale.pid, signal.SIGCONT)
    out, err = stale.communicate(timeout=60)
    marks = (root / "marks").read_text().split()
    assert marks.count("first") == 2 and len([m for m in marks if m.startswith("second-")]) == 1, marks
    assert stale.returncode != 0, (out, err)
