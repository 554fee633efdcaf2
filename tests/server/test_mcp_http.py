"""MCP over Streamable HTTP at ``/mcp`` of a real ``runbook serve``, through the SDK's own HTTP client: tokens,
scopes and the agent policy as on ``/v1``, several sessions driving one run, resumable streams, browser guards;
every server message checked against the spec's schema."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from tests.agents.mcpkit import Capture, connect_http, validate_capture
from tests.conftest import Project, require
from tests.server.serverkit import ServerProcess

AGENT, READER = "test-mcp-agent-token-1234567", "test-mcp-reader-token-7654321"
CONFIG = """
tokens:
  - {name: bot, token: env:RB_AGENT, scopes: [agent]}
  - {name: reader, token: env:RB_READER, scopes: [read, run]}
agent_policy: POLICY
"""
POLICY = """
deny: ["db-*"]
runbooks:
  deploy:
    params:
      env: {values: [staging]}
"""
DEPLOY = """
name: deploy
description: A wait, an approval, then the deploy.
params:
  env: {type: string}
steps:
  - {id: prepare, expected: 1s, shell: {script: "echo prepare >> LOG"}}
  - {id: settle, wait: {for: 4s}}
  - {id: sign-off, approval: {message: "deploy to {{ params.env }}?"}}
  - {id: deploy, expected: 1s, shell: {script: "echo deploy >> LOG"}}
