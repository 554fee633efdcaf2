"""restart-service: over a real SSH server (a stand-in systemctl), or a fake transport; the health check faked."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.testing import Reply, RunbookHarness, SSHServer

HEALTH = "http://localhost:8080/healthz"
SYSTEMCTL = """#!/bin/sh
# a stand-in systemctl keeping one unit's state in STATE, recording every call in LOG
STATE={state}; LOG={log}
echo "$*" >> "$LOG"
case "$1" in
  cat) [ "$2" = nginx.service ] || [ "$2" = nginx ] || {{ echo "No files found for $2." >&2; exit 1; }} ;;
  is-active) grep -qx active "$STATE" 2>/dev/null || exit 3 ;;
  restart|start) echo active > "$STATE" ;;
esac
"""


@pytest.fixture
def host(runbook: RunbookHarness, runbook_sshd: SSHServer) -> Path:
    """web-1 is the test's sshd, with nginx stopped; returns the file recording systemctl's calls."""
    work = runbook_sshd.workdir(f"restart-{id(runbook)}")
    state, log = work / "state", work / "calls"
    state.write_text("inactive\n")
    log.write_text("")
    for p in (state, log):
        p.chmod(0o666)
    runbook_sshd.stub("systemctl", SYSTEMCTL.format(state=state, log=log))
    runbook.use_sshd(runbook_sshd, hosts=["web-1"])
    return log


def test_a_stopped_unit_is_restarted_over_ssh_and_proved_healthy(runbook: RunbookHarness, host: Path) -> None:
    runbook.http.reply("GET", HEALTH, Reply(200, json={"status": "ok"}))
    outcome = runbook.run("restart-service", {"host": "web-1", "service": "nginx"})
    assert outcome.state == "succeeded", outcome.reason
    assert outcome.states() == {"unit-exists": "succeeded", "restart": "succeeded"}
    assert host.read_text().splitlines() == ["cat nginx", "is-active --quiet nginx", "restart nginx"]
    runbook.assert_exactly_once(outcome, "restart")


def test_an_active_healthy_unit_is_not_restarted(runbook: RunbookHarness, host: Path) -> None:
    (host.parent / "state").write_text("active\n")
    runbook.http.reply("GET", HEALTH, Reply(200))
    outcome = runbook.run("restart-service", {"host": "web-1", "service": "nginx"})
    assert outcome.step("restart").state == "satisfied"
    assert "restart nginx" not in host.read_text() and runbook.executions("restart") == []


def test_a_unit_that_does_not_exist_fails_the_run_before_anything_is_restarted(runbook: RunbookHarness, host: Path) -> None:
    outcome = runbook.run_cli("restart-service", {"host": "web-1", "service": "nginx-typo"})
    assert outcome.state == "failed" and outcome.exit_code == 1
    assert outcome.step("unit-exists").state == "failed" and "No files found for nginx-typo" in outcome.output("unit-exists")["stderr"]
    assert host.read_text().splitlines() == ["cat nginx-typo"]


def test_with_a_fake_transport_instead_of_a_server(runbook: RunbookHarness) -> None:
    """No SSH server at all: each command the runbook sends gets the reply the test arranged, and is logged."""
    runbook.ssh.reply(["systemctl", "cat", "nginx"], stdout="[Unit]\nDescription=nginx\n")
    runbook.ssh.reply(["systemctl", "is-active", "--quiet", "nginx"], exit_code=3)
    runbook.ssh.reply(["systemctl", "restart", "nginx"])
    runbook.http.reply("GET", HEALTH, Reply(503, body="starting"), Reply(200, body="ok"))
    outcome = runbook.run("restart-service", {"host": "web-1", "service": "nginx"})
    assert outcome.state == "succeeded", outcome.reason
    assert [c["command"] for c in runbook.ssh.commands] == [
        ["systemctl", "cat", "nginx"], ["systemctl", "is-active", "--quiet", "nginx"], ["systemctl", "restart", "nginx"],
    ]  # fmt: skip
    assert all(c["host"] == "web-1" for c in runbook.ssh.commands) and runbook.ssh.commands[-1]["sudo"] is True
    assert [r["step"] for r in runbook.http.requests] == ["restart"] * 2, "the check skipped on is-active; verify polled twice"


def test_a_command_nobody_arranged_fails_its_step_naming_it(runbook: RunbookHarness) -> None:
    runbook.ssh.reply(["systemctl", "cat", "apache2"])
    outcome = runbook.run("restart-service", {"host": "web-1", "service": "nginx"})
    assert outcome.state == "failed" and outcome.step("restart").state == "pending"
    assert outcome.step("unit-exists").reason == "fake ssh: no reply arranged for web-1: systemctl cat nginx"
