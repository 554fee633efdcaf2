"""Concurrency limits of a real ``runbook serve``: waiting clients hold no threads, caps on waiters and streams,
and the agent policy's ``max_concurrent_runs`` under concurrent starts."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Project
from tests.server.alertkit import generic_headers
from tests.server.conftest import HELLO, TOKEN
from tests.server.serverkit import ServerProcess, poll

CONFIG = """
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
sources:
  generic: {auth: {hmac_secret: env:GEN_SECRET}}
routes:
  - name: hook
    match: {alertname: Hook}
    runbook: hello
    params: {who: "{{ alert.labels.who }}"}
limits: {max_wait: 120, max_waiters: WAITERS, max_streams: 2}
"""
ENV = {"T_ADMIN": TOKEN, "GEN_SECRET": "generic-secret-123"}


def start_waiters(server: ServerProcess, n: int, results: list[Any]) -> list[threading.Thread]:
    """``n`` clients each starting a run with ``wait`` (no workers: the runs stay queued, the clients keep waiting)."""

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120, trust_env=False) as c:
            r = c.post("/v1/runs", json={"runbook": "hello", "params": {"who": f"w{i}"}, "wait": 120})
            results.append((r.status_code, r.json().get("state")))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def run_count(server: ServerProcess) -> int:
    return len(server.client().get("/v1/runs", params={"limit": 1000}).json()["runs"])


def test_waiting_clients_do_not_starve_health_or_webhooks(project: Project, serve: Callable[..., ServerProcess]) -> None:
    """45 clients waiting (more than the 40 threads of the pool) while health checks and webhooks keep answering."""
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    server = serve(CONFIG.replace("WAITERS", "64"), env=ENV, token=TOKEN, workers=0)
    results: list[Any] = []
    threads = start_waiters(server, 45, results)
    try:
        poll(lambda: run_count(server) == 45, what="45 waiting clients to have started their runs")
        with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as quick:  # a deadline, not a speed measurement
            assert quick.get("/healthz").json()["status"] == "ok"
            body = json.dumps({"labels": {"alertname": "Hook", "who": "hooked"}}).encode()
            hook = quick.post("/v1/alerts/generic", content=body, headers=generic_headers(ENV["GEN_SECRET"], body))
            assert hook.status_code == 200 and hook.json()["decisions"][0]["decision"] == "started", hook.text
            assert quick.get("/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert results == [], "nobody stopped waiting early"
    finally:
        server.stop()  # a stopping server answers its waiters at once
        for t in threads:
            t.join(timeout=60)
    assert Counter(results) == {(201, "queued"): 45}


def test_waiters_and_streams_are_capped_with_429(project: Project, serve: Callable[..., ServerProcess]) -> None:
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    server = serve(CONFIG.replace("WAITERS", "3"), env=ENV, token=TOKEN, workers=0)
    c = server.client()
    results: list[Any] = []
    threads = start_waiters(server, 3, results)
    try:
        poll(lambda: run_count(server) == 3, what="3 waiting clients")
        over = c.post("/v1/runs", json={"runbook": "hello", "params": {"who": "over"}, "wait": 10})
        assert over.status_code == 429 and over.headers["retry-after"] == "1", over.text
        assert over.json()["error"]["type"] == "TooManyRequests" and "max_waiters" in over.json()["error"]["message"]
        assert run_count(server) == 3, "a refused waiter starts nothing"
        rid = c.post("/v1/runs", json={"runbook": "hello", "params": {"who": "nowait"}}).json()["run_id"]
        assert c.post(f"/v1/runs/{rid}/resume", json={"wait": 10}).status_code == 429
        streams = [server.client() for _ in range(3)]
        with (
            streams[0].stream("GET", f"/v1/runs/{rid}/events/stream") as one,
            streams[1].stream("GET", f"/v1/runs/{rid}/events/stream") as two,
        ):
            assert one.status_code == two.status_code == 200
            third = streams[2].get(f"/v1/runs/{rid}/events/stream")
            assert third.status_code == 429 and "max_streams" in third.json()["error"]["message"]

        def stream_opens() -> bool:
            with streams[2].stream("GET", f"/v1/runs/{rid}/events/stream") as again:
                return again.status_code == 200

        poll(stream_opens, what="a stream slot to be free again once the clients went away")
    finally:
        server.stop()
        for t in threads:
            t.join(timeout=60)
    assert Counter(results) == {(201, "queued"): 3}


POLICY = """
max_concurrent_runs: 1
allow: [hello]
"""


def test_agent_concurrency_limit_holds_under_concurrent_starts(project: Project, serve: Callable[..., ServerProcess]) -> None:
    """20 agent starts at once with ``max_concurrent_runs: 1``: one run, 19 refusals (the engine's start lock)."""
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    policy = project.root / "policy.yaml"
    policy.write_text(POLICY)
    config = f"""
        tokens:
          - {{name: admin, token: env:T_ADMIN, scopes: [admin]}}
          - {{name: bot, token: env:T_AGENT, scopes: [agent]}}
        agent_policy: {policy}
    """
    server = serve(config, env={"T_ADMIN": TOKEN, "T_AGENT": "agent-token-abc123"}, token=TOKEN, workers=0)
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def start(i: int) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer agent-token-abc123"}, timeout=60, trust_env=False) as c:
            barrier.wait()
            r = c.post("/v1/runs", json={"runbook": "hello", "params": {"who": f"a{i}"}}, headers={"Idempotency-Key": str(uuid.uuid4())})
            statuses.append(r.status_code)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert run_count(server) == 1
    assert Counter(statuses) == {201: 1, 403: 19}
