"""Slow clients cannot hold the HTTP server (must-show 7).

1,000 connections each holding a half-sent request are all dropped within the header timeout (plus the
time to notice), a half-sent body within the body timeout, and ``/healthz`` answers throughout; past
``max_connections`` a new connection is closed at once.
"""

from __future__ import annotations

import selectors
import socket
import time
from typing import Any

import httpx

from tests.conftest import Project

HALF_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
HALF_BODY = b'POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"runbook"'


def open_slow(port: int, count: int, payload: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(payload)
        s.setblocking(False)
        socks.append(s)
    return socks


def closed_by_server(socks: list[socket.socket], deadline: float, on_tick: Any = None) -> tuple[int, float]:
    """Wait until the server closed every socket (EOF or reset) or ``deadline``; (how many closed, when the last did)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed, last = 0, 0.0
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                data = s.recv(4096)  # type: ignore[union-attr]
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            assert data == b"", f"a half-sent request got an answer: {data[:80]!r}"
            sel.unregister(s)
            closed += 1
            last = time.monotonic()
        if on_tick is not None:
            on_tick()
    sel.close()
    return closed, last


def test_a_thousand_slow_clients_are_dropped_while_healthz_answers(project: Project, serve: Any) -> None:
    server = serve("limits: {header_timeout: 3s, body_timeout: 3s}\n", workers=1)
    healthz: list[float] = []

    def check_health() -> None:
        if healthz and time.monotonic() - healthz[-1] < 0.25:
            return
        response = httpx.get(f"{server.url}/healthz", timeout=2.0, trust_env=False)
        assert response.status_code == 200, response.text
        healthz.append(time.monotonic())

    started = time.monotonic()
    socks = open_slow(server.port, 900, HALF_HEADERS)
    check_health()
    socks += open_slow(server.port, 100, HALF_BODY)
    opened = time.monotonic()
    check_health()
    try:
        closed, last = closed_by_server(socks, opened + 3.0 + 8.0, check_health)
        assert closed == len(socks), f"{len(socks) - closed} of {len(socks)} slow clients were still connected after 11 s"
        assert last - started < 3.0 + 8.0
        assert len(healthz) >= 8, "healthz was asked throughout"
    finally:
        for s in socks:
            s.close()
    check_health()
    print(f"1000 slow clients: opened in {opened - started:.2f}s, all dropped {last - started:.2f}s after the first, "
          f"{len(healthz)} healthz answers meanwhile")  # fmt: skip


def test_connections_past_the_cap_are_closed_at_once(project: Project, serve: Any) -> None:
    server = serve("limits: {header_timeout: 3s, max_connections: 20}\n", workers=1)
    held = open_slow(server.port, 20, HALF_HEADERS)
    time.sleep(0.3)  # let the server accept them all
    extra = open_slow(server.port, 5, HALF_HEADERS)
    try:
        closed, _ = closed_by_server(extra, time.monotonic() + 2.0)
        assert closed == 5, "connections past max_connections are closed at once (well before the header timeout)"
        closed, _ = closed_by_server(held, time.monotonic() + 3.0 + 8.0)
        assert closed == 20
    finally:
        for s in held + extra:
            s.close()
    assert httpx.get(f"{server.url}/healthz", timeout=5.0, trust_env=False).status_code == 200


def test_a_complete_request_on_a_kept_alive_connection_is_not_cut(project: Project, serve: Any) -> None:
    server = serve("limits: {header_timeout: 1s, body_timeout: 1s}\n", workers=1)
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.6)  # under uvicorn's keep-alive timeout, twice over the header timeout in total
        assert client.get("/healthz").status_code == 200
