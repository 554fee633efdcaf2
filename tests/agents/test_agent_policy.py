"""The agent policy: its file, its decisions, and its enforcement over the CLI and MCP alike (must-show 3 and 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.errors import ConfigError, PolicyDenied, ValidationError
from runner.policy import ENV_VAR, Policy, load_policy, parse_policy
from tests.agents.agentkit import MCPServerProcess, dump, lines
from tests.conftest import Project

POLICY = """
max_concurrent_runs: 5
allow: ["restart-*", "disk-cleanup", "db-*"]
deny: ["db-*"]
runbooks:
  restart-service:
    params:
      host: {values: [web1, web2]}
      service: {pattern: '^(nginx|app)$'}
    require_approval: [restart]
  "restart-*":
    params:
      count: {minimum: 1, maximum: 3}
  disk-cleanup:
    agents_may_approve: true
    agents_may_steer: true     # resume a person's run of it once approved
"""


def policy(text: str = POLICY) -> Policy:
    return parse_policy(text, "policy.yaml")


def refusal(p: Policy, runbook: str, params: dict[str, Any], active: int = 0) -> str:
    with pytest.raises(PolicyDenied) as info:
        p.check_start(runbook, params, active_runs=active)
    return str(info.value)


# ---------------------------------------------------------------------- the file


def test_full_example_parses_and_answers() -> None:
    p = policy()
    assert p.file == "policy.yaml" and p.max_concurrent_runs == 5
    assert p.approval_steps("restart-service") == ["restart"] and p.approval_steps("disk-cleanup") == []
    assert p.may_approve("disk-cleanup") and not p.may_approve("restart-service") and not p.may_approve("other")
    assert p.may_start("restart-web") and not p.may_start("db-migrate") and not p.may_start("other")
    p.check_start("restart-service", {"host": "web1", "service": "nginx", "count": 2}, active_runs=4)


@pytest.mark.parametrize(("text", "where", "message"), [
    ("allow: restart-*\n", "policy.yaml:1:8", "Input should be a valid list"),
    ("runbooks:\n  x:\n    params:\n      host: {valuez: [a]}\n", "policy.yaml:4:14", "unknown key 'valuez'"),
    ("runbooks:\n  x:\n    params:\n      host: {}\n", "policy.yaml:4:13", "give at least one of 'values', 'pattern'"),
    ("runbooks:\n  x:\n    params:\n      host: {pattern: '(['}\n", "policy.yaml:4:23", "invalid regular expression"),
    ("max_concurrent_runs: -1\n", "policy.yaml:1:22", "greater than or equal to 0"),
    ("allow: [a]\nallow: [b]\n", "policy.yaml:2:1", "duplicate key 'allow'"),
    ("- just a list\n", "policy.yaml:1:1", "an agent policy is a mapping"),
], ids=["type", "unknown-key", "empty-rule", "bad-regex", "negative", "duplicate", "not-mapping"])  # fmt: skip
def test_invalid_files_name_file_line_and_column(text: str, where: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_policy(text, "policy.yaml")
    assert any(str(p).startswith(where) and message in str(p) for p in info.value.problems), [str(p) for p in info.value.problems]


def test_load_policy_from_argument_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert load_policy(None) is None, "no file and no variable: agents unrestricted"
    file = tmp_path / "p.yaml"
    file.write_text("deny: [x]\n")
    monkeypatch.setenv(ENV_VAR, str(file))
    loaded = load_policy(None)
    assert loaded is not None and loaded.deny == ["x"] and loaded.file == str(file)
    with pytest.raises(ConfigError, match=r"cannot read the agent policy file .*missing.yaml \(from --policy\)"):
        load_policy(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------- decisions


@pytest.mark.parametrize(("runbook", "params", "reason"), [
    ("db-migrate", {}, "runbook 'db-migrate' is denied to agents (deny pattern 'db-*' in policy.yaml)"),
    ("other", {}, "runbook 'other' is not on the agent allow list of policy.yaml (allowed: restart-*, disk-cleanup, db-*)"),
    ("restart-service", {"host": "db1", "service": "nginx"},
     "param 'host' = 'db1' is not allowed for runbook 'restart-service' by runbooks.restart-service.params.host in "
     "policy.yaml; allowed values: 'web1', 'web2'"),
    ("restart-service", {"host": "web1", "service": "sshd"}, "param 'service' = 'sshd' is not allowed"),
    ("restart-web", {"count": 4}, "param 'count' = 4 is not allowed for runbook 'restart-web' by runbooks.restart-*.params.count "
     "in policy.yaml; the value must be a number <= 3"),
    ("restart-web", {"count": True}, "the value must be a number >= 1"),
    ("restart-service", {"host": "web1"}, "runbooks.restart-service.params.service in policy.yaml constrains param 'service', "
     "which runbook 'restart-service' does not take; fix the policy"),
], ids=["deny", "not-allowed", "value", "pattern", "maximum", "bool-is-no-number", "named-entry-fails-closed"])  # fmt: skip
def test_refusals_say_which_rule_and_what_is_allowed(runbook: str, params: dict[str, Any], reason: str) -> None:
    assert reason in refusal(policy(), runbook, params)


def test_glob_entries_skip_runbooks_without_the_param_and_limits_count_active_runs() -> None:
    p = policy()
    p.check_start("restart-web", {"host": "anything"}, active_runs=0)  # 'count' is constrained only where it exists
    assert "5 agent-started run(s) are already active; policy.yaml allows at most 5" in refusal(p, "restart-web", {}, active=5)
    unrestricted = policy("{}")
    unrestricted.check_start("anything", {"x": 1}, active_runs=1000)
    assert unrestricted.approval_steps("anything") == [] and not unrestricted.may_approve("anything")


# ---------------------------------------------------------------------- enforced over the CLI and MCP


RUNBOOKS = {
    "restart-service.yaml": """
        name: restart-service
        params:
          host: {{type: string}}
          service: {{type: string}}
          count: {{type: integer, default: 1}}
        steps:
          - {{id: check, shell: [echo, checking]}}
          - {{id: restart, shell: {{script: 'echo "restart $host" >> {log}'}}}}
    """,
    "db-migrate.yaml": """
        name: db-migrate
        steps:
          - {{id: migrate, shell: {{script: 'echo migrate >> {log}'}}}}
    """,
    "disk-cleanup.yaml": """
        name: disk-cleanup
        steps:
          - id: ok
            approval: {{message: "Clean up?"}}
          - {{id: clean, shell: {{script: 'echo clean >> {log}'}}}}
    """,
}


def setup(project: Project) -> tuple[Path, Path]:
    log = project.root / "effects.log"
    for name, text in RUNBOOKS.items():
        project.write(name, text.format(log=log))
    file = project.root / "agent-policy.yaml"
    file.write_text(POLICY)
    return file, log


def test_cli_refuses_runbooks_and_values_with_the_reason(project: Project) -> None:
    """must-show 3 (CLI): `runbook run X --as-agent --policy P` refuses, says why, and creates no run."""
    file, log = setup(project)
    denied = project.run("run", "db-migrate", "--as-agent", "--policy", str(file))
    assert denied.code == 2 and "refused by agent policy: runbook 'db-migrate' is denied to agents (deny pattern 'db-*'" in denied.err
    value = project.run("run", "restart-service", "-p", "host=db1", "-p", "service=nginx", "--as-agent", "--json",
                        env={ENV_VAR: str(file)})  # fmt: skip
    assert value.code == 2, value
    error = value.json()["error"]
    assert error["type"] == "PolicyDenied" and "param 'host' = 'db1' is not allowed" in error["message"]
    assert "allowed values: 'web1', 'web2'" in error["message"]
    assert project.run("runs", "--json").json()["runs"] == [], "a refused start creates no run"
    human = project.run("run", "db-migrate", "--json")
    assert human.code == 0, "the policy binds agents only"
    assert lines(log) == ["migrate"]


def test_mcp_refuses_runbooks_and_values_with_the_reason(project: Project, mcp_server: MCPServerProcess) -> None:
    """must-show 3 (MCP): denied runbooks have no tool; starting them or a disallowed value is a tool error with the reason."""
    file, log = setup(project)
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_server.connect("--policy", str(file)) as agent:
            got["tools"] = await agent.tools()
            got["listing"] = await agent.call("list_runbooks")
            got["denied"] = await agent.call("start_run", {"runbook": "db-migrate"})
            got["value"] = await agent.call("start_run", {"runbook": "restart-service", "params": {"host": "db1", "service": "nginx"}})
            got["pattern"] = await agent.call("start_run", {"runbook": "restart-service", "params": {"host": "web1", "service": "sshd"}})

    anyio.run(scenario)
    assert got["tools"]["start_run"].input_schema["properties"]["runbook"]["enum"] == ["disk-cleanup", "restart-service"]
    assert [rb["name"] for rb in got["listing"].data["runbooks"]] == ["disk-cleanup", "restart-service"]
    expect = {"denied": "refused by agent policy: runbook 'db-migrate' is denied to agents",
              "value": "param 'host' = 'db1' is not allowed for runbook 'restart-service'",
              "pattern": "param 'service' = 'sshd' is not allowed for runbook 'restart-service'"}  # fmt: skip
    for key, text in expect.items():
        assert got[key].is_error and text in got[key].text, got[key]
        assert got[key].data["error"]["type"] == "PolicyDenied"
    assert "allowed values: 'web1', 'web2'" in got["value"].text and "must match the pattern '^(nginx|app)$'" in got["pattern"].text
    assert project.run("runs", "--json").json()["runs"] == [] and lines(log) == []


def test_concurrent_agent_runs_are_capped(project: Project) -> None:
    setup(project)
    capped = project.root / "capped.yaml"
    capped.write_text("max_concurrent_runs: 1\n")
    first = project.run("run", "disk-cleanup", "--as-agent", "--policy", str(capped), "--json")
    assert first.code == 4, first
    second = project.run("run", "disk-cleanup", "--as-agent", "--policy", str(capped))
    assert second.code == 2 and "1 agent-started run(s) are already active" in second.err and "at most 1" in second.err
    assert project.run("run", "disk-cleanup", "--json").code == 4, "human runs are not counted or capped"
    assert project.run("cancel", first.json()["run_id"]).code == 0
    assert project.run("run", "disk-cleanup", "--as-agent", "--policy", str(capped), "--json").code == 4


def test_policy_gate_waits_for_a_human_the_agent_cannot_approve_itself(project: Project, mcp_server: MCPServerProcess) -> None:
    """An agent-started run of a gated step waits (exit 4, await_approval); the agent cannot approve it; a human can."""
    file, log = setup(project)
    may_approve = project.root / "may-approve.yaml"
    may_approve.write_text(
        POLICY.replace("    require_approval: [restart]", "    require_approval: [restart]\n    agents_may_approve: true")
    )
    cli = project.run("run", "restart-service", "-p", "host=web2", "-p", "service=app", "--as-agent", "--policy", str(file), "--json")
    assert cli.code == 4 and cli.json()["next"]["action"] == "await_approval" and cli.json()["next"]["step"] == "restart", cli
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_server.connect("--policy", str(may_approve)) as agent:
            assert "approve_run" in await agent.tools(), "this policy lets agents approve restart-service"
            started = got["started"] = await agent.call("start_run", {"runbook": "restart-service",
                                                                      "params": {"host": "web1", "service": "nginx"}})  # fmt: skip
            rid = started.data["run_id"]
            got["self"] = await agent.call("approve_run", {"run_id": rid})
            got["cli self"] = project.run("approve", rid, "--by", started.data["started_by"])
            got["human"] = project.run("approve", rid, "--by", "human", "--json")
            got["done"] = await agent.call("resume_run", {"run_id": rid})

    anyio.run(scenario)
    started = got["started"].data
    assert started["state"] == "waiting" and started["exit_code"] == 4, dump(started)
    assert started["next"]["action"] == "await_approval" and started["next"]["step"] == "restart"
    assert [s["state"] for s in started["steps"]] == ["succeeded", "waiting"]
    assert got["self"].is_error and "started this run and cannot approve it (distinct_from_starter)" in got["self"].text, got["self"]
    assert got["cli self"].code == 2 and "distinct_from_starter" in got["cli self"].err
    assert got["human"].code == 0, got["human"]
    assert got["done"].data["state"] == "succeeded", got["done"]
    assert lines(log) == ["restart", "web1"], "the gated step acted once, after the human approval"
    events = project.run("events", started["run_id"], "--json").json()["events"]
    assert [e["actor"] for e in events if e["type"] == "request.approve"] == ["human"]


def test_approve_tool_follows_agents_may_approve(project: Project, mcp_server: MCPServerProcess) -> None:
    """Agents may approve only runbooks the policy names; without such a rule there is no approve tool at all."""
    file, log = setup(project)
    human = project.run("run", "disk-cleanup", "--json").json()
    gated = project.run(
        "run", "restart-service", "-p", "host=web1", "-p", "service=app", "--as-agent", "--policy", str(file), "--json"
    ).json()
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_server.connect("--policy", str(file)) as agent:
            got["tools"] = set(await agent.tools())
            got["other"] = await agent.call("approve_run", {"run_id": gated["run_id"]})
            got["ok"] = await agent.call("approve_run", {"run_id": human["run_id"], "comment": "disk is full"})
            got["done"] = await agent.call("resume_run", {"run_id": human["run_id"]})
        async with mcp_server.connect() as agent:
            got["no policy"] = set(await agent.tools())

    anyio.run(scenario)
    assert {"approve_run", "deny_run"} <= got["tools"] and not {"approve_run", "deny_run"} & got["no policy"]
    assert got["other"].is_error and "agents may not approve or deny runs of 'restart-service'" in got["other"].text
    assert not got["ok"].is_error, got["ok"]
    assert got["done"].data["state"] == "succeeded" and lines(log) == ["clean"]
