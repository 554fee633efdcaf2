"""The agent defaults without a policy file, and the agent read rule on every surface (issue 17 item 1, must-show 1).

Without a policy file an agent may start any runbook and act on the runs it started, and nothing else: it may not
approve or deny anything, nor read or steer a run another principal started (``docs/policy.md``). The same engine
decision answers the CLI (``--as-agent``, reads included), ``runner.Client(agent=True)``, HTTP ``/v1`` with an
``agent`` token, MCP and the web console (whose pages apply the ``/v1`` read rule).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import Project, require
from tests.server.serverkit import start_server

GATE = (
    "name: appr\nsteps:\n  - id: gate\n    approval: {message: ok?, approvers: 2}\n  - {id: after, shell: [sh, -c, 'echo after >> LOG']}\n"
)
DB = "name: db-migrate\nsteps:\n  - {id: a, shell: [sh, -c, 'echo migrated-output']}\n"
DEFAULT = "the default agent policy (no policy file is set"


@pytest.fixture
def appr(project: Project) -> tuple[Project, Path]:
    log = project.root / "effects.log"
    project.write("appr.yaml", GATE.replace("LOG", str(log)))
    project.write("db-migrate.yaml", DB)
    return project, log


def _refusal(res: Any, rule: str) -> str:
    assert res.code == 2, res
    error = res.json()["error"]
    assert error["type"] == "PolicyDenied" and rule in error["message"], error
    return str(error["message"])


def _requests(project: Project, rid: str) -> list[str]:
    """The requests (approve, deny, pause, cancel, ...) recorded on a run, read by a person."""
    events = project.run("events", rid, "--json").json()["events"]
    return [e["type"] for e in events if e["type"].startswith("request.")]


def test_without_a_policy_an_agent_on_the_cli_acts_only_on_its_own_runs(appr: tuple[Project, Path]) -> None:
    project, log = appr
    person = project.run("run", "appr", "--json")
    assert person.code == 4 and person.json()["next"]["action"] == "await_approval", person
    rid = person.json()["run_id"]
    agent = ["--as-agent", "--json"]
    for verb in ("approve", "deny"):
        message = _refusal(project.run(verb, rid, "--by", "x", *agent), "agents_may_approve")
        assert DEFAULT in message, message
    for args in (("cancel", rid), ("pause", rid), ("resume", rid), ("step", rid), ("retry", rid), ("decide", rid, "--skip-step", "gate")):
        _refusal(project.run(*args, *agent), "agents_may_steer")
    for args in (("status", rid), ("events", rid), ("logs", rid)):
        _refusal(project.run(*args, *agent), "agents_may_read")
    assert _requests(project, rid) == [], "nothing was recorded on the person's run"
    assert project.run("status", rid, "--json").json()["state"] == "waiting", "the person's run is untouched"

    own = project.run("run", "appr", "--as", "bot", *agent)
    assert own.code == 4, own
    mine = own.json()["run_id"]
    mine_agent = ["--as", "bot", *agent]
    assert project.run("status", mine, *mine_agent).json()["run_id"] == mine
    assert project.run("events", mine, *mine_agent).code == 0
    assert project.run("logs", mine, *mine_agent).code == 0
    _refusal(project.run("approve", mine, "--by", "bot", *agent), "agents_may_approve")  # not even its own gate
    assert project.run("cancel", mine, *mine_agent).json()["state"] == "cancelled"
    assert project.run("approve", rid, "--by", "ann", "--json").code == 0, "a person still approves"
    assert not log.exists()


def test_without_a_policy_the_python_api_agent_acts_only_on_its_own_runs(appr: tuple[Project, Path]) -> None:
    from runner.api import Client
    from runner.errors import PolicyDenied

    project, _ = appr
    rid = project.run("run", "appr", "--json").json()["run_id"]
    with Client(project_dir=project.root, agent=True, actor="bot") as client:
        calls = {"agents_may_approve": [lambda: client.approve(rid), lambda: client.deny(rid)],
                 "agents_may_steer": [lambda: client.cancel(rid), lambda: client.pause(rid), lambda: client.resume(rid)],
                 "agents_may_read": [lambda: client.status(rid), lambda: client.events(rid), lambda: client.logs(rid)]}  # fmt: skip
        for rule, group in calls.items():
            for call in group:
                with pytest.raises(PolicyDenied, match=rule):
                    call()
        mine = client.start("appr").run_id
        assert [r.run_id for r in client.list_runs().runs] == [mine], "an agent lists only the runs it may read"
        assert client.status(mine).state == "waiting"
        with pytest.raises(PolicyDenied, match="agents_may_approve"):
            client.approve(mine)
    assert project.run("status", rid, "--json").json()["state"] == "waiting"
    assert _requests(project, rid) == [], "nothing was recorded on the person's run"


def test_without_agent_policy_an_agent_token_acts_only_on_its_own_runs_over_http(appr: tuple[Project, Path]) -> None:
    require(importlib.util.find_spec("fastapi") is not None, "fastapi")
    project, _ = appr
    config = """
    tokens:
      - {name: bot, token: env:BOT_TOKEN, scopes: [agent]}
      - {name: alice, token: env:ALICE_TOKEN, scopes: [read, run, approve]}
    """
    env = {"BOT_TOKEN": "bot-token-0123456789", "ALICE_TOKEN": "alice-token-0123456789"}
    server = start_server(project, config, workers=1, env=env)
    try:
        alice, bot = server.client(env["ALICE_TOKEN"]), server.client(env["BOT_TOKEN"])
        started = alice.post("/v1/runs", json={"runbook": "appr", "wait": 20})
        assert started.status_code == 201 and started.json()["state"] == "waiting", started.text
        rid = started.json()["run_id"]
        for method, path, rule in (("post", "approve", "agents_may_approve"), ("post", "deny", "agents_may_approve"),
                                   ("post", "cancel", "agents_may_steer"), ("post", "pause", "agents_may_steer"),
                                   ("get", "", "agents_may_read"), ("get", "events", "agents_may_read"),
                                   ("get", "logs", "agents_may_read")):  # fmt: skip
            url = f"/v1/runs/{rid}/{path}".rstrip("/")
            r = bot.post(url, json={}) if method == "post" else bot.get(url)
            assert r.status_code == 403, (url, r.status_code, r.text)
            assert rule in r.json()["error"]["message"] and DEFAULT in r.json()["error"]["message"], r.text
        assert rid not in [row["run_id"] for row in bot.get("/v1/runs").json()["runs"]]
        assert alice.get(f"/v1/runs/{rid}").json()["state"] == "waiting"
        assert not [e for e in alice.get(f"/v1/runs/{rid}/events").json()["events"] if e["type"].startswith("request.")]
        own = bot.post("/v1/runs", json={"runbook": "appr", "wait": 20})
        assert own.status_code == 201, own.text
        mine = own.json()["run_id"]
        assert bot.get(f"/v1/runs/{mine}").status_code == 200
        assert bot.post(f"/v1/runs/{mine}/approve", json={}).status_code == 403
        assert bot.post(f"/v1/runs/{mine}/cancel", json={}).json()["state"] == "cancelled"
    finally:
        server.stop()


def test_without_a_policy_an_mcp_agent_cannot_cancel_or_read_a_persons_run(appr: tuple[Project, Path]) -> None:
    from tests.agents.agentkit import MCPServerProcess

    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK")
    project, _ = appr
    rid = project.run("run", "appr", "--json").json()["run_id"]
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with MCPServerProcess(project).connect() as agent:
            got["cancel"] = await agent.call("cancel_run", {"run_id": rid})
            got["get"] = await agent.call("get_run", {"run_id": rid})

    anyio.run(scenario)
    assert got["cancel"].is_error and "agents_may_steer" in got["cancel"].text, got["cancel"]
    assert got["get"].is_error and "agents_may_read" in got["get"].text, got["get"]
    assert project.run("status", rid, "--json").json()["state"] == "waiting"


# ---------------------------------------------------------------------- the console applies the /v1 read rule

CONSOLE_CONFIG = """
tokens:
  - {name: ops, token: env:K_OPS, scopes: [admin]}
  - {name: bot, token: env:K_BOT, scopes: [agent]}
