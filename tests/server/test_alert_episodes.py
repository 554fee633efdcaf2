"""Which run an alert belongs to: firing episodes, re-firing after a run ended, API keys, replayed deliveries."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Project
from tests.server.alertkit import generic_headers, pagerduty_event, pagerduty_headers
from tests.server.conftest import HELLO, TOKEN
from tests.server.serverkit import ServerProcess

HOLD = """
name: hold
params:
  who: {type: string, pattern: '^[A-Za-z0-9.:_-]+$'}
steps:
  - id: hold
    wait: {for: 1h}
"""
CONFIG = """
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
sources:
  generic: {auth: {hmac_secret: env:GEN_SECRET}}
  pagerduty: {auth: {hmac_secrets: [env:PD_SECRET]}}
routes:
  - name: gen
    source: generic
    match: {alertname: Gen}
    runbook: hold
    params: {who: "{{ alert.labels.who }}"}
    on_resolved: cancel
  - name: cool
    source: generic
    match: {alertname: Cool}
    runbook: hold
    params: {who: "{{ alert.labels.who }}"}
    on_resolved: cancel
    cooldown: 1h
  - name: quick
    source: generic
    match: {alertname: Quick}
    runbook: hello
    params: {who: "{{ alert.labels.who }}"}
  - name: pd
    source: pagerduty
    runbook: hold
    params: {who: "{{ alert.labels.incident_id }}"}
    on_resolved: cancel
