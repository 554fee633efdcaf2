"""The queuing and worker-throughput parts of ``store_bench.py``."""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _stores import Cluster, drop_store, fresh_store, quiet_moment, tree_cpu_seconds
from _systems import RUNBOOK_NAME, runbook_yaml

__all__ = ["queue_cost", "throughput"]

QUEUED = 300  # runs queued (after 30 unmeasured) for the queuing figure


def _project(scratch: Path, kind: str, steps: int) -> Path:
    work = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=scratch))
    (work / ".runbook").mkdir()
    (work / "runbooks").mkdir()
    (work / "runbooks" / f"{RUNBOOK_NAME}.yaml").write_text(runbook_yaml(steps), encoding="utf-8")
    return work


def _engine(work: Path, url: str) -> Any:
    from runner.catalog import Catalog, search_path
    from runner.engine import Engine
    from runner.plugin import PluginHost
    from runner.settings import Settings

    host = PluginHost()
    settings = Settings(paths=[str(work / "runbooks")], store_url=url, project_dir=work, actor="bench")
    return Engine(host, host.stores.open(url), Catalog.load(host.step_types, search_path(settings.paths)), settings)


def queue_cost(kind: str, scratch: Path, cluster: Cluster | None) -> dict[str, Any]:
    """Median time to queue one run of a 10-step runbook in this process (run created, its view read back)."""
    work = _project(scratch, kind, 10)
    url = fresh_store(kind, work, cluster)
    engine = _engine(work, url)
    try:
        for _ in range(30):
            engine.start(RUNBOOK_NAME, {}, execute=False)
        times = []
        for _ in range(QUEUED):
            t = time.perf_counter()
            engine.start(RUNBOOK_NAME, {}, execute=False)
            times.append(time.perf_counter() - t)
    finally:
        engine.store.close()
        drop_store(kind, url)
    return {"median_ms": statistics.median(times) * 1000, "p90_ms": sorted(times)[int(len(times) * 0.9)] * 1000}


def _once(kind: str, processes: int, args: argparse.Namespace, scratch: Path, cluster: Cluster | None,
          env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Queue ``args.runs`` runs, start ``processes`` workers, wait for every run to succeed; the figures."""
    from runner.store.records import RunState

    work = _project(scratch, kind, args.steps)
    url = fresh_store(kind, work, cluster)
    engine = _engine(work, url)
    store = engine.store
    ids = [engine.start(RUNBOOK_NAME, {}, execute=False).run_id for _ in range(args.runs)]
    calm = quiet_moment(timeout=120)
    server0 = tree_cpu_seconds(cluster.postmaster if cluster and kind == "postgresql" else None)
    argv = [sys.executable, "-m", "runner", "worker", "--workers", str(args.threads), "--poll", "0.1", "--log-level", "warning"]
    procs = [subprocess.Popen(argv, cwd=work, env={**env, "RUNBOOK_STORE": url}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]  # fmt: skip
    cpu = 0.0
    try:
        deadline = time.monotonic() + 600
        while store.count_runs().get((RUNBOOK_NAME, str(RunState.SUCCEEDED)), 0) < args.runs:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{kind} with {processes} workers: runs did not finish: {store.count_runs()}")
            time.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            _, _, usage = os.wait4(p.pid, 0)
            p.returncode = 0
            cpu += usage.ru_utime + usage.ru_stime
            if p.stderr:
                p.stderr.close()
    server = tree_cpu_seconds(cluster.postmaster if cluster and kind == "postgresql" else None) - server0
    started = min(store.events(rid, types=["run.started"], limit=1)[0].ts for rid in ids)
    finished = max(run.finished_at or 0.0 for run in store.list_runs(limit=args.runs + 10))
    store.close()
    drop_store(kind, url)
    return {"runs_per_s": args.runs / (finished - started), "seconds": finished - started, "started_quiet": calm,
            "worker_cpu_ms": cpu / args.runs * 1000, "server_cpu_ms": server / args.runs * 1000}  # fmt: skip


def throughput(kind: str, args: argparse.Namespace, scratch: Path, cluster: Cluster | None, env: dict[str, str]) -> dict[str, Any]:
    """Runs per second for each worker process count: median of ``args.reps`` interleaved rounds."""
    _once(kind, 1, argparse.Namespace(**{**vars(args), "runs": 20}), scratch, cluster, env)  # warm-up, not counted
    rounds: dict[int, list[dict[str, Any]]] = {p: [] for p in args.processes}
    reps = max(1, min(args.reps, 3))
    for rep in range(reps):
        for p in args.processes:
            print(f"  workers: {kind}, {p} process(es), round {rep + 1}/{reps}", file=sys.stderr, flush=True)
            rounds[p].append(_once(kind, p, args, scratch, cluster, env))
    out: dict[int, dict[str, Any]] = {}
    for p, rows in rounds.items():
        out[p] = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "started_quiet"}
        out[p]["started_quiet"] = sum(1 for r in rows if r["started_quiet"])
        out[p]["all"] = ", ".join(f"{r['runs_per_s']:.1f}" for r in rows)
    return {"by_processes": out}
