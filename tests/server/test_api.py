"""The HTTP API of a real ``runbook serve`` process: catalog, runs, events, steering, auth, OpenAPI, metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Project
from tests.server.conftest import HELLO, TOKEN
from tests.server.serverkit import ServerProcess, parse_metrics, poll, start_server

RUNBOOKS = {
    "gated.yaml": """
        name: gated
        steps:
          - id: ask
            approval: {message: "go ahead?", expires: 1h}
          - id: act
            shell: [sh, -c, 'echo acted']
    """,
    "slow.yaml": """
        name: slow
        steps:
          - id: first
            shell: [sleep, "1.5"]
          - id: second
            shell: ["true"]
    """,
    "later.yaml": """
        name: later
        steps:
          - id: pause-an-hour
            wait: {for: 1h}
          - id: after
            shell: ["true"]
    """,
    "needs-flag.yaml": """
        name: needs-flag
        params:
          flag: {type: string}
        steps:
          - id: check-flag
            shell: [test, -f, "{{ params.flag }}"]
    """,
}

CONFIG = """
listen: 127.0.0.1:0
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
  - {name: reader, token: env:T_READ, scopes: [read]}
  - {name: bot, token: env:T_BOT, scopes: [read, run]}
  - {name: alice, token: env:T_ALICE, scopes: [read, approve]}
"""
ENV = {"T_ADMIN": TOKEN, "T_READ": "reader-token-xyz", "T_BOT": "bot-token-xyz", "T_ALICE": "alice-token-xyz"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with tokens for the whole module (runs do not interfere: each test starts its own)."""
    import importlib.util

    from tests.conftest import require

    require(importlib.util.find_spec("fastapi") is not None, "fastapi and uvicorn (pip install 'runbook[server]')")
    project = Project(tmp_path_factory.mktemp("api") / "proj")
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    for name, text in RUNBOOKS.items():
        project.write(name, text)
    server = start_server(project, CONFIG, env=ENV, token=TOKEN)
    yield server
    server.stop()