"""
CONSOLE_ENV = {"K_OPS": "tok-console-ops-1", "K_BOT": "tok-console-bot-2"}
CONSOLE_POLICY = 'deny: ["db-*"]\n'


@pytest.fixture(params=["policy", "no-policy"])
def console(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    require(importlib.util.find_spec("fastapi") is not None, "fastapi")
    from tests.server.consolekit import console_app

    policy = CONSOLE_POLICY if request.param == "policy" else None
    runbooks = {"db-migrate.yaml": DB, "appr.yaml": GATE.replace("LOG", str(tmp_path / "effects.log"))}
    with console_app(tmp_path, runbooks, CONSOLE_CONFIG, CONSOLE_ENV, monkeypatch, policy=policy) as app:
        yield app


@pytest.mark.parametrize("via", ["cookie", "bearer"])
def test_the_console_shows_an_agent_token_only_the_runs_it_may_read(console: Any, via: str) -> None:
    person = console.start("db-migrate", by="alice")
    waiting = console.start("appr", by="alice")
    own = console.state.agent_engine.start("appr", {}, started_by="bot", agent=True, principal=_bot())
    if via == "cookie":
        bot = console.client(CONSOLE_ENV["K_BOT"])
    else:
        bot = console.client()
        bot.headers["Authorization"] = f"Bearer {CONSOLE_ENV['K_BOT']}"
    for rid in (person, waiting):
        for path in (f"/runs/{rid}", f"/runs/{rid}/live", f"/runs/{rid}/steps/{'a' if rid == person else 'gate'}",
                     f"/runs/{rid}/events"):  # fmt: skip
            r = bot.get(path)
            assert r.status_code == 403 and "agents_may_read" in r.text, (path, r.status_code, r.text[:500])
            assert "migrated-output" not in r.text
    for path in ("/runs", "/", "/runs?state=waiting"):
        page = bot.get(path)
        assert page.status_code == 200, page.text
        assert person not in page.text and waiting not in page.text, f"{path} lists a run the agent may not read"
        assert own.run_id in page.text, f"{path} lists the agent's own run"
    assert bot.get(f"/runs/{own.run_id}").status_code == 200
    ops = console.client(CONSOLE_ENV["K_OPS"])
    assert person in ops.get("/runs").text and "migrated-output" in ops.get(f"/runs/{person}/steps/a").text, "people still see it"
    if console.root.joinpath("policy.yaml").exists():  # the grant opens reading, read again on the next request
        console.root.joinpath("policy.yaml").write_text(CONSOLE_POLICY + "runbooks:\n  db-*: {agents_may_read: true}\n")
        granted = bot.get(f"/runs/{person}/steps/a")
        assert granted.status_code == 200 and "migrated-output" in granted.text
        assert person in bot.get("/runs").text and waiting not in bot.get("/runs").text
        policy = console.root / "policy.yaml"
        policy.write_text(policy.read_text() + "  appr: {agents_may_read: true}\n")
        readable = bot.get(f"/runs/{waiting}").text  # may read, may not steer: no buttons, and a forged POST is refused
        assert f"/runs/{waiting}/cancel" not in readable and f"/runs/{waiting}/pause" not in readable
        assert f"/runs/{own.run_id}/cancel" in bot.get(f"/runs/{own.run_id}").text, "its own run it may cancel"
        cancel = f"/runs/{waiting}/cancel"  # a bearer request needs no CSRF token
        forged = bot.post(cancel, data={}) if via == "bearer" else console.post(bot, cancel, page=f"/runs/{waiting}")
        assert forged.status_code == 403 and "agents_may_steer" in forged.text
        policy.write_text(
            policy.read_text().replace("appr: {agents_may_read: true}", "appr: {agents_may_read: true, agents_may_steer: true}")
        )
        assert f"/runs/{waiting}/cancel" in bot.get(f"/runs/{waiting}").text


def _bot() -> Any:
    from runner.authority import Principal

    return Principal.agent("bot", frozenset({"agent"}))