"""
ENV = {"T_ADMIN": TOKEN, "GEN_SECRET": "generic-secret-abc", "PD_SECRET": "pd-secret-abc"}


@pytest.fixture
def server(project: Project, serve: Callable[..., ServerProcess]) -> ServerProcess:
    project.write("hold.yaml", HOLD)
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    return serve(CONFIG, env=ENV, token=TOKEN)


def generic(server: ServerProcess, alertname: str, who: str, status: str = "firing", **fields: Any) -> dict[str, Any]:
    body = json.dumps({"status": status, "labels": {"alertname": alertname, "who": who}, **fields}).encode()
    r = server.client(None).post("/v1/alerts/generic", content=body, headers=generic_headers(ENV["GEN_SECRET"], body))
    assert r.status_code == 200, r.text
    return r.json()["decisions"][0]  # type: ignore[no-any-return]


def pagerduty(server: ServerProcess, event_type: str, incident: str, occurred: str) -> dict[str, Any]:
    body = pagerduty_event(event_type, incident, occurred=occurred)
    r = server.client(None).post("/v1/alerts/pagerduty", content=body, headers=pagerduty_headers(ENV["PD_SECRET"], body))
    assert r.status_code == 200, r.text
    return r.json()["decisions"][0]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- episodes


def test_an_alert_without_start_time_fires_again_once_its_run_ended(server: ServerProcess) -> None:
    first = generic(server, "Gen", "web1")
    assert first["decision"] == "started"
    server.wait_state(first["run_id"], "waiting")
    again = generic(server, "Gen", "web1")
    assert (again["decision"], again["run_id"]) == ("deduped", first["run_id"]), "bound while its run is active"
    assert generic(server, "Gen", "web1", status="resolved")["decision"] == "resolved_cancelled"
    server.wait_state(first["run_id"], "cancelled")
    refired = generic(server, "Gen", "web1")
    assert refired["decision"] == "started" and refired["run_id"] != first["run_id"], refired
    server.wait_state(refired["run_id"], "waiting")
    third = generic(server, "Quick", "q1")
    server.wait_state(third["run_id"], "succeeded")
    fourth = generic(server, "Quick", "q1")
    assert fourth["decision"] == "started" and fourth["run_id"] != third["run_id"], "a finished run does not bind its key"


def test_cooldown_still_holds_after_the_run_ended(server: ServerProcess) -> None:
    first = generic(server, "Cool", "db1")
    assert generic(server, "Cool", "db1", status="resolved")["decision"] == "resolved_cancelled"
    server.wait_state(first["run_id"], "cancelled")
    again = generic(server, "Cool", "db1")
    assert (again["decision"], again["run_id"]) == ("cooled_down", first["run_id"])


def test_one_episode_starts_one_run_even_after_it_ended(server: ServerProcess) -> None:
    """Repeated notifications of one episode (same start time, e.g. Alertmanager's repeat_interval) never start it again."""
    first = generic(server, "Gen", "web2", starts_at="2026-11-22T01:00:00Z")
    assert generic(server, "Gen", "web2", status="resolved")["decision"] == "resolved_cancelled"
    server.wait_state(first["run_id"], "cancelled")
    repeat = generic(server, "Gen", "web2", starts_at="2026-11-22T01:00:00Z")
    assert (repeat["decision"], repeat["run_id"]) == ("deduped", first["run_id"])
    new_episode = generic(server, "Gen", "web2", starts_at="2026-11-22T05:00:00Z")
    assert new_episode["decision"] == "started" and new_episode["run_id"] != first["run_id"]


def test_pagerduty_incident_reopened_after_resolution_starts_a_new_run(server: ServerProcess) -> None:
    triggered = pagerduty(server, "incident.triggered", "PINC9", "2026-11-22T00:59:00Z")
    assert triggered["decision"] == "started"
    server.wait_state(triggered["run_id"], "waiting")
    resolved = pagerduty(server, "incident.resolved", "PINC9", "2026-11-22T01:10:00Z")
    assert (resolved["decision"], resolved["run_id"]) == ("resolved_cancelled", triggered["run_id"])
    server.wait_state(triggered["run_id"], "cancelled")
    reopened = pagerduty(server, "incident.reopened", "PINC9", "2026-11-22T02:00:00Z")
    assert reopened["decision"] == "started" and reopened["run_id"] != triggered["run_id"], reopened
    server.wait_state(reopened["run_id"], "waiting")
    acked = pagerduty(server, "incident.acknowledged", "PINC9", "2026-11-22T02:01:00Z")
    assert (acked["decision"], acked["run_id"]) == ("deduped", reopened["run_id"])
    pagerduty(server, "incident.resolved", "PINC9", "2026-11-22T02:30:00Z")
    server.wait_state(reopened["run_id"], "cancelled")
    late = pagerduty(server, "incident.annotated", "PINC9", "2026-11-22T02:40:00Z")
    assert late["decision"] == "deduped", "an event that opens no episode does not start the incident again"
    runs = server.client().get("/v1/runs", params={"runbook": "hold"}).json()["runs"]
    assert len(runs) == 2


# ---------------------------------------------------------------------- run keys


def test_a_client_idempotency_key_cannot_take_an_alerts_run(server: ServerProcess) -> None:
    from runbook_server.routing import run_key

    key = run_key("gen", "generic:fp-hijack", "fp-hijack@2026-11-22T01:00:00+00:00")  # what intake derives for the alert below
    planted = server.client().post("/v1/runs", json={"runbook": "hold", "params": {"who": "planted"}}, headers={"Idempotency-Key": key})
    assert planted.status_code == 201
    d = generic(server, "Gen", "victim", fingerprint="fp-hijack", starts_at="2026-11-22T01:00:00Z")
    assert d["decision"] == "started" and d["run_id"] != planted.json()["run_id"], d
    view = server.client().get(f"/v1/runs/{d['run_id']}").json()
    assert view["params"] == {"who": "victim"} and view["trigger"]["route"] == "gen"
    again = server.client().post("/v1/runs", json={"runbook": "hold", "params": {"who": "planted"}}, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["run_id"] == planted.json()["run_id"], "the client's own key still works"


def test_a_run_holding_an_alerts_key_from_elsewhere_is_a_conflict_not_a_dedupe(server: ServerProcess) -> None:
    from runbook_server.routing import run_key

    key = run_key("gen", "generic:fp-cli", "fp-cli@2026-11-22T01:00:00+00:00")
    cli = server.project.run("run", "hello", "-p", "who=cli", "--idempotency-key", key, "--json")
    assert cli.code == 0, cli
    d = generic(server, "Gen", "victim", fingerprint="fp-cli", starts_at="2026-11-22T01:00:00Z")
    assert (d["decision"], d["run_id"]) == ("conflict", cli.json()["run_id"]), d
    assert "not started by route 'gen'" in d["reason"]


# ---------------------------------------------------------------------- replays


def test_a_captured_generic_delivery_cannot_be_replayed_under_another_id(server: ServerProcess) -> None:
    body = json.dumps({"labels": {"alertname": "Quick", "who": "replayed"}}).encode()
    headers = generic_headers(ENV["GEN_SECRET"], body, delivery="d-original")
    c = server.client(None)
    first = c.post("/v1/alerts/generic", content=body, headers=headers)
    assert first.json()["decisions"][0]["decision"] == "started"
    server.wait_state(first.json()["decisions"][0]["run_id"], "succeeded")
    forged = c.post("/v1/alerts/generic", content=body, headers={**headers, "X-Runbook-Delivery": "d-forged"})
    assert forged.status_code == 403 and forged.json()["error"]["type"] == "AuthError", forged.text
    same = c.post("/v1/alerts/generic", content=body, headers=headers)
    assert same.status_code == 200 and same.json()["duplicate"] is True
    assert same.json()["decisions"] == first.json()["decisions"]
    stale = generic_headers(ENV["GEN_SECRET"], body, delivery="d-old", ts=int(time.time()) - 3600)
    assert c.post("/v1/alerts/generic", content=body, headers=stale).status_code == 401, "outside the replay window"
    assert len(server.client().get("/v1/runs").json()["runs"]) == 1


def test_a_pagerduty_delivery_is_identified_by_its_signed_event_id(server: ServerProcess) -> None:
    body = pagerduty_event("incident.triggered", "PREPLAY", occurred="2026-11-22T00:59:00Z")
    c = server.client(None)
    first = c.post("/v1/alerts/pagerduty", content=body, headers=pagerduty_headers(ENV["PD_SECRET"], body, **{"X-Webhook-Id": "w-1"}))
    assert first.json()["decisions"][0]["decision"] == "started"
    event_id = json.loads(body)["event"]["id"]
    assert first.json()["delivery_id"] == f"pagerduty:event:{event_id}"
    replay = c.post("/v1/alerts/pagerduty", content=body, headers=pagerduty_headers(ENV["PD_SECRET"], body, **{"X-Webhook-Id": "w-2"}))
    assert replay.status_code == 200 and replay.json()["duplicate"] is True, replay.text
    assert replay.json()["decisions"] == first.json()["decisions"]
    assert len(server.client().get("/v1/alerts/decisions").json()["decisions"]) == 1
