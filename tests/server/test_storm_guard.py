"""The storm guard of a real ``runbook serve``: budget under an alert storm, cooldown, circuit breaker."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Project
from tests.server.alertkit import am_alert, am_body
from tests.server.conftest import HELLO, TOKEN
from tests.server.serverkit import ServerProcess, poll

CHECK = """
name: check
params:
  who: {type: string}
steps:
  - id: probe
    shell: [sh, -c, 'case "$1" in bad*) exit 1;; esac; echo "$1" >> "$2"', sh, "{{ params.who }}", "OUT"]
"""

CONFIG = """
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
sources:
  alertmanager: {auth: {bearer: env:AM_TOKEN}}
routes:
  - name: storm
    match: {alertname: Storm}
    runbook: hello
    params: {who: "{{ alert.labels.host }}"}
    budget: {runs: 3, per: 1h}
  - name: cool
    match: {alertname: Cool}
    runbook: hello
    params: {who: "{{ alert.labels.host }}"}
    dedupe: "{{ alert.labels.host }}"
    cooldown: 1h
  - name: brk
    match: {alertname: Flaky}
    runbook: check
    params: {who: "{{ alert.labels.host }}"}
    breaker: {failures: 2, within: 1h}
"""
AUTH = {"Authorization": "Bearer am-token", "content-type": "application/json"}
STORM = 1000


def guarded(project: Project, serve: Callable[..., ServerProcess]) -> ServerProcess:
    out = str(project.root / "hits.log")
    project.write("hello.yaml", HELLO.replace("OUT", out))
    project.write("check.yaml", CHECK.replace("OUT", out))
    return serve(CONFIG, env={"T_ADMIN": TOKEN, "AM_TOKEN": "am-token"}, token=TOKEN)


def fire(server: ServerProcess, labels: dict[str, str], starts: str = "2026-11-22T01:00:00Z") -> dict[str, Any]:
    r = server.client(None).post("/v1/alerts/alertmanager", content=am_body(am_alert(labels, starts=starts)), headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["decisions"][0]  # type: ignore[no-any-return]


def test_an_alert_storm_starts_no_more_runs_than_the_budget(project: Project, serve: Callable[..., ServerProcess]) -> None:
    server = guarded(project, serve)
    health: list[int] = []
    done = threading.Event()

    def watch_health() -> None:
        with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as c:
            while not done.is_set():
                health.append(c.get("/healthz").status_code)
                done.wait(0.05)

    statuses: Counter[int] = Counter()
    outcome: Counter[str] = Counter()
    lock = threading.Lock()

    def storm(part: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as c:
            for i in range(part, STORM, 4):
                r = c.post("/v1/alerts/alertmanager", content=am_body(am_alert({"alertname": "Storm", "host": f"h{i}"})), headers=AUTH)
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        outcome[r.json()["decisions"][0]["decision"]] += 1

    watcher = threading.Thread(target=watch_health)
    watcher.start()
    senders = [threading.Thread(target=storm, args=(k,)) for k in range(4)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    done.set()
    watcher.join()
    assert statuses == {200: STORM}
    assert outcome == {"started": 3, "over_budget": STORM - 3}
    assert len(health) >= 3 and set(health) == {200}, "healthz kept answering during the storm"
    c = server.client()
    recorded = c.get("/v1/alerts/decisions", params={"route": "storm", "limit": 1000}).json()["decisions"]
    assert Counter(d["decision"] for d in recorded) == {"started": 3, "over_budget": STORM - 3}
    assert all("budget 3" in d["reason"] for d in recorded if d["decision"] == "over_budget")
    assert len(c.get("/v1/runs", params={"runbook": "hello", "limit": 1000}).json()["runs"]) == 3
    metrics = c.get("/metrics").text
    assert 'runbook_alert_decisions_total{route="storm",decision="over_budget"} 997' in metrics
    assert f'runbook_webhook_deliveries_total{{source="alertmanager",outcome="accepted"}} {STORM}' in metrics


def test_cooldown_and_dedupe_key(project: Project, serve: Callable[..., ServerProcess]) -> None:
    server = guarded(project, serve)
    first = fire(server, {"alertname": "Cool", "host": "a", "disk": "sda"})
    assert first["decision"] == "started" and first["dedupe_key"] == "a"
    server.wait_state(first["run_id"], "succeeded")
    again = fire(server, {"alertname": "Cool", "host": "a", "disk": "sdb"}, starts="2026-11-22T03:00:00Z")
    assert again["decision"] == "cooled_down" and again["run_id"] == first["run_id"]
    other = fire(server, {"alertname": "Cool", "host": "b"})
    assert other["decision"] == "started"


def test_breaker_opens_after_failures_requires_approval_and_resets(project: Project, serve: Callable[..., ServerProcess]) -> None:
    server = guarded(project, serve)
    c = server.client()
    for host in ("bad1", "bad2"):
        d = fire(server, {"alertname": "Flaky", "host": host})
        assert d["decision"] == "started"
        server.wait_state(d["run_id"], "failed")
    gated = fire(server, {"alertname": "Flaky", "host": "good1"})
    assert gated["decision"] == "breaker_open" and "2 failed" in gated["reason"]
    view = server.wait_state(gated["run_id"], "waiting")
    assert view["next"]["action"] == "await_approval" and view["steps"][0]["state"] == "waiting"
    assert not (project.root / "hits.log").exists(), "nothing acted before the approval"
    assert c.post(f"/v1/runs/{gated['run_id']}/approve", json={"comment": "checked"}).status_code == 200
    server.wait_state(gated["run_id"], "succeeded")
    closed = fire(server, {"alertname": "Flaky", "host": "good2"})
    assert closed["decision"] == "started", "a success closes the breaker"
    server.wait_state(closed["run_id"], "succeeded")
    for host in ("bad3", "bad4"):
        server.wait_state(fire(server, {"alertname": "Flaky", "host": host})["run_id"], "failed")
    assert fire(server, {"alertname": "Flaky", "host": "good3"})["decision"] == "breaker_open"
    reset = c.post("/v1/alerts/routes/brk/reset")
    assert reset.status_code == 200 and reset.json()["decisions"][0]["decision"] == "breaker_reset"
    assert fire(server, {"alertname": "Flaky", "host": "good4"})["decision"] == "started"
    poll(lambda: (project.root / "hits.log").read_text().split() == ["good1", "good2", "good4"], what="the approved and unguarded runs")
