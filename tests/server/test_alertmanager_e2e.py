"""End to end with a real Prometheus Alertmanager posting to a real ``runbook serve`` (bearer auth)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Project, require
from tests.server.amkit import Alertmanager, have_alertmanager
from tests.server.conftest import HELLO, TOKEN
from tests.server.serverkit import ServerProcess, parse_metrics, poll

AM_TOKEN = "am-webhook-token-42"
CONFIG = """
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
sources:
  alertmanager: {auth: {bearer: env:AM_WEBHOOK_TOKEN}}
routes:
  - name: disk-full
    source: alertmanager
    match: {alertname: DiskFull, severity: "=~critical|page"}
    runbook: hello
    params: {who: "{{ alert.labels.instance }}"}
    on_resolved: cancel
"""
ENV = {"T_ADMIN": TOKEN, "AM_WEBHOOK_TOKEN": AM_TOKEN}


@pytest.fixture
def alertmanager(project: Project) -> Iterator[Callable[[ServerProcess], Alertmanager]]:
    """Start a real Alertmanager whose webhook receiver points at a running server."""
    require(have_alertmanager(), "Prometheus Alertmanager (apt-get install prometheus-alertmanager)")
    started: list[Alertmanager] = []

    def start(server: ServerProcess) -> Alertmanager:
        am = Alertmanager.start(project.root / "am", f"{server.url}/v1/alerts/alertmanager", AM_TOKEN)
        started.append(am)
        return am

    yield start
    for am in started:
        am.stop()


def decisions(server: ServerProcess, **filters: str) -> list[dict[str, Any]]:
    return server.client().get("/v1/alerts/decisions", params={"limit": 1000, **filters}).json()["decisions"]  # type: ignore[no-any-return]


def test_alert_from_alertmanager_runs_the_routed_runbook_and_resolution_is_recorded(
    project: Project, serve: Callable[..., ServerProcess], alertmanager: Callable[[ServerProcess], Alertmanager]
) -> None:
    hits = project.root / "hits.log"
    project.write("hello.yaml", HELLO.replace("OUT", str(hits)))
    server = serve(CONFIG, env=ENV, token=TOKEN)
    am = alertmanager(server)
    start = datetime.now(UTC) - timedelta(seconds=5)
    am.add("alertname=DiskFull", "instance=db1:9100", "severity=critical", start=start)
    started = poll(lambda: decisions(server, decision="started"), timeout=30, what=f"a started decision\n{am.log()[-2000:]}")
    run_id = started[0]["run_id"]
    assert started[0]["route"] == "disk-full" and started[0]["alert"]["labels"]["instance"] == "db1:9100"
    server.wait_state(run_id, "succeeded")
    assert hits.read_text().split() == ["db1:9100"]
    status = project.run("status", run_id, "--json")
    assert status.code == 0, status
    view = status.json()
    assert view["state"] == "succeeded" and view["params"] == {"who": "db1:9100", "out": str(hits)}
    assert view["trigger"]["source"] == "alertmanager" and view["trigger"]["alert"]["status"] == "firing"
    assert view["started_by"] == "alert:alertmanager/disk-full"

    am.add("alertname=DiskFull", "instance=db1:9100", "severity=critical", start=start, end=datetime.now(UTC) - timedelta(seconds=1))
    resolved = poll(lambda: decisions(server, decision="resolved"), timeout=30, what=f"the resolved decision\n{am.log()[-2000:]}")
    assert resolved[0]["route"] == "disk-full" and resolved[0]["status"] == "resolved"
    assert "no queued, waiting or paused run" in resolved[0]["reason"]
    cli = project.run("alerts", "decisions", "--route", "disk-full", "--json")
    assert [d["decision"] for d in cli.json()["decisions"]][:2] == ["resolved", "started"]
    assert hits.read_text().split() == ["db1:9100"], "nothing ran again"


def test_alertmanager_retry_after_a_5xx_creates_one_run(
    project: Project, serve: Callable[..., ServerProcess], alertmanager: Callable[[ServerProcess], Alertmanager]
) -> None:
    hits = project.root / "hits.log"
    project.write("hello.yaml", HELLO.replace("OUT", str(hits)))
    server = serve(CONFIG, env={**ENV, "RUNBOOK_TEST_FAIL_DELIVERIES": "1"}, token=TOKEN)
    am = alertmanager(server)
    am.add("alertname=DiskFull", "instance=db7:9100", "severity=page")

    def accepted() -> bool:
        samples = parse_metrics(server.client().get("/metrics").text)
        return samples.get('runbook_webhook_deliveries_total{source="alertmanager",outcome="accepted"}', 0) >= 1

    poll(accepted, timeout=30, what=f"Alertmanager's retry to be accepted\n{am.log()[-2000:]}")
    samples = parse_metrics(server.client().get("/metrics").text)
    assert samples['runbook_webhook_deliveries_total{source="alertmanager",outcome="error"}'] == 1, "the first delivery got a 503"
    started = decisions(server, route="disk-full")
    assert [d["decision"] for d in started] == ["started"]
    runs = server.client().get("/v1/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == [started[0]["run_id"]]
    server.wait_state(started[0]["run_id"], "succeeded")
    assert hits.read_text().split() == ["db7:9100"]
