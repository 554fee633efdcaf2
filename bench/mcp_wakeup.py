"""Benchmark the wake-up of a 5 s heartbeat agent over MCP: Streamable HTTP (a persistent ``runbook serve``)
against stdio (``runbook mcp`` spawned per wake-up).

Reproduce (from the repository, with the venv that has runbook and its ``server`` and ``agent`` extras)::

    python bench/mcp_wakeup.py                 # 30 wake-ups per transport
    python bench/mcp_wakeup.py --wakeups 100 --out mcp.json

One wake-up is what a heartbeat agent does each time it wakes: open an MCP session with the SDK's own client
(``initialize``), make one tool call (``get_run`` of a run it drives, the cursor it then follows), and close the
session. It is timed from the first byte the client sends (for stdio: from spawning the server process) until
the session is closed. Over HTTP the server stays up (started once, before the measured wake-ups; the first,
warm-up wake-up is not counted) and every wake-up is a new MCP session with a bearer token; over stdio every
wake-up spawns ``python -m runner mcp`` (the venv's interpreter, never a shim).

Prints one JSON document (``p50_ms``, ``p95_ms``, ``max_ms`` per transport) and, with ``--target-ms``
(default 1000), exits 1 when the HTTP p95 is over it. Nothing else is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

RUNBOOK = "name: beat\nsteps:\n  - {id: one, shell: ['true']}\n  - {id: gate, approval: {message: go?}}\n"
TOKEN = "bench-agent-token-0123456789abcdef"
CONFIG = "tokens:\n  - {name: agent, token: env:RB_BENCH_TOKEN, scopes: [agent]}\nagent_policy: policy.yaml\n"
POLICY = "runbooks:\n  beat: {agents_may_read: true}\n"
"""The run an agent follows was started by a person here: the policy lets agents read it (without a policy file an
agent reads only the runs it started)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env.update(RUNBOOK_ACTOR="bench", RB_BENCH_TOKEN=TOKEN, PYTHONUNBUFFERED="1", RUNBOOK_AGENT_POLICY=str(root / "policy.yaml"))
    return env


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _wake_http(url: str, run_id: str) -> float:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    start = time.perf_counter()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30.0, trust_env=False)
    async with http, streamable_http_client(url, http_client=http) as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        result = await session.call_tool("get_run", {"run_id": run_id})
        assert not result.is_error and result.structured_content["next"]["action"] == "await_approval", result
    return time.perf_counter() - start


async def _wake_stdio(root: Path, run_id: str) -> float:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    start = time.perf_counter()
    params = StdioServerParameters(command=sys.executable, args=["-m", "runner", "mcp"], env=_env(root), cwd=str(root))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("get_run", {"run_id": run_id})
        assert not result.is_error and result.structured_content["next"]["action"] == "await_approval", result
    return time.perf_counter() - start


def _serve(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    (root / "server.yaml").write_text(CONFIG)
    log = open(root / "serve.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--config", "server.yaml", "--listen", f"127.0.0.1:{port}",
                             "--workers", "0", "--log-level", "warning"], cwd=root, env=_env(root), stdout=subprocess.DEVNULL,
                            stderr=log)  # fmt: skip
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/mcp"
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"runbook serve did not start:\n{(root / 'serve.log').read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _summary(samples: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in samples]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(_percentile(ms, 0.95), 1),
            "max_ms": round(max(ms), 1), "mean_ms": round(statistics.fmean(ms), 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure, print the JSON report, and exit 1 if the HTTP p95 is over the target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wakeups", type=int, default=30, help="wake-ups per transport (default 30)")
    parser.add_argument("--target-ms", type=float, default=1000.0, help="HTTP p95 target (default 1000)")
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rb-mcp-bench-") as tmp:
        root = Path(tmp)
        (root / "runbooks").mkdir()
        (root / "runbooks" / "beat.yaml").write_text(RUNBOOK)
        (root / "policy.yaml").write_text(POLICY)
        started = subprocess.run([sys.executable, "-m", "runner", "run", "beat", "--json"], cwd=root, env=_env(root),
                                 capture_output=True, text=True, check=False)  # fmt: skip
        run_id = json.loads(started.stdout)["run_id"]
        proc, url = _serve(root)
        try:
            anyio.run(_wake_http, url, run_id)  # warm-up: the server's first session starts its MCP machinery
            http = [anyio.run(_wake_http, url, run_id) for _ in range(args.wakeups)]
        finally:
            _stop(proc)
        stdio = [anyio.run(_wake_stdio, root, run_id) for _ in range(args.wakeups)]
    report = {
        "bench": "mcp_wakeup", "when": datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_1m": os.getloadavg()[0], "wakeups": args.wakeups,
        "http": _summary(http), "stdio": _summary(stdio), "target_ms": args.target_ms,
    }  # fmt: skip
    report["http_p95_within_target"] = report["http"]["p95_ms"] <= args.target_ms
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["http_p95_within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
