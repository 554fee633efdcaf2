"""Schedules through their surfaces: ``GET /v1/schedules`` of a real server (auth, reset, metrics, OpenAPI),
``runbook schedules`` and ``runbook worker --config`` through the real CLI, each with the test-only clock."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project
from tests.server.conftest import TOKEN
from tests.server.serverkit import ServerProcess, parse_metrics, poll

TICK = """
name: tick
params:
  slot: {type: string}
  out: {type: string}
steps:
  - id: note
    shell: [sh, -c, 'echo "$1" >> "$2"', sh, "{{ params.slot }}", "{{ params.out }}"]
"""
CONFIG = """
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
  - {name: reader, token: env:T_READ, scopes: [read]}
  - {name: bot, token: env:T_AGENT, scopes: [agent]}
agent_policy: POLICY
schedules:
  - name: tick
    runbook: tick
    cron: "* * * * *"
    params: {slot: "{{ schedule.slot_utc }}", out: "OUT"}
    grace: 30s
  - name: yearly
    runbook: tick
    cron: "@yearly"
    timezone: Asia/Kolkata
    params: {slot: "{{ schedule.slot }}", out: "OUT"}
    enabled: false
"""
ENV = {"T_ADMIN": TOKEN, "T_READ": "reader-token-xyz", "T_AGENT": "agent-token-xyz"}
START = datetime(2026, 5, 4, 8, 0, 50, tzinfo=UTC).timestamp()  # 08:00 is past its grace (30 s): nothing is due


def clock(path: Path, *, speed: float, start: float = START, at: float | None = None) -> dict[str, str]:
    """Write a test clock that runs from ``start`` at real time ``at`` (default now); the environment that selects it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"start": start, "at": time.time() if at is None else at, "speed": speed}), encoding="utf-8")
    tmp.replace(path)
    return {"RUNBOOK_TEST_CLOCK": str(path)}


@pytest.fixture
def scheduled(project: Project, serve: Any) -> ServerProcess:
    out = project.root / "ticks.log"
    project.write("tick.yaml", TICK)
    env = {**ENV, **clock(project.root / "clock.json", speed=60, at=time.time() + 10**6)}  # stopped until the test says
    policy = project.root / "agent-policy.yaml"
    policy.write_text("allow: [report-*]\n", encoding="utf-8")  # agents may not start tick: they do not see its schedules
    return serve(CONFIG.replace("OUT", str(out)).replace("POLICY", str(policy)), env=env, token=TOKEN)  # type: ignore[no-any-return]


def test_schedules_api_lists_fires_and_resets(scheduled: ServerProcess, project: Project) -> None:
    admin = scheduled.client()
    path = project.root / "clock.json"
    clock(path, speed=60)  # 08:01 in 10 s of its time: a sixth of a second
    poll(lambda: (project.root / "ticks.log").exists(), what="the 08:01 slot to run", timeout=60)
    clock(path, speed=0, start=START + 30)  # stopped at 08:01:20, before 08:02
    doc = poll(lambda: _settled(admin.get("/v1/schedules").json()), what="the listing to show the run", timeout=60)
    tick, yearly = doc["schedules"]
    assert tick["last_slot"] == "2026-05-04T08:01:00+00:00" and tick["last_decision"] == "started"
    assert tick["last_run_slot"] == "2026-05-04T08:01:00+00:00" and tick["next_slot"] > tick["last_slot"]
    assert (project.root / "ticks.log").read_text().splitlines()[0] == "2026-05-04T08:01:00Z"
    run = admin.get(f"/v1/runs/{tick['last_run_id']}").json()
    assert run["started_by"] == "schedule:tick" and run["trigger"]["schedule"] == "tick"
    assert yearly == {**yearly, "enabled": False, "next_slot": None, "next_fire_at": None, "last_slot": None, "timezone": "Asia/Kolkata"}

    detail = admin.get("/v1/schedules/yearly", params={"upcoming": 3}).json()
    assert detail["upcoming"] == [] and detail["decisions"] == []
    detail = admin.get("/v1/schedules/tick", params={"upcoming": 2, "limit": 1}).json()
    assert len(detail["upcoming"]) == 2 and detail["upcoming"][0] == detail["next_slot"] and len(detail["decisions"]) == 1
    missing = admin.get("/v1/schedules/nope")
    assert missing.status_code == 404 and "no schedule named 'nope' (schedules: tick, yearly)" in missing.json()["error"]["message"]
    agent = scheduled.client("agent-token-xyz")
    assert agent.get("/v1/schedules").json()["schedules"] == []
    hidden = agent.get("/v1/schedules/tick")
    assert hidden.status_code == 404 and hidden.json()["error"]["message"] == "no schedule named 'tick' (schedules: none)"

    reader = scheduled.client("reader-token-xyz")
    assert reader.get("/v1/schedules").status_code == 200
    assert scheduled.client(None).get("/v1/schedules").status_code == 401
    assert reader.post("/v1/schedules/tick/reset", json={}).status_code == 403
    reset = admin.post("/v1/schedules/tick/reset", json={})
    assert reset.status_code == 200 and reset.json()["decisions"][0]["route"] == "schedule:tick"
    resets = admin.get("/v1/alerts/decisions", params={"route": "schedule:tick", "decision": "breaker_reset"}).json()["decisions"]
    assert [d["reason"] for d in resets] == ["reset by admin"]

    metrics = parse_metrics(admin.get("/metrics").text)
    assert metrics['runbook_alert_decisions_total{route="schedule:tick",decision="started"}'] >= 1
    paths = admin.get("/openapi.json").json()["paths"]
    assert {"/v1/schedules", "/v1/schedules/{name}", "/v1/schedules/{name}/reset"} <= set(paths)


