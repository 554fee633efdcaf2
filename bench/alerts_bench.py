"""Benchmark alert intake of ``runbook serve``: durable deliveries per second, and delivery → first step latency.

Reproduce (from the repository, with the venv that has runbook and its ``server`` extra installed)::

    python bench/alerts_bench.py                       # 500 deliveries, 4 senders, 2 workers
    python bench/alerts_bench.py --deliveries 2000 --senders 8 --workers 4

It starts a real ``runbook serve`` on a free 127.0.0.1 port in a throwaway project (SQLite journal), with
one route (no budget) to a one-step runbook (``true``). Each delivery is one distinct Alertmanager alert, so
each is routed, recorded and creates a run before its 200 answer. Reported:

- ``accepted_per_s``: 200 answers per second of wall time (every answer is a durable delivery + decision + run);
- ``first_step_ms``: p50/p99 of the time from sending a delivery to its run's ``step.started`` event in the
  journal (the worker pool picking the run up and starting the step).

Prints one JSON document. Nothing is asserted: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

RUNBOOK = 'name: noop\nparams:\n  host: {type: string}\nsteps:\n  - id: act\n    shell: ["true"]\n'
CONFIG = """
sources:
  alertmanager: {auth: {bearer: env:BENCH_AM_TOKEN}}
routes:
  - name: bench
    match: {alertname: Bench}
    runbook: noop
    params: {host: "{{ alert.labels.host }}"}
"""
TOKEN = "bench-am-token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(i: int) -> bytes:
    alert = {"status": "firing", "labels": {"alertname": "Bench", "host": f"h{i}"}, "annotations": {},
             "startsAt": "2026-11-22T01:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{i:016x}"}  # fmt: skip
    return json.dumps(
        {"receiver": "rb", "status": "firing", "alerts": [alert], "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0}
    ).encode()


def _start(root: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    (root / "runbooks").mkdir(parents=True)
    (root / "runbooks" / "noop.yaml").write_text(RUNBOOK)
    (root / "server.yaml").write_text(CONFIG)
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")} | {"BENCH_AM_TOKEN": TOKEN}
    log = open(root / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--config", "server.yaml", "--listen", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--log-level", "warning"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"runbook serve did not start:\n{(root / 'serve.log').read_text()}")


def _send(url: str, indices: list[int], sent: dict[int, float], runs: dict[int, str], errors: list[str]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
        for i in indices:
            sent[i] = time.time()
            r = c.post("/v1/alerts/alertmanager", content=_body(i), headers=headers)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
                continue
            runs[i] = r.json()["decisions"][0]["run_id"]


def _first_step(url: str, run_id: str, deadline: float) -> float | None:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as c:
        while time.monotonic() < deadline:
            for ev in c.get(f"/v1/runs/{run_id}/events").json()["events"]:
                if ev["type"] == "step.started":
                    return datetime.fromisoformat(ev["ts"].replace("Z", "+00:00")).timestamp()
            time.sleep(0.05)
    return None


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str]) -> int:
    """Run the benchmark and print the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deliveries", type=int, default=500)
    ap.add_argument("--senders", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--workers", type=int, default=2, help="worker threads of the server")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rb-alerts-bench.") as tmp:
        proc, url = _start(Path(tmp) / "proj", args.workers)
        try:
            sent: dict[int, float] = {}
            runs: dict[int, str] = {}
            errors: list[str] = []
            parts = [list(range(k, args.deliveries, args.senders)) for k in range(args.senders)]
            t0 = time.monotonic()
            threads = [threading.Thread(target=_send, args=(url, part, sent, runs, errors)) for part in parts]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - t0
            deadline = time.monotonic() + 300
            latencies = [(started - sent[i]) * 1000 for i, rid in runs.items() if (started := _first_step(url, rid, deadline)) is not None]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    report: dict[str, Any] = {
        "deliveries": args.deliveries, "senders": args.senders, "workers": args.workers, "errors": len(errors),
        "accepted": len(runs), "wall_s": round(wall, 3), "accepted_per_s": round(len(runs) / wall, 1),
        "first_step_ms": {"p50": round(_pct(latencies, 50), 1), "p99": round(_pct(latencies, 99), 1), "n": len(latencies)} if latencies else None,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0 if not errors and len(latencies) == len(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
