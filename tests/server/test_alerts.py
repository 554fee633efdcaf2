"""Alert intake of a real ``runbook serve``: replayed Alertmanager captures, auth per source, at-least-once, routing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Project
from tests.server.alertkit import am_alert, am_body, basic, captures, generic_headers, grafana_headers, hex_hmac, pagerduty_event
from tests.server.conftest import HELLO, TOKEN
from tests.server.serverkit import ServerProcess, poll, start_server

HOLD = """
name: hold
params:
  who: {type: string, pattern: '^[A-Za-z0-9.:_-]+$'}
steps:
  - id: note
    shell: [sh, -c, 'echo "$1" >> "$2"', sh, "{{ params.who }}", "OUT"]
  - id: hold
    wait: {for: 1h}
"""

CONFIG = """
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
sources:
  alertmanager: {auth: {bearer: env:AM_TOKEN, basic: {username: am, password: env:AM_BASIC}}}
  grafana: {auth: {hmac_secret: env:GF_SECRET, timestamp_header: X-Grafana-Alerting-Timestamp}}
  pagerduty: {auth: {hmac_secrets: [env:PD_OLD, env:PD_NEW]}}
  generic: {auth: {hmac_secret: env:GEN_SECRET, max_skew: 5m}}
routes:
  - name: disk
    source: alertmanager
    match: {alertname: DiskFull, severity: "=~critical|page"}
    runbook: hold
    params: {who: "{{ alert.labels.instance }}"}
    on_resolved: cancel
  - name: queue
    match: {alertname: QueueStuck, team: "!=nobody"}
    runbook: hello
    params: {who: "{{ alert.labels.queue }}"}
  - name: grafana-cpu
    source: grafana
    match: {alertname: HighCPU}
    runbook: hello
    params: {who: "{{ alert.labels.host }}"}
  - name: pd
    source: pagerduty
    match: {service: "=~db|cache", event_type: "!~incident\\\\.annotated"}
    runbook: hold
    params: {who: "{{ alert.labels.incident_id }}"}
    on_resolved: cancel
  - name: generic
    source: generic
    match: {alertname: Generic}
    runbook: hello
    params: {who: "{{ alert.labels.host }}"}
