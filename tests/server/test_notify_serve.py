"""Notifications from ``runbook serve`` and ``runbook worker``: durable across kill -9, once across workers,
and the storm guard's decisions (a route's breaker, refused runs) notify too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from harness.httpserver import HTTPTestServer, Recorded, Reply

from tests.conftest import Project
from tests.server.alertkit import am_alert, am_body
from tests.server.serverkit import ServerProcess, poll

BOOM = """
name: boom
params:
  n: {type: integer, default: 0}
steps:
  - id: break
    shell: [sh, -c, 'exit 3']
"""
CHECK = """
name: check
params:
  who: {type: string}
steps:
  - id: probe
    shell: [sh, -c, 'case "$1" in bad*) exit 1;; esac', sh, "{{ params.who }}"]
"""
AM = {"content-type": "application/json"}


def notifications(project: Project, *args: str) -> list[dict[str, object]]:
    res = project.run("notify", "list", "--json", *args)
    assert res.code == 0, res
    return res.json()["notifications"]  # type: ignore[no-any-return]


def test_kill_9_of_serve_between_the_event_and_the_delivery_delivers_once_after_restart(
    project: Project, serve: Callable[..., ServerProcess], http_server: HTTPTestServer
) -> None:
    project.write("boom.yaml", BOOM)
    http_server.route("/hook", Reply(200, delay=120), Reply(200))  # the first delivery hangs until the server is killed
    config = f"""
        notify:
          console_url: http://127.0.0.1:8080
          channels: {{hook: {{type: webhook, url: "{http_server.url("/hook")}", hmac_secret: env:HOOK_SECRET}}}}
          rules: [{{events: [failed], channels: [hook]}}]
          delivery: {{timeout: 60s, retry_initial: 0.2s}}
    """
    env = {"HOOK_SECRET": "hook-secret-value-9", "RUNBOOK_NOTIFY_LEASE_TTL": "2"}
    first = serve(textwrap.dedent(config), env=env)
    rid = first.client().post("/v1/runs", json={"runbook": "boom", "params": {}}).json()["run_id"]
    first.wait_state(rid, "failed")
    (inflight,) = http_server.wait_for("/hook", 1, timeout=30)
    first.stop(signal.SIGKILL)
    (row,) = notifications(project)
    assert row["state"] == "pending" and row["channels"]["hook"]["state"] == "pending", "sent, but not recorded as delivered"  # type: ignore[index]
    second = serve(textwrap.dedent(config), env=env)
    done = poll(lambda: [n for n in notifications(project) if n["state"] == "delivered"], timeout=30, what="delivery after restart")
    tries = http_server.requests_to("/hook")
    assert len(tries) == 2 and tries[0].headers["x-runbook-delivery"] == tries[1].headers["x-runbook-delivery"] == f"{row['key']}:hook"
    assert json.loads(tries[1].body)["run"]["url"] == f"http://127.0.0.1:8080/runs/{rid}"
    assert done[0]["channels"]["hook"] == {**done[0]["channels"]["hook"], "state": "sent", "attempts": 1, "detail": "HTTP 200"}  # type: ignore[index]
    time.sleep(3)  # longer than a lease: nothing else would send it again
    assert len(http_server.requests_to("/hook")) == 2
    assert inflight.body == tries[1].body
    second.stop()
    assert "hook-secret-value-9" not in first.log() + second.log()


def test_the_storm_guard_and_an_open_breaker_notify(
    project: Project, serve: Callable[..., ServerProcess], http_server: HTTPTestServer
) -> None:
    project.write("check.yaml", CHECK)
    http_server.route("/hook", Reply(200))
    server = serve(
        textwrap.dedent(f"""
        routes:
          - {{name: storm, match: {{alertname: Storm}}, runbook: check, params: {{who: "{{{{ alert.labels.host }}}}"}}, budget: {{runs: 1, per: 1h}}}}
          - {{name: brk, match: {{alertname: Flaky}}, runbook: check, params: {{who: "{{{{ alert.labels.host }}}}"}}, breaker: {{failures: 1, within: 1h}}}}
        notify:
          command: runbook --store postgresql://ops@db/runbook
          channels: {{hook: {{type: webhook, url: "{http_server.url("/hook")}"}}}}
          rules:
            - {{events: [storm_refused, breaker_open], routes: ["*"], channels: [hook]}}
            - {{events: [waiting_approval], routes: [brk], labels: {{team: "d*"}}, channels: [hook]}}
    """)
    )
    client = server.client(None)
    for i in range(4):  # one run, then three refusals: one message for the route within delivery.route_quiet
        r = client.post("/v1/alerts/alertmanager", content=am_body(am_alert({"alertname": "Storm", "host": f"h{i}"})), headers=AM)
        assert r.json()["decisions"][0]["decision"] == ("started" if i == 0 else "over_budget")
    bad = client.post(
        "/v1/alerts/alertmanager", content=am_body(am_alert({"alertname": "Flaky", "host": "bad1", "team": "db"})), headers=AM
    )
    server.wait_state(bad.json()["decisions"][0]["run_id"], "failed")
    again = am_body(am_alert({"alertname": "Flaky", "host": "ok2", "team": "db"}, starts="2026-11-22T02:00:00Z"))
    gated = client.post("/v1/alerts/alertmanager", content=again, headers=AM).json()["decisions"][0]
    assert gated["decision"] == "breaker_open"
    server.wait_state(gated["run_id"], "waiting")
    got = poll(lambda: (lambda docs: docs if len(docs) >= 3 else None)([r.json() for r in http_server.requests_to("/hook")]),
               timeout=30, what="three notifications")  # fmt: skip
    time.sleep(2)
    docs = sorted((r.json() for r in http_server.requests_to("/hook")), key=lambda d: d["kind"])
    assert [d["kind"] for d in docs] == ["breaker_open", "storm_refused", "waiting_approval"], got
    breaker, storm, waiting = docs
    assert storm["route"] == "storm" and storm["labels"] == {"alertname": "Storm", "host": "h1"} and storm["run"] is None
    assert storm["title"] == "route 'storm': storm guard refused a run (over_budget)"
    assert storm["commands"] == {"decisions": "runbook --store postgresql://ops@db/runbook alerts decisions --route storm"}
    assert breaker["run"]["id"] == gated["run_id"] and breaker["commands"]["reset"].endswith("alerts reset brk")
    assert waiting["run"]["id"] == gated["run_id"] and waiting["route"] == "brk" and waiting["labels"]["team"] == "db"
    assert waiting["commands"]["approve"] == f"runbook --store postgresql://ops@db/runbook approve {gated['run_id']} --step probe"
    states = Counter((n["kind"], n["state"]) for n in notifications(project))
    assert states[("storm_refused", "delivered")] == 1 and states[("storm_refused", "skipped")] == 2
    assert states[("failed", "skipped")] == 1, "the first Flaky run failed: no rule takes failed"


# ---------------------------------------------------------------------- two workers on one store


class Workers:
    """``runbook worker`` processes sharing the project's store, and a way to queue runs for them."""

    def __init__(self, project: Project, store_url: str | None) -> None:
        from runner.plugin import PluginHost
        from runner.settings import Settings

        self.project = project
        if store_url:
            project.env["RUNBOOK_STORE"] = store_url
        self.settings = Settings(paths=[str(project.runbooks)], store_url=store_url, project_dir=project.root, actor="tester")
        self.host = PluginHost()
        self.store = self.host.stores.open(self.settings.resolved_store_url())
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def queue(self, runbook: str, params: dict[str, object]) -> str:
        """A queued run (no executor): the workers pick it up."""
        from runner.catalog import Catalog, search_path
        from runner.engine import Engine

        catalog = Catalog.load(self.host.step_types, search_path(self.settings.paths))
        return Engine(self.host, self.store, catalog, self.settings).start(runbook, params, execute=False).run_id

    def start(self, name: str) -> None:
        log = open(self.project.root / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(self.project.cmd("worker", "--workers", "2", "--poll", "0.1"), cwd=self.project.root,
                                            env=self.project.env, stdout=subprocess.DEVNULL, stderr=log, text=True)  # fmt: skip
        log.close()

    def log(self, name: str) -> str:
        return (self.project.root / f"{name}.log").read_text()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def workers(request: pytest.FixtureRequest, project: Project) -> Iterator[Workers]:
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
    w = Workers(project, dsn)
    try:
        yield w
    finally:
        w.close()


def test_two_workers_on_one_store_never_both_deliver(workers: Workers, project: Project, http_server: HTTPTestServer) -> None:
    lock = threading.Lock()
    seen: Counter[str] = Counter()

    def slow_receiver(req: Recorded) -> Reply:
        with lock:
            seen[req.headers["x-runbook-delivery"]] += 1
        time.sleep(0.2)  # keeps each claim busy while the other worker looks for work
        return Reply(200)

    http_server.route("/hook", slow_receiver)
    project.write("boom.yaml", BOOM)
    config = project.root / ".runbook" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        textwrap.dedent(f"""
        notify:
          channels: {{hook: {{type: webhook, url: "{http_server.url("/hook")}"}}}}
          rules: [{{events: [failed], channels: [hook]}}]
    """)
    )
    workers.start("w1")
    workers.start("w2")
    ids = [workers.queue("boom", {"n": n}) for n in range(16)]
    poll(lambda: all(workers.store.get_run(r).state == "failed" for r in ids), timeout=90, what="16 failed runs")
    rows = poll(lambda: (lambda rs: rs if len(rs) == 16 and all(r.state == "delivered" for r in rs) else None)(
        workers.store.list_notifications(limit=100)), timeout=60, what="16 deliveries")  # fmt: skip
    time.sleep(1)
    assert sorted(seen) == sorted(f"{r.key}:hook" for r in rows) and set(seen.values()) == {1}, seen
    assert len(http_server.requests_to("/hook")) == 16
    sent_by = {name: workers.log(name).count(" sent to hook: HTTP 200") for name in ("w1", "w2")}
    assert sum(sent_by.values()) == 16 and all(sent_by.values()), f"both workers delivered a share: {sent_by}"