"""


@pytest.fixture
def mcp_serve(project: Project, serve: Callable[..., ServerProcess]) -> ServerProcess:
    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK (pip install 'runbook[agent]')")
    log = project.root / "deploy.log"
    project.write("deploy.yaml", DEPLOY.replace("LOG", str(log)))
    project.write("db-migrate.yaml", "name: db-migrate\nsteps:\n  - {id: x, shell: [true]}\n")
    policy = project.root / "policy.yaml"
    policy.write_text(POLICY)
    return serve(CONFIG.replace("POLICY", str(policy)), env={"RB_AGENT": AGENT, "RB_READER": READER}, workers=0)


def test_an_agent_token_drives_a_wait_and_an_approval_to_success_over_several_sessions(project: Project, mcp_serve: ServerProcess) -> None:
    """must-show 1: one MCP session per wake-up (initialize + calls), the run goes on across them; a person's
    approval only records; the agent resumes; each step once."""
    url = f"{mcp_serve.url}/mcp"
    captures: list[Capture] = []
    views: list[dict[str, Any]] = []

    async def wake(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        capture = Capture()
        captures.append(capture)
        async with connect_http(url, AGENT, capture=capture) as agent:
            await agent.tools()
            result = await agent.call(tool, args)
            assert not result.is_error, result
            views.append(result.data)
            return result.data  # type: ignore[no-any-return]

    async def scenario() -> None:
        view = await wake("start_run", {"runbook": "deploy", "params": {"env": "staging"}, "budget": "3s", "idempotency_key": "k1"})
        again = await wake("start_run", {"runbook": "deploy", "params": {"env": "staging"}, "budget": "3s", "idempotency_key": "k1"})
        assert again["run_id"] == view["run_id"], "a repeated key is the same run"
        rid = view["run_id"]
        for _ in range(40):
            if view["next"]["action"] == "none":
                break
            if view["next"]["action"] == "await_approval":  # a person approves (it only records)
                approved = project.run("approve", rid, "--by", "pat", "--json")
                assert approved.code == 0, approved
            await anyio.sleep(0.5)
            view = await wake("resume_run", {"run_id": rid, "budget": "3s"})
        assert view["state"] == "succeeded", json.dumps(view)[:2000]

    anyio.run(scenario)
    actions = [v["next"]["action"] for v in views]
    assert "wait" in actions and "await_approval" in actions and actions[-1] == "none", actions
    assert (project.root / "deploy.log").read_text().split() == ["prepare", "deploy"], "each step once"
    assert views[-1]["started_by"] == "bot"
    assert len(captures) >= 4, "several sessions"


def test_scope_policy_and_browser_guards(project: Project, mcp_serve: ServerProcess) -> None:
    """must-show 1: no token 401, a token without the agent scope 403; the policy's refusals are tool errors
    naming the rule; a rebound Host or a foreign Origin is refused before MCP sees the request."""
    url = f"{mcp_serve.url}/mcp"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}  # fmt: skip
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with httpx.Client(trust_env=False, timeout=30) as http:
        assert http.post(url, json=init, headers=accept).status_code == 401
        refused = http.post(url, json=init, headers={**accept, "Authorization": f"Bearer {READER}"})
        assert refused.status_code == 403 and "lacks the 'agent' scope" in refused.json()["error"]["message"], refused.text
        rebound = http.post(url, json=init, headers={**accept, "Authorization": f"Bearer {AGENT}", "Host": "evil.example"})
        assert rebound.status_code == 400 and rebound.json()["error"]["type"] == "InvalidHost"
        foreign = http.post(url, json=init, headers={**accept, "Authorization": f"Bearer {AGENT}", "Origin": "https://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["error"]["type"] == "ForbiddenOrigin"
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_http(url, AGENT, capture=capture) as agent:
            got["tools"] = await agent.tools()
            got["denied"] = await agent.call("start_run", {"runbook": "db-migrate"})
            got["value"] = await agent.call("start_run", {"runbook": "deploy", "params": {"env": "prod"}})

    anyio.run(scenario)
    assert got["tools"]["start_run"].input_schema["properties"]["runbook"]["enum"] == ["deploy"], "only what the policy allows"
    for key, rule in (("denied", "deny pattern 'db-*'"), ("value", "param 'env' = 'prod' is not allowed")):
        call = got[key]
        assert call.is_error and call.data["error"]["type"] == "PolicyDenied" and rule in call.data["error"]["message"], call


def test_a_session_is_bound_to_its_token_and_its_streams_resume(project: Project, mcp_serve: ServerProcess) -> None:
    """A session answers only the token that opened it; an SSE response stream cut mid-call is resumed with
    Last-Event-ID (the event store) and delivers the progress and the result."""
    url = f"{mcp_serve.url}/mcp"
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", "Authorization": f"Bearer {AGENT}"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}  # fmt: skip
    with httpx.Client(trust_env=False, timeout=30) as http:
        opened = http.post(url, json=init, headers=headers)
        assert opened.status_code == 200, opened.text
        sid = opened.headers["mcp-session-id"]
        capture = Capture(received=_sse(opened.text), requests={1: "initialize", 2: "tools/call", 4: "tools/list"}, calls={2: "start_run"})
        capture.version = capture.received[0]["result"]["protocolVersion"]
        session = {**headers, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "start_run", "_meta": {"progressToken": "p"},
                "arguments": {"runbook": "deploy", "params": {"env": "staging"}, "budget": "1.5s"}}}  # fmt: skip
        last = None
        with http.stream("POST", url, json=call, headers=session) as stream:
            for line in stream.iter_lines():
                if line.startswith("id:"):
                    last = line[3:].strip()
                    break  # cut the stream after the priming event
        assert last is not None
        other = {**session, "Authorization": f"Bearer {READER}"}
        assert http.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=other).status_code == 403
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not any("result" in e for e in events) and time.monotonic() < deadline:
            with http.stream("GET", url, headers={**session, "Last-Event-ID": last}) as resumed:
                assert resumed.status_code == 200
                for line in resumed.iter_lines():
                    if line.startswith("id:"):
                        last = line[3:].strip()
                    elif line.startswith("data:") and line[5:].strip():
                        events.append(json.loads(line[5:]))
                        if "result" in events[-1]:
                            break
        listed = http.post(url, json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, headers=session)
        assert listed.status_code == 200, listed.text
        capture.received += [*events, *_sse(listed.text)]
        assert http.delete(url, headers=session).status_code in (200, 204)
    assert validate_capture(capture) >= 4, "the raw messages validate against the spec's schema too"
    result = next(e for e in events if "result" in e)
    assert result["id"] == 2 and result["result"]["structuredContent"]["runbook"] == "deploy", result
    assert [e["params"]["progressToken"] for e in events if e.get("method") == "notifications/progress"] == ["p"], events


def _sse(body: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response body: a JSON document or the data lines of an SSE stream."""
    if body.lstrip().startswith("{"):
        return [json.loads(body)]
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:") and line[5:].strip()]