def start(c: httpx.Client, runbook: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    r = c.post("/v1/runs", json={"runbook": runbook, "params": params or {}, **kw})
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


def hits(api: ServerProcess) -> list[str]:
    path = api.project.root / "hits.log"
    return path.read_text().split() if path.exists() else []


# ---------------------------------------------------------------------- catalog and starting


def test_catalog_lists_runbooks_with_params_schema(api: ServerProcess) -> None:
    c = api.client()
    body = c.get("/v1/runbooks").json()
    names = [rb["name"] for rb in body["runbooks"]]
    assert names == sorted(["hello", "gated", "slow", "later", "needs-flag"])
    hello = next(rb for rb in body["runbooks"] if rb["name"] == "hello")
    assert hello["params_schema"]["properties"]["who"]["pattern"] == "^[A-Za-z0-9.:_-]+$"
    assert hello["params_schema"]["required"] == ["who"]
    detail = c.get("/v1/runbooks/hello").json()
    assert detail["runbook"]["steps"][0]["id"] == "greet" and detail["content_hash"]
    missing = c.get("/v1/runbooks/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "RunbookNotFound"


@pytest.mark.parametrize(
    ("body", "status", "kind", "needle"),
    [
        ({"runbook": "hello", "params": {"who": "x; rm -rf /"}}, 422, "ParamsError", "who"),
        ({"runbook": "hello", "params": {"who": "ok", "extra": 1}}, 422, "ParamsError", "unknown param"),
        ({"runbook": "hello", "params": {}}, 422, "ParamsError", "who"),
        ({"runbook": "nope"}, 404, "RunbookNotFound", "nope"),
        ({"params": {}}, 422, "InvalidRequest", "runbook"),
        ({"runbook": "hello", "params": {"who": "a"}, "bogus": 1}, 422, "InvalidRequest", "bogus"),
    ],
    ids=["pattern", "unknown-param", "missing-param", "unknown-runbook", "no-runbook", "unknown-field"],
)
def test_start_refuses_bad_input_and_creates_nothing(api: ServerProcess, body: dict[str, Any], status: int, kind: str, needle: str) -> None:
    c = api.client()
    before = len(c.get("/v1/runs", params={"limit": 1000}).json()["runs"])
    r = c.post("/v1/runs", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == kind and needle in json.dumps(err)
    assert "Traceback" not in r.text
    assert len(c.get("/v1/runs", params={"limit": 1000}).json()["runs"]) == before


def test_start_with_wait_runs_on_a_worker_and_cli_sees_it(api: ServerProcess) -> None:
    c = api.client()
    r = c.post("/v1/runs", json={"runbook": "hello", "params": {"who": "viaapi"}, "wait": 30})
    assert r.status_code == 201
    view = r.json()
    assert view["state"] == "succeeded", view
    assert view["trigger"]["source"] == "api" and view["started_by"] == "admin"
    assert view["next"]["action"] == "none" and view["next"]["http"] is None
    cli = api.project.run("status", view["run_id"], "--json")
    assert cli.code == 0, cli
    status = cli.json()
    for key in ("run_id", "runbook", "state", "params", "started_by", "trigger", "created_at", "finished_at"):
        assert status[key] == view[key], key
    assert [(s["id"], s["state"], s["attempts"]) for s in status["steps"]] == [(s["id"], s["state"], s["attempts"]) for s in view["steps"]]
    assert "viaapi" in hits(api)


def test_runs_started_by_the_cli_are_visible_over_http(api: ServerProcess) -> None:
    res = api.project.run("run", "hello", "-p", "who=viacli", "--json")
    assert res.code == 0, res
    rid = res.json()["run_id"]
    view = api.client().get(f"/v1/runs/{rid}").json()
    assert view["state"] == "succeeded" and view["params"]["who"] == "viacli"
    short = api.client().get(f"/v1/runs/{rid[:10]}").json()
    assert short["run_id"] == rid


def test_idempotency_key_returns_the_same_run(api: ServerProcess) -> None:
    c = api.client()
    body = {"runbook": "hello", "params": {"who": "idem1"}, "wait": 30}
    first = c.post("/v1/runs", json=body, headers={"Idempotency-Key": "key-123"})
    second = c.post("/v1/runs", json=body, headers={"Idempotency-Key": "key-123"})
    assert first.status_code == 201 and second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json()["run_id"] == second.json()["run_id"]
    assert hits(api).count("idem1") == 1
    other = c.post("/v1/runs", json={"runbook": "slow"}, headers={"Idempotency-Key": "key-123"})
    assert other.status_code == 409, other.text


def test_list_runs_filters_and_pages(api: ServerProcess) -> None:
    c = api.client()
    ids = [start(c, "hello", {"who": f"page{i}"}, wait=30)["run_id"] for i in range(5)]
    seen: list[str] = []
    before = None
    while True:
        page = c.get(
            "/v1/runs", params={"runbook": "hello", "state": "succeeded", "limit": 2, **({"before": before} if before else {})}
        ).json()
        seen += [r["run_id"] for r in page["runs"]]
        assert all(r["runbook"] == "hello" and r["state"] == "succeeded" for r in page["runs"])
        before = page["next_before"]
        if before is None:
            break
    assert seen == sorted(seen, reverse=True), "newest first"
    assert set(ids) <= set(seen)
    assert c.get("/v1/runs", params={"state": "bogus"}).status_code == 422


def test_list_runs_by_time_and_starter(api: ServerProcess) -> None:
    admin, bot = api.client(), api.client("bot-token-xyz")
    earlier = start(admin, "hello", {"who": "before-bot"}, wait=30)
    mine = start(bot, "hello", {"who": "bot-filter"}, wait=30)
    theirs = start(admin, "hello", {"who": "after-bot"}, wait=30)

    def listed(**params: Any) -> list[str]:
        r = admin.get("/v1/runs", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return [run["run_id"] for run in r.json()["runs"]]

    assert mine["run_id"] in listed(started_by="bot") and earlier["run_id"] not in listed(started_by="bot")
    assert all(r["started_by"] == "bot" for r in admin.get("/v1/runs", params={"started_by": "bot"}).json()["runs"])
    assert set(listed(started_by="b*")) >= {mine["run_id"]} and mine["run_id"] not in listed(started_by="a*")
    since = listed(since=mine["created_at"])  # ISO with milliseconds, cut down: at or before the run's own time
    assert mine["run_id"] in since and theirs["run_id"] in since and earlier["run_id"] not in since
    assert mine["run_id"] not in listed(until=mine["created_at"]) and earlier["run_id"] in listed(until=mine["created_at"])
    assert {earlier["run_id"], mine["run_id"], theirs["run_id"]} <= set(listed(since="1h"))
    bad = admin.get("/v1/runs", params={"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]["message"], bad.text


# ---------------------------------------------------------------------- events


def test_events_as_json_and_as_resumable_server_sent_events(api: ServerProcess) -> None:
    c = api.client()
    rid = start(c, "hello", {"who": "sse"}, wait=30)["run_id"]
    events = c.get(f"/v1/runs/{rid}/events").json()["events"]
    types = [e["type"] for e in events]
    assert types[0] == "run.created" and types[-1] == "run.succeeded" and "step.started" in types
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    later = c.get(f"/v1/runs/{rid}/events", params={"after": 2}).json()["events"]
    assert [e["seq"] for e in later] == list(range(3, len(events) + 1))

    def read_sse(headers: dict[str, str]) -> tuple[list[int], list[str]]:
        ids, ends = [], []
        with c.stream("GET", f"/v1/runs/{rid}/events/stream", headers=headers) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in r.iter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "end":
                    ends.append(json.loads(line[6:])["state"])
        return ids, ends

    ids, ends = read_sse({})
    assert ids == [e["seq"] for e in events] and ends == ["succeeded"]
    resumed, ends = read_sse({"Last-Event-ID": "3"})
    assert resumed == [e["seq"] for e in events if e["seq"] > 3] and ends == ["succeeded"]


def test_sse_streams_a_run_while_it_executes(api: ServerProcess) -> None:
    c = api.client()
    rid = start(c, "slow")["run_id"]
    got = []
    with c.stream("GET", f"/v1/runs/{rid}/events/stream") as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"type"' in line:
                got.append(json.loads(line[6:])["type"])
    assert got[0] == "run.created" and got[-1] == "run.succeeded"
    assert got.count("step.finished") == 2


# ---------------------------------------------------------------------- steering


def test_pause_then_resume(api: ServerProcess) -> None:
    c = api.client()
    rid = start(c, "slow")["run_id"]
    poll(lambda: any(e["type"] == "step.started" for e in c.get(f"/v1/runs/{rid}/events").json()["events"]), what="first step to start")
    paused = c.post(f"/v1/runs/{rid}/pause", json={"reason": "maintenance window"})
    assert paused.status_code == 200
    view = api.wait_state(rid, "paused")
    assert [s["state"] for s in view["steps"]] == ["succeeded", "pending"]
    assert view["next"]["action"] == "resume"
    assert view["next"]["http"] == {
        "method": "POST",
        "path": f"/v1/runs/{rid}/resume",
        "body": {},
        "meaning": "queue the run for a worker again",
    }
    resumed = c.post(f"/v1/runs/{rid}/resume", json={"wait": 30})
    assert resumed.status_code == 200 and resumed.json()["state"] == "succeeded"
    again = c.post(f"/v1/runs/{rid}/resume", json={})
    assert again.status_code == 409 and again.json()["error"]["type"] == "InvalidState"


def test_cancel_a_waiting_run(api: ServerProcess) -> None:
    c = api.client()
    view = start(c, "later", wait=30)
    assert view["state"] == "waiting" and view["next"]["http"]["method"] == "GET"
    cancelled = c.post(f"/v1/runs/{view['run_id']}/cancel", json={"reason": "not needed"}).json()
    assert cancelled["state"] == "cancelled"


def test_approve_and_deny(api: ServerProcess) -> None:
    admin, alice, bot = api.client(), api.client("alice-token-xyz"), api.client("bot-token-xyz")
    view = start(bot, "gated", wait=30)
    assert view["state"] == "waiting" and view["next"]["action"] == "await_approval"
    assert [o["path"].rsplit("/", 1)[1] for o in view["next"]["http_options"]] == ["approve", "deny"]
    rid = view["run_id"]
    assert bot.post(f"/v1/runs/{rid}/approve", json={}).status_code == 403
    assert alice.post(f"/v1/runs/{rid}/approve", json={"comment": "ok"}).status_code == 200
    done = api.wait_state(rid, "succeeded")
    assert done["steps"][0]["output"]["approved_by"] == ["alice"]
    other = start(bot, "gated", wait=30)["run_id"]
    assert admin.post(f"/v1/runs/{other}/deny", json={"comment": "no"}).status_code == 200
    failed = api.wait_state(other, "failed")
    assert "denied by admin" in failed["reason"]


def test_failed_run_resumes_only_with_retry(api: ServerProcess) -> None:
    c = api.client()
    flag = api.project.root / "flag"
    view = start(c, "needs-flag", {"flag": str(flag)}, wait=30)
    assert view["state"] == "failed"
    rid = view["run_id"]
    assert view["next"]["action"] == "fix_and_retry" and view["next"]["http"]["path"] == f"/v1/runs/{rid}/retry"
    plain = c.post(f"/v1/runs/{rid}/resume", json={})
    assert plain.status_code == 400 and "retry" in plain.json()["error"]["hint"]
    flag.write_text("x")
    recorded = c.post(f"/v1/runs/{rid}/retry")  # records the retry and queues the run: a worker drives it
    assert recorded.status_code == 200, recorded.text
    done = api.wait_state(rid, "succeeded")
    assert done["steps"][0]["attempts"] == 1
    view = start(c, "needs-flag", {"flag": str(api.project.root / "missing")}, wait=30)
    legacy = c.post(f"/v1/runs/{view['run_id']}/resume", json={"retry": True, "wait": 30}).json()  # the one-call form still works
    assert legacy["state"] == "failed" and legacy["steps"][0]["attempts"] == 1


# ---------------------------------------------------------------------- auth, OpenAPI, health, metrics


@pytest.mark.parametrize(
    ("token", "method", "path", "status"),
    [
        (None, "GET", "/v1/runs", 401),
        ("wrong-token", "GET", "/v1/runs", 401),
        ("reader-token-xyz", "GET", "/v1/runs", 200),
        ("reader-token-xyz", "POST", "/v1/runs", 403),
        ("bot-token-xyz", "POST", "/v1/alerts/routes/none/reset", 403),
        (None, "GET", "/metrics", 401),
        (None, "GET", "/healthz", 200),
        (None, "GET", "/openapi.json", 200),
    ],
    ids=["missing", "wrong", "reader-reads", "reader-cannot-run", "bot-not-admin", "metrics-need-token", "healthz-open", "openapi-open"],
)
def test_tokens_and_scopes(api: ServerProcess, token: str | None, method: str, path: str, status: int) -> None:
    c = api.client(token)
    r = c.request(method, path, json={"runbook": "hello", "params": {"who": "nobody"}} if method == "POST" else None)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["error"]["type"] == "AuthError"
    assert "nobody" not in hits(api)


def test_openapi_documents_every_path(api: ServerProcess) -> None:
    doc = api.client(None).get("/openapi.json").json()
    paths = doc["paths"]
    expected = {
        "/v1/runbooks": {"get"}, "/v1/runbooks/{name}": {"get"}, "/v1/runs": {"get", "post"}, "/v1/runs/{run_id}": {"get"},
        "/v1/runs/{run_id}/events": {"get"}, "/v1/runs/{run_id}/events/stream": {"get"},
        **{f"/v1/runs/{{run_id}}/{verb}": {"post"} for verb in ("pause", "resume", "cancel", "approve", "deny")},
        "/v1/alerts/alertmanager": {"post"}, "/v1/alerts/grafana": {"post", "put"}, "/v1/alerts/pagerduty": {"post"},
        "/v1/alerts/generic": {"post"}, "/v1/alerts/decisions": {"get"}, "/v1/alerts/routes/{route}/reset": {"post"},
        "/healthz": {"get"}, "/metrics": {"get"},
    }  # fmt: skip
    for path, methods in expected.items():
        assert path in paths, path
        assert set(paths[path]) == methods, path
    ok = paths["/v1/runs"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/ApiRunView")
    view = doc["components"]["schemas"]["ApiRunView"]
    assert {"run_id", "state", "steps", "next"} <= set(view["properties"])
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_healthz_and_metrics(api: ServerProcess) -> None:
    c = api.client()
    start(c, "hello", {"who": "metrics"}, wait=30)
    health = c.get("/healthz").json()
    assert health["status"] == "ok" and health["workers"] == 2
    r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(r.text)
    assert samples['runbook_runs{runbook="hello",state="succeeded"}'] >= 1
    assert "runbook_queue_depth" in samples
    assert samples['runbook_step_duration_seconds_count{runbook="hello"}'] >= 1
    assert (
        samples['runbook_step_duration_seconds_bucket{runbook="hello",le="+Inf"}']
        == samples['runbook_step_duration_seconds_count{runbook="hello"}']
    )


def test_unknown_path_and_oversized_body_get_json_errors(api: ServerProcess) -> None:
    c = api.client()
    missing = c.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == 404
    big = c.post("/v1/runs", content=b'{"runbook": "' + b"x" * (2 * 1024 * 1024) + b'"}', headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["type"] == "PayloadTooLarge"
    deep = c.post("/v1/runs", content=b"[" * 5000 + b"]" * 5000, headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "nested" in deep.json()["error"]["message"]
    bad = c.post("/v1/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "InvalidJSON"
