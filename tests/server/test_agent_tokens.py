"""Agent-scoped API tokens: the agent policy binds runs started over HTTP exactly as over the CLI and MCP."""

from __future__ import annotations

from collections.abc import Callable

from tests.agents.test_agent_policy import setup
from tests.conftest import Project
from tests.server.conftest import TOKEN
from tests.server.serverkit import ServerProcess

AGENT_TOKEN = "test-agent-token-9876543210"


def config(policy: str) -> str:
    return f"""
        tokens:
          - {{name: ops, token: env:RB_TEST_TOKEN, scopes: [admin]}}
          - {{name: bot, token: env:RB_AGENT_TOKEN, scopes: [agent]}}
        agent_policy: {policy}
    """


def test_policy_refuses_over_http_with_the_reason(project: Project, serve: Callable[..., ServerProcess]) -> None:
    """must-show 3 of issue 6 (HTTP): a runbook or param value the agent may not use is refused (403) with the reason."""
    policy, log = setup(project)
    server = serve(config(str(policy)), env={"RB_TEST_TOKEN": TOKEN, "RB_AGENT_TOKEN": AGENT_TOKEN}, token=TOKEN)
    bot = server.client(AGENT_TOKEN)

    listed = {rb["name"] for rb in bot.get("/v1/runbooks").json()["runbooks"]}
    assert listed == {"restart-service", "disk-cleanup"}, "agents see only what the policy lets them start"

    denied = bot.post("/v1/runs", json={"runbook": "db-migrate", "params": {}})
    assert denied.status_code == 403, denied.text
    assert denied.json()["error"]["type"] == "PolicyDenied"
    assert "runbook 'db-migrate' is denied to agents (deny pattern 'db-*'" in denied.json()["error"]["message"]

    value = bot.post("/v1/runs", json={"runbook": "restart-service", "params": {"host": "db1", "service": "nginx"}})
    assert value.status_code == 403 and "param 'host' = 'db1' is not allowed" in value.json()["error"]["message"]
    assert server.client().get("/v1/runs").json()["runs"] == [], "a refused start creates no run"

    ok = bot.post("/v1/runs", json={"runbook": "restart-service", "params": {"host": "web1", "service": "nginx"}, "wait": 20})
    assert ok.status_code == 201, ok.text
    view = ok.json()
    assert view["started_by"] == "bot" and view["state"] == "waiting", "the policy's gate holds the restart step"
    assert view["next"]["action"] == "await_approval"
    refused = bot.post(f"/v1/runs/{view['run_id']}/approve", json={})
    assert refused.status_code == 403 and "agents may not approve" in refused.json()["error"]["message"]
    assert server.client().post(f"/v1/runs/{view['run_id']}/approve", json={"by": "human"}).status_code == 200
    assert server.wait_state(view["run_id"], "succeeded")["state"] == "succeeded"
    assert log.read_text().split("\n")[0] == "restart web1"

    human = server.client().post("/v1/runs", json={"runbook": "db-migrate", "params": {}, "wait": 20})
    assert human.status_code == 201 and human.json()["state"] == "succeeded", "the policy binds agent tokens only"