def test_a_policy_edit_sends_tools_list_changed_over_http(project: Project, mcp_serve: ServerProcess) -> None:
    """The live policy: an edit applies on the next call and open sessions hear tools/list_changed."""
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_http(f"{mcp_serve.url}/mcp", AGENT, capture=capture) as agent:
            got["before"] = await agent.tools()
            (project.root / "policy.yaml").write_text(POLICY.replace('deny: ["db-*"]', 'deny: ["db-*", "deploy"]'))
            deadline = time.monotonic() + 15
            while not capture.notifications("notifications/tools/list_changed"):
                assert time.monotonic() < deadline, "no tools/list_changed after the policy edit"
                await anyio.sleep(0.05)
            got["after"] = await agent.tools()
            got["refused"] = await agent.call("start_run", {"runbook": "deploy", "params": {"env": "staging"}})

    anyio.run(scenario)
    enum = "enum"
    assert got["before"]["start_run"].input_schema["properties"]["runbook"][enum] == ["deploy"]
    assert enum not in got["after"]["start_run"].input_schema["properties"]["runbook"], "nothing left to start"
    assert got["refused"].is_error and "'deploy' is denied to agents" in got["refused"].data["error"]["message"]


HELLO = "name: hello\ndescription: Added while the server runs.\nsteps:\n  - {id: hi, expected: 1s, shell: {script: 'echo hi >> LOG'}}\n"


def test_a_runbook_file_added_while_serving_is_served_and_announced(project: Project, mcp_serve: ServerProcess) -> None:
    """build 3 over HTTP: a runbook file added to the folder of a running server is served on /mcp and /v1 without a
    restart and an open MCP session hears tools/list_changed; one removed is gone from both."""
    log = project.root / "hello.log"
    capture = Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_http(f"{mcp_serve.url}/mcp", AGENT, capture=capture) as agent:
            got["before"] = await agent.tools()
            project.write("hello.yaml", HELLO.replace("LOG", str(log)))
            deadline = time.monotonic() + 15
            while not capture.notifications("notifications/tools/list_changed"):
                assert time.monotonic() < deadline, "no tools/list_changed after a runbook file was added"
                await anyio.sleep(0.05)
            got["after"] = await agent.tools()
            got["ran"] = await agent.call("start_run", {"runbook": "hello", "budget": "20s"})
            got["resource"] = json.loads((await agent.session.read_resource("runbook://runbooks/hello")).contents[0].text)

    anyio.run(scenario)
    enum = [got[k]["start_run"].input_schema["properties"]["runbook"]["enum"] for k in ("before", "after")]
    assert enum == [["deploy"], ["deploy", "hello"]], enum
    assert not got["ran"].is_error and got["ran"].data["state"] == "succeeded", got["ran"]
    assert log.read_text().split() == ["hi"] and got["resource"]["description"] == "Added while the server runs."
    reader = mcp_serve.client(READER)
    assert "hello" in [rb["name"] for rb in reader.get("/v1/runbooks").json()["runbooks"]], "/v1 serves the same catalog"
    (project.runbooks / "hello.yaml").unlink()
    deadline = time.monotonic() + 15
    while reader.get("/v1/runbooks/hello").status_code != 404:
        assert time.monotonic() < deadline, "a removed runbook file is still served"
        time.sleep(0.1)
    assert "hello" not in [rb["name"] for rb in reader.get("/v1/runbooks").json()["runbooks"]]
    refused = reader.post("/v1/runs", json={"runbook": "hello"})
    assert refused.status_code == 404 and "no runbook named 'hello'" in refused.json()["error"]["message"], refused.text


SLOW = """
name: slow
description: Three steps, each longer than a short budget.
steps:
  - {id: one, expected: STEP, shell: {script: "sleep SLEEP; echo one >> LOG"}}
  - {id: two, expected: STEP, shell: {script: "sleep SLEEP; echo two >> LOG"}}
  - {id: three, expected: STEP, shell: {script: "sleep SLEEP; echo three >> LOG"}}
"""


