"""Open-loop HTTP load: one Alertmanager delivery every ``1/rate`` seconds, whatever the answers.

Run as its own process by ``bench/server_bench.py`` (its CPU is then not the server's)::

    python bench/_loadgen.py --url http://127.0.0.1:8080/v1/alerts/alertmanager --token T --rate 300 \
        --duration 10 --prefix a1 --out sends.json

Each delivery is sent at its scheduled time on an idle kept-alive connection (a new connection is opened when
none is idle, so a slow server never delays the schedule: no coordinated omission). Latencies are measured
from the *scheduled* time. The client speaks HTTP/1.1 through :class:`asyncio.Protocol` with prebuilt
request bytes and sets ``TCP_NODELAY``, so at 1000/s it costs a few per cent of a core.

Writes one JSON document: per delivery the scheduled and answered wall-clock times (``time.time()``, comparable
with the journal's), the status and the first decision's ``run_id`` (or the floor's ``run_id``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["alert_body", "main"]

STARTS = "2026-12-01T00:00:00Z"


def alert_body(prefix: str, i: int) -> bytes:
    """One Alertmanager group notification with one distinct firing alert (as Alertmanager 0.25 writes it)."""
    labels = {"alertname": "BenchAlert", "instance": f"{prefix}-host-{i}:9100", "job": "node", "severity": "critical"}
    alert = {"status": "firing", "labels": labels, "annotations": {"summary": f"bench alert {i}"}, "startsAt": STARTS,
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.example/graph?g0.expr=up",
             "fingerprint": hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest()[:16]}  # fmt: skip
    group = {"receiver": "runbook", "status": "firing", "alerts": [alert], "groupLabels": {"alertname": "BenchAlert"},
             "commonLabels": labels, "commonAnnotations": alert["annotations"], "externalURL": "http://127.0.0.1:9093",
             "version": "4", "groupKey": f'{{}}:{{instance="{labels["instance"]}"}}', "truncatedAlerts": 0}  # fmt: skip
    return json.dumps(group, separators=(",", ":")).encode() + b"\n"


class _Conn(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self, client: _Client) -> None:
        self.client, self.buf, self.transport = client, b"", None
        self.pending: int | None = None  # index of the delivery in flight
        self.need: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, i: int, data: bytes) -> None:
        self.pending = i
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.pending is not None:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].decode("latin-1").split("\r\n")
                length = next((int(h.split(":", 1)[1]) for h in head[1:] if h.lower().startswith("content-length:")), 0)
                self.status = int(head[0].split()[1])
                self.buf, self.need = self.buf[end + 4 :], length
            if len(self.buf) < self.need:
                return
            body, self.buf = self.buf[: self.need], self.buf[self.need :]
            i, self.pending, self.need = self.pending, None, None
            self.client.answered(self, i, self.status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class _Client:
    def __init__(self, host: str, port: int, path: str, token: str, prefix: str, n: int) -> None:
        self.host, self.port, self.loop = host, port, asyncio.get_running_loop()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Alertmanager/0.25.0\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: ")  # fmt: skip
        self.requests = [head.encode() + str(len(b)).encode() + b"\r\n\r\n" + b for b in (alert_body(prefix, i) for i in range(n))]
        self.idle: list[_Conn] = []
        self.opened = 0
        self.sched = [0.0] * n
        self.ack: list[float | None] = [None] * n
        self.status: list[int | None] = [None] * n
        self.run_id: list[str | None] = [None] * n
        self.done = asyncio.Event()
        self.outstanding = 0
        self.errors: list[str] = []

    async def _conn(self) -> _Conn:
        if self.idle:
            return self.idle.pop()
        self.opened += 1
        _, proto = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        return proto

    async def fire(self, i: int, wall: float) -> None:
        self.sched[i] = wall
        self.outstanding += 1
        try:
            conn = await self._conn()
        except OSError as exc:
            self.errors.append(f"connect: {exc}")
            self._finish()
            return
        conn.send(i, self.requests[i])

    def answered(self, conn: _Conn, i: int, status: int, body: bytes) -> None:
        self.ack[i], self.status[i] = time.time(), status
        if status == 200:
            try:
                doc = json.loads(body)
                self.run_id[i] = doc["run_id"] if "run_id" in doc else doc["decisions"][0]["run_id"]
            except (ValueError, KeyError, IndexError, TypeError):
                self.errors.append(f"unexpected answer: {body[:200]!r}")
        else:
            self.errors.append(f"{status}: {body[:200]!r}")
        self.idle.append(conn)
        self._finish()

    def lost(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.pending is not None:
            self.errors.append(f"connection lost with delivery {conn.pending} in flight")
            conn.pending = None
            self._finish()

    def _finish(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.done.set()


async def _run(url: str, token: str, rate: float, duration: float, prefix: str, warm: int, drain: float) -> dict[str, Any]:
    u = urlparse(url)
    n = int(rate * duration)
    client = _Client(u.hostname or "127.0.0.1", u.port or 80, u.path, token, prefix, n)
    for _ in range(warm):  # open the usual connections before the clock starts
        client.idle.append(await client._conn())
    loop = asyncio.get_running_loop()
    mono0, wall0 = loop.time() + 0.05, time.time() + 0.05
    tasks: set[asyncio.Task[None]] = set()
    for i in range(n):
        due = mono0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(client.fire(i, wall0 + i / rate))
        tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(tasks.discard)
    if client.outstanding:
        client.done.clear()
        try:
            await asyncio.wait_for(client.done.wait(), drain)
        except TimeoutError:
            client.errors.append(f"{client.outstanding} deliveries unanswered after {drain:g}s")
    return {"rate": rate, "duration": duration, "n": n, "connections": client.opened, "sched": client.sched, "ack": client.ack,
            "status": client.status, "run_id": client.run_id, "errors": client.errors[:20], "error_count": len(client.errors)}  # fmt: skip


def main(argv: list[str]) -> int:
    """Send the load and write the record."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", default=os.environ.get("BENCH_TOKEN", ""))
    ap.add_argument("--rate", type=float, required=True, help="deliveries per second offered")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    ap.add_argument("--prefix", default="p", help="makes this run's alerts distinct from other runs'")
    ap.add_argument("--warm", type=int, default=16, help="connections opened before the first delivery")
    ap.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the last answers")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    t0 = os.times()
    record = asyncio.run(_run(args.url, args.token, args.rate, args.duration, args.prefix, args.warm, args.drain))
    t1 = os.times()
    record["client_cpu_s"] = round((t1.user - t0.user) + (t1.system - t0.system), 3)
    Path(args.out).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
