"""Test kit for ``runbook serve``: a real server process on a free loopback port, and helpers to poll it.

Every process started here is a direct child, stopped by PID (SIGTERM, then SIGKILL after a deadline).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Project

__all__ = ["DATA", "ServerProcess", "dumps", "free_port", "parse_metrics", "poll", "start_server"]

DATA = Path(__file__).resolve().parent.parent / "data"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(fn: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.05, what: str = "condition") -> Any:
    """Call ``fn`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class ServerProcess:
    """A running ``runbook serve``."""

    project: Project
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    token: str | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = "default") -> httpx.Client:
        """An HTTP client (with the default API token unless ``token`` says otherwise; None: no token)."""
        tok = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=60.0, trust_env=False)
        self.clients.append(c)
        return c

    def log(self) -> str:
        """What the server wrote on stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def run_state(self, run_id: str) -> str:
        """The run's state through the API."""
        return str(self.client().get(f"/v1/runs/{run_id}").json()["state"])

    def wait_state(self, run_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the run until it is in one of ``states``; returns its view."""
        c = self.client()

        def check() -> dict[str, Any] | None:
            view = c.get(f"/v1/runs/{run_id}").json()
            return view if view.get("state") in states else None

        return poll(check, timeout=timeout, what=f"run {run_id} to be {'/'.join(states)}")  # type: ignore[no-any-return]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it to exit; SIGKILL after ``timeout``."""
        for c in self.clients:
            c.close()
        self.clients.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


def start_server(project: Project, config: str = "", *, workers: int = 2, env: dict[str, str] | None = None,
                 token: str | None = None, args: tuple[str, ...] = (), name: str = "server.yaml") -> ServerProcess:  # fmt: skip
    """Write ``config`` and start ``runbook serve`` in ``project``; returns once ``/healthz`` answers 200."""
    path = project.root / name
    path.write_text(textwrap.dedent(config).lstrip(), encoding="utf-8")
    port = free_port()
    log_path = project.root / f"serve-{port}.log"
    cmd = project.cmd("serve", "--config", str(path), "--listen", f"127.0.0.1:{port}", "--workers", str(workers), *args)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=project.root, env={**project.env, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log)
    server = ServerProcess(project, proc, port, log_path, token)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"runbook serve exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"runbook serve did not answer /healthz within 60s:\n{server.log()}")


def parse_metrics(text: str) -> dict[str, float]:
    """Strictly parse the Prometheus text format into ``{'name{labels}': value}``; fails on any bad line."""
    import re

    sample = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$'
    )
    out: dict[str, float] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        m = sample.match(line)
        assert m, f"not a valid sample line: {line!r}"
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in types or base in types, f"sample without # TYPE: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def dumps(doc: Any) -> bytes:
    """A compact JSON body."""
    return json.dumps(doc, separators=(",", ":")).encode()