"""
ENV = {"T_ADMIN": TOKEN, "AM_TOKEN": "test-bearer-token", "AM_BASIC": "test-basic-pass", "GF_SECRET": "grafana-secret",
       "PD_OLD": "pd-old-secret", "PD_NEW": "pd-new-secret", "GEN_SECRET": "generic-secret"}  # fmt: skip
AM_AUTH = {"Authorization": "Bearer test-bearer-token", "content-type": "application/json"}


@pytest.fixture
def intake(project: Project, serve: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with every source authenticated and a few routes."""
    hits = project.root / "hits.log"
    project.write("hello.yaml", HELLO.replace("OUT", str(hits)))
    project.write("hold.yaml", HOLD.replace("OUT", str(hits)))
    return serve(CONFIG, env=ENV, token=TOKEN)


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the refusal cases (they must all create nothing, so they can share it)."""
    import importlib.util

    from tests.conftest import require

    require(importlib.util.find_spec("fastapi") is not None, "fastapi and uvicorn (pip install 'runbook[server]')")
    project = Project(tmp_path_factory.mktemp("refusing") / "proj")
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    project.write("hold.yaml", HOLD.replace("OUT", str(project.root / "hits.log")))
    server = start_server(project, CONFIG, env=ENV, token=TOKEN)
    yield server
    server.stop()


def hits(server: ServerProcess) -> list[str]:
    path = server.project.root / "hits.log"
    return path.read_text().split() if path.exists() else []


def decisions(server: ServerProcess, **filters: Any) -> list[dict[str, Any]]:
    return server.client().get("/v1/alerts/decisions", params={"limit": 1000, **filters}).json()["decisions"]  # type: ignore[no-any-return]


def runs(server: ServerProcess) -> list[dict[str, Any]]:
    return server.client().get("/v1/runs", params={"limit": 1000}).json()["runs"]  # type: ignore[no-any-return]


def post(server: ServerProcess, source: str, body: bytes, headers: dict[str, str], method: str = "POST") -> Any:
    return server.client(None).request(method, f"/v1/alerts/{source}", content=body, headers=headers)


def summary(resp: Any) -> list[tuple[str | None, str | None, str]]:
    return [(d["route"], d["status"], d["decision"]) for d in resp.json()["decisions"]]


# ---------------------------------------------------------------------- the captured deliveries


def test_replaying_captured_alertmanager_deliveries_routes_each_alert(intake: ServerProcess) -> None:
    caps = captures()
    auth = {
        "/hook/basic": basic("am", "test-basic-pass"),
        "/hook/bearer": "Bearer test-bearer-token",
        "/hook/flaky": "Bearer test-bearer-token",
    }

    def send(i: int) -> Any:
        cap = caps[i]
        headers = {"content-type": "application/json", "authorization": auth[cap["path"]]}
        r = post(intake, "alertmanager", cap["raw_body"].encode(), headers)
        assert r.status_code == 200, r.text
        return r

    trunc = send(0)  # QueueStuck a, one alert left out of the group (max_alerts: 1)
    assert summary(trunc) == [("queue", "firing", "started"), (None, None, "truncated")]
    assert trunc.json()["truncated"] == 1 and "left out" in trunc.json()["decisions"][1]["reason"]
    firing = send(1)  # DiskFull db1 critical (routed) and db2 warning (no route)
    assert summary(firing) == [("disk", "firing", "started"), (None, "firing", "no_route")]
    disk_run = firing.json()["decisions"][0]["run_id"]
    first, retry = send(2), send(3)  # Alertmanager re-sent the identical body after a 500
    assert summary(first) == [(None, "firing", "no_route")]
    assert retry.json()["duplicate"] is True and retry.json()["decisions"] == first.json()["decisions"]
    intake.wait_state(disk_run, "waiting")
    resolved_q = send(4)
    assert summary(resolved_q) == [("queue", "resolved", "resolved_ignored"), (None, None, "truncated")]
    mixed = send(5)  # a firing group that carries the resolved db1 alert
    assert summary(mixed) == [("disk", "resolved", "resolved_cancelled"), (None, "firing", "no_route")]
    assert mixed.json()["decisions"][0]["run_id"] == disk_run
    view = intake.wait_state(disk_run, "cancelled")
    assert view["trigger"]["alert"]["labels"]["instance"] == "db1:9100" and view["trigger"]["route"] == "disk"
    assert sorted(hits(intake)) == ["a", "db1:9100"]
    assert len(runs(intake)) == 2
    assert len(decisions(intake)) == 9  # 2 + 2 + 1 (its retry is the same delivery) + 2 + 2


def test_duplicate_delivery_returns_the_existing_run(intake: ServerProcess) -> None:
    body = am_body(am_alert({"alertname": "QueueStuck", "queue": "dup"}))
    one, two = post(intake, "alertmanager", body, AM_AUTH), post(intake, "alertmanager", body, AM_AUTH)
    assert one.status_code == two.status_code == 200
    assert two.json()["duplicate"] is True
    assert one.json()["decisions"][0]["run_id"] == two.json()["decisions"][0]["run_id"]
    # the same alert episode in another group notification (an HA peer): the route finds its run
    other = post(
        intake, "alertmanager", am_body(am_alert({"alertname": "QueueStuck", "queue": "dup"}), am_alert({"alertname": "X"})), AM_AUTH
    )
    d = other.json()["decisions"][0]
    assert d["decision"] == "deduped" and d["run_id"] == one.json()["decisions"][0]["run_id"]
    poll(lambda: hits(intake) == ["dup"], what="the one run to execute")
    assert len(runs(intake)) == 1


def test_a_5xx_before_the_answer_then_the_retry_create_one_run(project: Project, serve: Callable[..., ServerProcess]) -> None:
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    server = serve(CONFIG.replace("runbook: hold", "runbook: hello"), env={**ENV, "RUNBOOK_TEST_FAIL_DELIVERIES": "1"}, token=TOKEN)
    body = am_body(am_alert({"alertname": "QueueStuck", "queue": "retry"}))
    failed = post(server, "alertmanager", body, AM_AUTH)
    assert failed.status_code == 503 and failed.json()["error"]["status"] == 503
    assert runs(server) == [] and decisions(server) == [], "delivery, decisions and runs commit together, or none of them"
    ok = post(server, "alertmanager", body, AM_AUTH)
    assert ok.status_code == 200 and ok.json()["duplicate"] is False
    assert [d["decision"] for d in ok.json()["decisions"]] == ["started"]
    assert ok.json()["decisions"][0]["run_id"] == runs(server)[0]["run_id"]
    assert len(runs(server)) == 1 and len(decisions(server)) == 1
    poll(lambda: hits(server) == ["retry"], what="the run to execute once")


# ---------------------------------------------------------------------- auth per source


GOOD_AM = am_body(am_alert({"alertname": "QueueStuck", "queue": "auth"}))
GOOD_GENERIC = json.dumps({"alerts": [{"labels": {"alertname": "Generic", "host": "h1"}}]}).encode()
GOOD_GRAFANA = am_body(am_alert({"alertname": "HighCPU", "host": "h2"}))


@pytest.mark.parametrize(
    ("source", "body", "headers", "status"),
    [
        ("alertmanager", GOOD_AM, {}, 401),
        ("alertmanager", GOOD_AM, {"Authorization": "Bearer wrong"}, 403),
        ("alertmanager", GOOD_AM, {"Authorization": basic("am", "wrong")}, 403),
        ("grafana", GOOD_GRAFANA, {}, 401),
        ("grafana", GOOD_GRAFANA, lambda: grafana_headers("not-the-secret", GOOD_GRAFANA), 403),
        ("grafana", GOOD_GRAFANA, grafana_headers("grafana-secret", GOOD_GRAFANA, ts=1_700_000_000), 401),
        ("pagerduty", pagerduty_event("incident.triggered", "P1"), {}, 401),
        ("pagerduty", pagerduty_event("incident.triggered", "P1"), {"X-PagerDuty-Signature": "v1=" + "0" * 64}, 403),
        ("generic", GOOD_GENERIC, {}, 401),
        ("generic", GOOD_GENERIC, lambda: generic_headers("wrong", GOOD_GENERIC), 403),
        ("generic", GOOD_GENERIC, generic_headers("generic-secret", GOOD_GENERIC, ts=1_700_000_000), 401),
    ],
    ids=[
        "am-missing",
        "am-wrong-bearer",
        "am-wrong-basic",
        "gf-missing",
        "gf-wrong",
        "gf-stale",
        "pd-missing",
        "pd-wrong",
        "gen-missing",
        "gen-wrong",
        "gen-replayed-outside-window",
    ],
)
def test_bad_credentials_are_refused_and_create_nothing(refusing: ServerProcess, source: str, body: bytes, headers: Any,
                                                        status: int) -> None:  # fmt: skip
    if callable(headers):  # signed now, not when the module was collected (a long suite would make it stale)
        headers = headers()
    r = post(refusing, source, body, {"content-type": "application/json", **headers})
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == "AuthError"
    for secret in ENV.values():
        assert secret not in r.text
    assert runs(refusing) == [] and decisions(refusing) == []
    metrics = refusing.client().get("/metrics").text
    assert f'runbook_webhook_deliveries_total{{source="{source}",outcome="{"unauthorized" if status == 401 else "forbidden"}"}}' in metrics


def test_good_signatures_of_every_source_are_accepted(intake: ServerProcess) -> None:
    gen = post(intake, "generic", GOOD_GENERIC, generic_headers("generic-secret", GOOD_GENERIC, delivery="d-1"))
    assert summary(gen) == [("generic", "firing", "started")]
    again = post(intake, "generic", GOOD_GENERIC, generic_headers("generic-secret", GOOD_GENERIC, delivery="d-1"))
    assert again.json()["duplicate"] is True, "a replayed delivery id inside the window is the same delivery"
    other_body = json.dumps({"labels": {"alertname": "Generic", "host": "h9"}}).encode()
    reused = post(intake, "generic", other_body, generic_headers("generic-secret", other_body, delivery="d-1"))
    assert reused.status_code == 409
    gf = post(intake, "grafana", GOOD_GRAFANA, grafana_headers("grafana-secret", GOOD_GRAFANA), method="PUT")
    assert summary(gf) == [("grafana-cpu", "firing", "started")]
    trig = pagerduty_event("incident.triggered", "PINC1")
    rotated = f"v1={hex_hmac('some-other', trig)},v1={hex_hmac('pd-old-secret', trig)}"
    pd = post(intake, "pagerduty", trig, {"X-PagerDuty-Signature": rotated, "X-Webhook-Id": "w1", "content-type": "application/json"})
    assert summary(pd) == [("pd", "firing", "started")]
    pd_run = pd.json()["decisions"][0]["run_id"]
    intake.wait_state(pd_run, "waiting")
    res = pagerduty_event("incident.resolved", "PINC1")
    done = post(
        intake,
        "pagerduty",
        res,
        {
            "X-PagerDuty-Signature": f"v1={hex_hmac('pd-new-secret', res)}",
            "X-Webhook-Id": "w2",
            "content-type": "application/json; charset=utf-8",
        },
    )
    assert summary(done) == [("pd", "resolved", "resolved_cancelled")]
    intake.wait_state(pd_run, "cancelled")
    assert sorted(hits(intake)) == ["PINC1", "h1", "h2"]


def test_oversized_and_malformed_deliveries(intake: ServerProcess) -> None:
    big = post(intake, "alertmanager", b'{"alerts": [' + b" " * (1024 * 1024 + 10) + b"]}", AM_AUTH)
    assert big.status_code == 413 and big.json()["error"]["type"] == "PayloadTooLarge"
    assert post(intake, "alertmanager", b"{oops", AM_AUTH).status_code == 400
    shape = post(intake, "alertmanager", b'{"nothing": 1}', AM_AUTH)
    assert shape.status_code == 400 and "alerts" in shape.json()["error"]["message"]
    assert runs(intake) == [] and decisions(intake) == []


# ---------------------------------------------------------------------- routing decisions


def test_alert_text_reaches_runbooks_only_as_validated_params(intake: ServerProcess) -> None:
    evil = post(intake, "alertmanager", am_body(am_alert({"alertname": "QueueStuck", "queue": "x; rm -rf /"})), AM_AUTH)
    assert summary(evil) == [("queue", "firing", "invalid_params")]
    assert "who" in evil.json()["decisions"][0]["reason"]
    missing = post(intake, "alertmanager", am_body(am_alert({"alertname": "QueueStuck"})), AM_AUTH)
    assert summary(missing) == [("queue", "firing", "invalid_params")]
    assert "queue" in missing.json()["decisions"][0]["reason"]
    nobody = post(intake, "alertmanager", am_body(am_alert({"alertname": "QueueStuck", "queue": "q", "team": "nobody"})), AM_AUTH)
    assert summary(nobody) == [(None, "firing", "no_route")]
    assert runs(intake) == []


def test_decisions_are_listed_by_the_cli_and_filtered(intake: ServerProcess) -> None:
    post(intake, "alertmanager", am_body(am_alert({"alertname": "QueueStuck", "queue": "cli1"}), am_alert({"alertname": "Other"})), AM_AUTH)
    res = intake.project.run("alerts", "decisions", "--json")
    assert res.code == 0, res
    got = sorted((d["route"] or "-", d["decision"]) for d in res.json()["decisions"])
    assert got == [("-", "no_route"), ("queue", "started")]
    only = intake.project.run("alerts", "decisions", "--decision", "no_route", "--json").json()["decisions"]
    assert [d["alert"]["labels"] for d in only] == [{"alertname": "Other"}]
    assert [d["decision"] for d in decisions(intake, route="queue")] == ["started"]
    text = intake.project.run("alerts", "decisions")
    assert text.code == 0 and "no_route" in text.out


def test_concurrent_deliveries_are_each_recorded_once_with_their_runs(intake: ServerProcess) -> None:
    """Many senders at once (deliveries and the workers' commits share journal transactions): every acknowledged
    delivery has its decision and one run, every run executes once, and the grouped writes are counted."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.server.serverkit import parse_metrics

    names = [f"c{i}" for i in range(48)]

    def send(name: str) -> tuple[int, str]:
        resp = post(intake, "alertmanager", am_body(am_alert({"alertname": "QueueStuck", "queue": name})), AM_AUTH)
        return resp.status_code, resp.json()["decisions"][0]["run_id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, names))
    assert {status for status, _ in answers} == {200}
    run_ids = {rid for _, rid in answers}
    assert len(run_ids) == len(names)
    poll(lambda: sorted(hits(intake)) == sorted(names), what="every run to execute once")
    assert {r["run_id"] for r in runs(intake)} == run_ids
    assert sorted(d["run_id"] for d in decisions(intake, decision="started")) == sorted(run_ids)
    metrics = parse_metrics(intake.client().get("/metrics").text)
    commits, writes = metrics["runbook_journal_group_commits_total"], metrics["runbook_journal_grouped_writes_total"]
    # each delivery is one grouped write, and each run's executor commits at least twice (step start, end)
    assert writes >= len(names) * 3 and 0 < commits <= writes