def _settled(doc: dict[str, Any]) -> dict[str, Any] | None:
    return doc if doc["schedules"][0]["last_run_state"] == "succeeded" else None


def test_a_server_without_schedules_lists_none(project: Project, serve: Any) -> None:
    server = serve("")
    listing = server.client(None).get("/v1/schedules").json()
    assert listing["schedules"] == [] and listing["now"].endswith("+00:00")
    assert server.client(None).get("/v1/schedules/x").status_code == 404


# ---------------------------------------------------------------------- CLI


def test_runbook_schedules_lists_config_and_journal(project: Project) -> None:
    project.write("tick.yaml", TICK)
    config = project.root / "server.yaml"
    config.write_text(CONFIG.replace("OUT", str(project.root / "t.log")).replace("agent_policy: POLICY\n", ""), encoding="utf-8")
    env = clock(project.root / "clock.json", speed=0)  # stopped at 08:00:50
    table = project.run("schedules", "--config", str(config), env=env)
    assert table.code == 0, table
    lines = table.out.splitlines()
    assert lines[0].split() == ["NAME", "RUNBOOK", "CRON", "TIMEZONE", "NEXT", "SLOT", "LAST", "SLOT", "DECISION", "LAST", "RUN", "STATE"]
    assert lines[1].split()[:8] == ["tick", "tick", "*", "*", "*", "*", "*", "UTC"] and "2026-05-04T08:01:00+00:00" in lines[1]
    assert lines[2].split()[:4] == ["yearly", "tick", "@yearly", "Asia/Kolkata"] and "disabled" in lines[2]
    doc = project.run("schedules", "--config", str(config), "--json", env=env).json()
    assert doc["now"] == "2026-05-04T08:00:50+00:00"
    assert [(s["name"], s["next_slot"], s["last_run_id"]) for s in doc["schedules"]] == [("tick", "2026-05-04T08:01:00+00:00", None),
                                                                                         ("yearly", None, None)]  # fmt: skip
    assert not project.journal.exists()  # a read command: it creates no journal
    wrong = project.run("--store", f"sqlite:///{project.root / 'nowhere' / 'j.db'}", "schedules", "--config", str(config), env=env)
    assert wrong.code == 2 and "nowhere" in wrong.err, wrong


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "error: runbook schedules needs the server config that holds them; pass --config FILE"),
        (
            "schedules:\n  - {name: a, runbook: nope, cron: '@daily'}\n",
            ":2:24 (schedules.0.runbook): no runbook named 'nope' in the catalog",
        ),
        (
            "schedules:\n  - {name: a, runbook: tick, cron: '* * * * 8'}\n",
            ":2:36 (schedules.0.cron): day-of-week field '8': 8 is out of range 0-7",
        ),
    ],
    ids=["no-config", "unknown-runbook", "bad-cron"],
)
def test_runbook_schedules_errors(project: Project, config: str | None, message: str) -> None:
    project.write("tick.yaml", TICK)
    args = ["schedules"]
    if config is not None:
        (project.root / "server.yaml").write_text(config, encoding="utf-8")
        args += ["--config", str(project.root / "server.yaml")]
    result = project.run(*args)
    assert result.code == 2 and message in result.err, result


def test_runbook_worker_with_config_fires_schedules(project: Project) -> None:
    out = project.root / "ticks.log"
    project.write("tick.yaml", TICK)
    config = project.root / "server.yaml"
    config.write_text(CONFIG.replace("OUT", str(out)).replace("agent_policy: POLICY\n", ""), encoding="utf-8")
    env = clock(project.root / "clock.json", speed=60, at=time.time() + 10**6)  # stopped until the worker is up
    worker = project.popen("worker", "--workers", "1", "--poll", "0.1", "--config", str(config), env=env)
    try:
        assert worker.stderr is not None
        banner = worker.stderr.readline()
        assert "1 worker(s) on store" in banner and "; firing 1 schedule(s)" in banner
        clock(project.root / "clock.json", speed=60)
        poll(lambda: out.exists() and out.read_text().splitlines(), what="the worker to fire and run 08:01", timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert out.read_text().splitlines()[0] == "2026-05-04T08:01:00Z"