def test_a_driving_call_keeps_its_run_from_the_servers_workers(project: Project, serve: Callable[..., ServerProcess]) -> None:
    """A run start_run creates over HTTP is held by the call, not queued for the server's idle workers: a budget
    shorter than the first step leaves it paused for a hand-over (no step runs, no worker takes it); a budget that
    fits drives it to the end in the call, with a progress notification per step boundary."""
    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK (pip install 'runbook[agent]')")
    log = project.root / "slow.log"
    project.write("slow.yaml", SLOW.replace("STEP", "3s").replace("SLEEP", "2").replace("LOG", str(log)))
    project.write("quick.yaml", SLOW.replace("slow", "quick").replace("STEP", "1s").replace("SLEEP", "0.1").replace("LOG", str(log)))
    server = serve("tokens:\n  - {name: bot, token: env:RB_AGENT, scopes: [agent]}\n", env={"RB_AGENT": AGENT}, workers=2)
    short: list[Any] = []
    full: list[tuple[Any, list[float]]] = []

    async def scenario() -> None:
        async with connect_http(f"{server.url}/mcp", AGENT) as agent:
            for _ in range(4):
                short.append(await agent.call("start_run", {"runbook": "slow", "budget": "1s"}))
            for _ in range(4):
                seen: list[float] = []

                async def progress(done: float, total: float | None, message: str | None, seen: list[float] = seen) -> None:
                    seen.append(done)

                full.append((await agent.call("start_run", {"runbook": "quick", "budget": "30s"}, progress=progress), seen))

    anyio.run(scenario)
    for called in short:
        assert not called.is_error and (called.data["state"], called.data["next"]["action"]) == ("paused", "handoff"), called
    for called, seen in full:
        assert not called.is_error and called.data["state"] == "succeeded", called
        assert seen == [1.0, 2.0, 3.0], (seen, called)
    assert log.read_text().split() == ["one", "two", "three"] * 4, "only the quick runs ran, each step once"
    reader = server.client(AGENT)
    for called in short:
        run = reader.get(f"/v1/runs/{called.data['run_id']}").json()
        assert run["state"] == "paused" and all(s["attempts"] == 0 for s in run["steps"]), run


def test_list_runs_fills_its_page_with_the_runs_the_agent_may_read(project: Project, mcp_serve: ServerProcess) -> None:
    """list_runs pages over the runs the agent may read, not over the journal: runs it may not read (a person's, more
    of them than the server reads at a time) neither take a page's places nor end the listing early."""
    reader = mcp_serve.client(READER)

    def person_runs(n: int) -> None:
        for _ in range(n):
            created = reader.post("/v1/runs", json={"runbook": "db-migrate"})
            assert created.status_code in (200, 201, 202), created.text

    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect_http(f"{mcp_serve.url}/mcp", AGENT) as agent:
            older = await agent.call("start_run", {"runbook": "deploy", "params": {"env": "staging"}, "budget": "0.5s"})
            await anyio.to_thread.run_sync(person_runs, 70)
            newer = await agent.call("start_run", {"runbook": "deploy", "params": {"env": "staging"}, "budget": "0.5s"})
            await anyio.to_thread.run_sync(person_runs, 3)
            got["ids"] = [older.data["run_id"], newer.data["run_id"]]
            got["first"] = (await agent.call("list_runs", {"limit": 1})).data
            got["second"] = (await agent.call("list_runs", {"limit": 1, "before": got["first"]["next_before"]})).data
            got["all"] = (await agent.call("list_runs", {"limit": 5})).data

    anyio.run(scenario)
    older, newer = got["ids"]
    assert [r["run_id"] for r in got["first"]["runs"]] == [newer] and got["first"]["next_before"] == newer, got["first"]
    assert [r["run_id"] for r in got["second"]["runs"]] == [older] and got["second"]["next_before"] is None, got["second"]
    assert [r["run_id"] for r in got["all"]["runs"]] == [newer, older] and got["all"]["next_before"] is None, got["all"]
    assert len(reader.get("/v1/runs", params={"limit": 100}).json()["runs"]) == 75, "the person's runs are in the journal"


