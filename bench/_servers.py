"""The two servers ``bench/server_bench.py`` compares: ``runbook serve`` and the floor, as child processes.

Each is started in its own scratch directory, on a free loopback port, and stopped by PID. Both report, after
a load, when each delivery's first step (the floor: its ``true``) started and whether it ran.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FLOOR", "RUNBOOK", "RUNBOOK_2P", "SYSTEMS", "Server", "cpu_seconds", "run_delay", "start"]

BENCH = Path(__file__).resolve().parent
TOKEN = "bench-alertmanager-token"
RUNBOOK = "runbook"
RUNBOOK_2P = "runbook-2p"
FLOOR = "floor"
SYSTEMS = (FLOOR, RUNBOOK, RUNBOOK_2P)
"""``runbook-2p``: ``runbook serve --workers 0`` (intake only) beside one ``runbook worker`` process on the same
journal: two interpreters, so intake and execution do not share one GIL."""

NOOP = 'name: noop\nparams:\n  host: {type: string}\nsteps:\n  - id: act\n    shell: ["true"]\n'
CONFIG = """\
sources:
  alertmanager: {auth: {bearer: env:BENCH_AM_TOKEN}}
routes:
  - name: bench
    source: alertmanager
    match: {alertname: BenchAlert}
    runbook: noop
    params: {host: "{{ alert.labels.instance }}"}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of its reaped children (the ``true`` processes it spawned)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_delay(pid: int) -> float:
    """Seconds ``pid``'s threads were ready to run but waited for a CPU (``/proc/PID/schedstat``, all threads)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


@dataclass
class Server:
    """A started server."""

    system: str
    root: Path
    proc: subprocess.Popen[bytes]
    url: str
    journal: Path
    log: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        """The server's process and its separate worker processes."""
        return [self.proc.pid, *(p.pid for p in self.workers)]

    @property
    def intake(self) -> str:
        """The Alertmanager webhook URL."""
        return f"{self.url}/v1/alerts/alertmanager"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s (the worker processes first)."""
        for proc in [*self.workers, self.proc]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def first_steps(self, run_ids: list[str]) -> dict[str, float]:
        """When the first step of each run started (wall clock), for those that started."""
        if self.system == FLOOR:
            with urllib.request.urlopen(f"{self.url}/starts", timeout=30) as r:
                starts: dict[str, float] = json.loads(r.read())
            return {rid: starts[rid] for rid in run_ids if rid in starts}
        out: dict[str, float] = {}
        with sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=30) as c:
            for i in range(0, len(run_ids), 500):
                chunk = run_ids[i : i + 500]
                rows = c.execute(f"SELECT run_id, MIN(ts) FROM events WHERE type='step.started' AND run_id IN ({','.join('?' * len(chunk))})"
                                 " GROUP BY run_id", chunk)  # fmt: skip
                out.update({r[0]: r[1] for r in rows})
        return out

    def finished(self, run_ids: list[str]) -> int:
        """How many of the runs finished their step (runbook: run ``succeeded``; floor: ``true`` spawned)."""
        if self.system == FLOOR:
            return len(self.first_steps(run_ids))
        for worker in self.workers:
            if worker.poll() is not None:
                raise SystemExit(f"the worker process exited with {worker.returncode}")
        done = 0
        with sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=30) as c:
            for i in range(0, len(run_ids), 500):
                chunk = run_ids[i : i + 500]
                q = f"SELECT COUNT(*) FROM runs WHERE state='succeeded' AND id IN ({','.join('?' * len(chunk))})"
                done += c.execute(q, chunk).fetchone()[0]
        return done


def _wait_healthy(server: Server) -> Server:
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.system} exited with {server.proc.returncode}:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.05)
    server.proc.kill()
    raise SystemExit(f"{server.system} did not answer /healthz:\n{server.log.read_text()[-3000:]}")


def start(system: str, root: Path, *, workers: int, history: Path | None, extra_args: tuple[str, ...] = ()) -> Server:
    """Start ``system`` in ``root`` (a fresh directory); ``history``: a journal file to start from (runbook)."""
    root.mkdir(parents=True)
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")} | {"BENCH_AM_TOKEN": TOKEN, "BENCH_TOKEN": TOKEN}
    log = root / "server.log"
    if system not in SYSTEMS:
        raise SystemExit(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")
    if system == FLOOR:
        journal = root / "floor.db"
        cmd = [sys.executable, str(BENCH / "floor_server.py"), "--listen", f"127.0.0.1:{port}", "--db", str(journal),
               "--workers", str(workers)]  # fmt: skip
    else:
        (root / "runbooks").mkdir()
        (root / "runbooks" / "noop.yaml").write_text(NOOP)
        (root / "server.yaml").write_text(CONFIG)
        journal = root / ".runbook" / "journal.db"
        journal.parent.mkdir()
        if history is not None:
            shutil.copyfile(history, journal)
            with open(journal, "rb") as f:  # written back now: the server's first fsync would wait for the whole copy
                os.fsync(f.fileno())
        env["RUNBOOK_CACHE_DIR"] = str(root / "cache")
        serve_workers = 0 if system == RUNBOOK_2P else workers
        cmd = [sys.executable, "-m", "runner", "serve", "--config", "server.yaml", "--listen", f"127.0.0.1:{port}",
               "--workers", str(serve_workers), "--log-level", "warning", *extra_args]  # fmt: skip
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=f)
    server = _wait_healthy(Server(system, root, proc, f"http://127.0.0.1:{port}", journal, log))
    if system == RUNBOOK_2P:
        with open(root / "worker.log", "wb") as f:
            server.workers.append(subprocess.Popen([sys.executable, "-m", "runner", "worker", "--workers", str(workers), "--log-level",
                                                    "warning"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=f))  # fmt: skip
    return server
