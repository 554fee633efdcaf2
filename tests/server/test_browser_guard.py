"""The default server (no tokens, loopback) against web pages: DNS rebinding, cross-site requests, odd bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Project
from tests.server.conftest import HELLO
from tests.server.serverkit import ServerProcess, start_server

CONFIG = """
allowed_hosts: [runbook.internal, "*.ops.example"]
allowed_origins: ["https://console.ops.example"]
routes:
  - name: hook
    match: {alertname: Hook}
    runbook: hello
    params: {who: "{{ alert.labels.who }}"}
"""
HELLO_RUN = json.dumps({"runbook": "hello", "params": {"who": "csrf"}}).encode()
ALERT = json.dumps({"labels": {"alertname": "Hook", "who": "csrf"}}).encode()
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default: no tokens, every source without auth, loopback only; no workers (nothing must run)."""
    import importlib.util

    from tests.conftest import require

    require(importlib.util.find_spec("fastapi") is not None, "fastapi and uvicorn (pip install 'runbook[server]')")
    project = Project(tmp_path_factory.mktemp("browser") / "proj")
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    server = start_server(project, CONFIG, workers=0)
    yield server
    server.stop()


def count_runs(server: ServerProcess) -> int:
    return len(server.client(None).get("/v1/runs", params={"limit": 1000}).json()["runs"])


def send(server: ServerProcess, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Any:
    return server.client(None).request(method, path, content=body, headers=headers)


@pytest.mark.parametrize(("host", "status"), [
    ("evil.example", 400), ("evil.example:{port}", 400), ("127.0.0.1.evil.example", 400), ("", 400),
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST", 200), ("[::1]:{port}", 200),
    ("runbook.internal:{port}", 200), ("a.ops.example", 200), ("ops.example", 400),
], ids=["name", "name-port", "lookalike", "empty", "loopback-ip", "localhost", "case", "ipv6", "allowed", "wildcard", "wildcard-apex"])  # fmt: skip
def test_host_header_must_name_this_server(open_server: ServerProcess, host: str, status: int) -> None:
    """DNS rebinding: a page of evil.example re-resolved to 127.0.0.1 sends `Host: evil.example`."""
    h = host.format(port=open_server.port)
    get = send(open_server, "GET", "/v1/runs", {"host": h})
    assert get.status_code == status, get.text
    before = count_runs(open_server)
    post = send(open_server, "POST", "/v1/runs", {"host": h, **JSON}, HELLO_RUN)
    assert post.status_code == (400 if status == 400 else 201), post.text
    if status == 400:
        assert get.json()["error"]["type"] == "InvalidHost" and "allowed_hosts" in get.json()["error"]["hint"]
        assert count_runs(open_server) == before


@pytest.mark.parametrize(("origin", "status"), [
    ("https://evil.example", 403), ("null", 403), ("http://127.0.0.1:{port}", 403),
    ("https://console.ops.example", 200), ("https://CONSOLE.ops.example/", 200),
], ids=["foreign", "null", "self-not-listed", "allowed", "allowed-normalised"])  # fmt: skip
def test_browser_origins_are_refused_unless_configured(open_server: ServerProcess, origin: str, status: int) -> None:
    """A cross-site page (CSRF) sends an Origin header with every POST, and with every cross-origin fetch."""
    headers = {"origin": origin.format(port=open_server.port)}
    before = count_runs(open_server)
    alert = json.dumps({"labels": {"alertname": "Hook", "who": f"o{before}"}}).encode()  # a new alert each time (runs stay queued)
    for method, path, body in [("GET", "/v1/runs", None), ("POST", "/v1/runs", HELLO_RUN), ("POST", "/v1/alerts/generic", alert)]:
        r = send(open_server, method, path, {**headers, **JSON}, body)
        assert r.status_code == (status if method == "GET" else {403: 403, 200: 201 if "runs" in path else 200}[status]), r.text
        if status == 403:
            assert r.json()["error"]["type"] == "ForbiddenOrigin"
    assert count_runs(open_server) == before + (2 if status == 200 else 0)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                   "application/jsonx", "text/json"])  # fmt: skip
def test_bodies_must_be_declared_json(open_server: ServerProcess, ctype: str | None) -> None:
    """An HTML form can post text/plain or form bodies cross-site without a preflight; they are refused (415)."""
    headers = {"content-type": ctype} if ctype else {}
    before = count_runs(open_server)
    decisions = len(open_server.client(None).get("/v1/alerts/decisions").json()["decisions"])
    for path, body in [("/v1/runs", HELLO_RUN), ("/v1/alerts/generic", ALERT), ("/v1/alerts/alertmanager", b'{"alerts": []}')]:
        r = send(open_server, "POST", path, headers, body)
        assert r.status_code == 415, r.text
        assert r.json()["error"]["type"] == "UnsupportedMediaType"
    assert count_runs(open_server) == before
    assert len(open_server.client(None).get("/v1/alerts/decisions").json()["decisions"]) == decisions


def test_json_with_parameters_and_bodiless_posts_are_served(open_server: ServerProcess) -> None:
    c = open_server.client(None)
    started = c.post("/v1/runs", content=HELLO_RUN, headers={"content-type": "Application/JSON; charset=utf-8"})
    assert started.status_code == 201, started.text
    paused = c.post(f"/v1/runs/{started.json()['run_id']}/cancel")  # no body, no Content-Type
    assert paused.status_code == 200, paused.text


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/alerts/generic", "/v1/alerts/grafana", "/v1/runs/X/approve"])
@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "text/plain"])
def test_deep_json_is_refused_before_any_handler_whatever_the_content_type(open_server: ServerProcess, path: str, ctype: str) -> None:
    r = send(open_server, "POST", path, {"content-type": ctype}, b"[" * 100000 + b"]" * 100000)
    assert r.status_code == (415 if ctype == "text/plain" else 400), r.text
    if r.status_code == 400:
        assert r.json()["error"]["type"] == "InvalidJSON" and "nested" in r.json()["error"]["message"]
    assert "Traceback" not in open_server.log()