def test_a_session_hears_of_a_new_runbook_from_its_start_and_the_prompt_needs_its_runbook(
    project: Project, mcp_serve: ServerProcess
) -> None:
    """A session is watched from its initialization, whatever it asked (nothing, or only the prompts): a runbook file
    added sends it tools/list_changed and resources/list_changed. prompts/get without the required ``runbook``
    argument is a JSON-RPC invalid-params error, not a prompt with a placeholder."""
    from mcp.shared.exceptions import MCPError

    idle, prompted = Capture(), Capture()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with (
            connect_http(f"{mcp_serve.url}/mcp", AGENT, capture=idle),
            connect_http(f"{mcp_serve.url}/mcp", AGENT, capture=prompted) as agent,
        ):
            got["prompts"] = [p.name for p in (await agent.session.list_prompts()).prompts]
            with pytest.raises(MCPError) as refused:
                await agent.session.get_prompt("operate-runbook", {"params": "{}"})
            got["refused"] = refused.value
            got["given"] = await agent.session.get_prompt("operate-runbook", {"runbook": "deploy"})
            project.write("hello.yaml", HELLO.replace("LOG", str(project.root / "hello.log")))
            deadline = time.monotonic() + 15
            methods = ("notifications/tools/list_changed", "notifications/resources/list_changed")
            while not all(c.notifications(m) for c in (idle, prompted) for m in methods):
                assert time.monotonic() < deadline, [[m.get("method") for m in c.received] for c in (idle, prompted)]
                await anyio.sleep(0.05)

    anyio.run(scenario)
    assert got["prompts"] == ["operate-runbook"]
    assert got["refused"].code == -32602 and "'runbook'" in got["refused"].message, got["refused"]
    assert "deploy" in got["given"].messages[0].content.text


def test_a_cancelled_start_run_pauses_its_run_at_the_next_boundary_with_workers_idle(
    project: Project, serve: Callable[..., ServerProcess]
) -> None:
    """With idle workers, a start_run call still drives its run until cancelled: the cancel pauses it after the step in
    flight, as the agent, and no worker takes it over (the steps after it never run)."""
    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK (pip install 'runbook[agent]')")
    log = project.root / "slow.log"
    project.write("slow.yaml", SLOW.replace("STEP", "3s").replace("SLEEP", "1").replace("LOG", str(log)))
    server = serve("tokens:\n  - {name: bot, token: env:RB_AGENT, scopes: [agent]}\n", env={"RB_AGENT": AGENT}, workers=2)
    http = server.client(AGENT)
    got: dict[str, Any] = {}

    def step_one_running() -> bool:
        runs = http.get("/v1/runs").json()["runs"]
        if not runs:
            return False
        got["run_id"] = runs[0]["run_id"]
        return bool(http.get(f"/v1/runs/{runs[0]['run_id']}").json()["steps"][0]["state"] == "running")

    async def scenario() -> None:
        async with connect_http(f"{server.url}/mcp", AGENT) as agent:
            scope = anyio.CancelScope()

            async def call() -> None:
                with scope:
                    got["returned"] = await agent.call("start_run", {"runbook": "slow", "budget": "30s"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                with anyio.fail_after(30):
                    while not await anyio.to_thread.run_sync(step_one_running):
                        await anyio.sleep(0.05)
                scope.cancel()
            with anyio.fail_after(30):
                while (view := (await agent.call("get_run", {"run_id": got["run_id"]})).data)["state"] == "running":
                    await anyio.sleep(0.1)
            got["paused"] = view

    anyio.run(scenario)
    assert "returned" not in got, f"the call returned before it was cancelled: {got['returned']}"
    paused = got["paused"]
    assert paused["state"] == "paused" and [s["state"] for s in paused["steps"]] == ["succeeded", "pending", "pending"], paused
    events = http.get(f"/v1/runs/{got['run_id']}/events").json()["events"]
    assert any(e["type"] == "request.pause" and e["actor"] == "bot" for e in events), events
    assert log.read_text().split() == ["one"], "no worker ran the steps after the cancel"
