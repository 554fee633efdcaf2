"""PostgreSQL against SQLite, side by side in one run: per-step cost, queuing cost, and worker throughput.

Usage (the venv's interpreter; see bench/README.md, "PostgreSQL and SQLite")::

    python bench/store_bench.py                        # a throwaway PostgreSQL cluster is started and removed
    python bench/store_bench.py --pg postgresql://...  # an existing server (a schema per journal, dropped after)
    python bench/store_bench.py --parts steps --reps 9

Parts:

``steps``   ``runbook run bench-true --json`` of N = 10 and 100 ``true`` steps, whole processes, on a fresh
            journal of each store per run, interleaved; per-step cost is the slope of the medians.
``queue``   queuing a run (``Engine.start(..., execute=False)``, as ``POST /v1/runs`` does), in this process:
            median over many runs.
``workers`` 200 queued 10-step runs executed by 1, 2 and 4 ``runbook worker`` processes on a fresh journal;
            throughput is runs / (last run finished - first run started), from the journal's own times.
``scaling`` steps-per-run scaling: ``runbook run`` of N = 10, 100, 1000 and 5000 steps on each store, whole
            processes; the cost of each step between one N and the next (does a step cost more in a long run?).
            Memory is not measured here (bounded memory per run is another part of issue 19, and a child's
            peak RSS as ``wait4`` reports it includes this benchmark process, which the child is forked from).

Exit status: 0 both targets pass (PostgreSQL per-step cost <= 1.3x SQLite's; 2 PostgreSQL worker processes
>= 1.8x one), 1 a target fails, 2 a run did not do its work.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import busy_seconds, own_cpu_seconds, run_measured
from _report import quiet
from _stores import Cluster, describe, drop_store, fresh_store, pg_cluster, quiet_moment, tree_cpu_seconds
from _systems import RUNBOOK_NAME, clean_env, runbook_yaml
from _workers import queue_cost, throughput
from run_bench import machine, write_results

STORES = ("sqlite", "postgresql")
STEP_LIMIT = 1.3  # PostgreSQL's per-step cost, as a multiple of SQLite's
SCALE_LIMIT = 1.8  # 2 worker processes against 1, on PostgreSQL
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg", metavar="URL", help="PostgreSQL server to use (default: start a throwaway cluster)")
    p.add_argument("--parts", default="steps,queue,workers,scaling", help="comma-separated subset of steps, queue, workers, scaling")
    p.add_argument("--scaling-ns", default="10,100,1000,5000", help="step counts of the scaling part (default 10,100,1000,5000)")
    p.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    p.add_argument("--ns", default="10,100", help="step counts of the per-step part (default 10,100)")
    p.add_argument("--runs", type=int, default=200, help="queued runs in the workers part (default 200)")
    p.add_argument("--steps", type=int, default=10, help="steps per queued run (default 10)")
    p.add_argument("--processes", default="1,2,4", help="worker process counts (default 1,2,4)")
    p.add_argument("--threads", type=int, default=2, help="threads per worker process (`runbook worker --workers`, default 2)")
    p.add_argument("--max-delay", type=float, default=0.03, metavar="SHARE", help="contended-sample threshold (see run_bench.py)")
    p.add_argument("--patience", type=float, default=120.0, metavar="SECONDS", help="time to spend replacing contended samples")
    p.add_argument("--out", type=Path, help="results file (default bench/results/store-<UTC time>.json)")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    args.ns = sorted({int(n) for n in args.ns.split(",")})
    args.processes = sorted({int(n) for n in args.processes.split(",")})
    args.scaling_ns = sorted({int(n) for n in args.scaling_ns.split(",")})
    return args


# ---------------------------------------------------------------------- per-step cost


class NotDone(Exception):
    """A run did not do its work."""


def _one_run(kind: str, n: int, scratch: Path, cluster: Cluster | None, env: dict[str, str]) -> Any:
    work = Path(tempfile.mkdtemp(prefix=f"{kind}-{n}-", dir=scratch))
    (work / ".runbook").mkdir()
    (work / "runbooks").mkdir()
    (work / "runbooks" / f"{RUNBOOK_NAME}.yaml").write_text(runbook_yaml(n), encoding="utf-8")
    url = fresh_store(kind, work, cluster)
    server = cluster.postmaster if cluster is not None and kind == "postgresql" else None
    try:
        calm = quiet_moment()
        before = tree_cpu_seconds(server)
        sample = run_measured([sys.executable, "-m", "runner", "run", RUNBOOK_NAME, "--json"], cwd=work,
                              env={**env, "RUNBOOK_STORE": url}, timeout=300)  # fmt: skip
        sample.server_cpu_ms = (tree_cpu_seconds(server) - before) * 1000  # type: ignore[attr-defined]
        if not calm:  # started while the machine was busy: not a quiet sample, whatever its own delay says
            sample.delay = max(sample.delay or 0.0, 1.0)
        view = json.loads(sample.stdout) if sample.code == 0 else {}
        done = [s for s in view.get("steps", []) if s.get("state") == "succeeded"]
        if view.get("state") != "succeeded" or len(done) != n:
            raise NotDone(f"{kind} N={n}: exit {sample.code}: {(sample.stderr or sample.stdout)[-500:]}")
        return sample
    finally:
        drop_store(kind, url)
        shutil.rmtree(work, ignore_errors=True)


def per_step(args: argparse.Namespace, scratch: Path, cluster: Cluster | None, env: dict[str, str]) -> dict[str, Any]:
    """Whole-process medians per store and N (quiet samples), the slopes and their ratio."""
    for kind in STORES:  # unmeasured warm-up: page cache, .pyc files, compile cache
        for n in args.ns:
            _one_run(kind, n, scratch, cluster, env)
    samples: dict[str, dict[int, list[Any]]] = {k: {n: [] for n in args.ns} for k in STORES}
    for rep in range(args.reps):
        print(f"  steps: repetition {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
        for n in args.ns:
            for kind in STORES:
                samples[kind][n].append(_one_run(kind, n, scratch, cluster, env))
    deadline = time.monotonic() + args.patience
    while time.monotonic() < deadline:
        lacking = [(k, n) for k in STORES for n in args.ns if len(quiet(samples[k][n], args.max_delay)) < args.reps]
        if not lacking:
            break
        for kind, n in lacking:
            samples[kind][n].append(_one_run(kind, n, scratch, cluster, env))
    out: dict[str, Any] = {}
    for kind in STORES:
        medians, cpu, counts = {}, {}, {}
        for n in args.ns:
            calm = quiet(samples[kind][n], args.max_delay)
            use = calm if len(calm) >= 3 else samples[kind][n]
            medians[n] = statistics.median(s.wall_ms for s in use)
            cpu[n] = statistics.median(s.cpu_ms + s.server_cpu_ms for s in samples[kind][n])  # CPU hardly depends on load
            counts[n] = f"{len(calm)}/{len(samples[kind][n])}"
        lo, hi = min(args.ns), max(args.ns)
        out[kind] = {"median_ms": medians, "quiet": counts, "ms_per_step": (medians[hi] - medians[lo]) / (hi - lo),
                     "cpu_ms": cpu, "cpu_ms_per_step": (cpu[hi] - cpu[lo]) / (hi - lo),
                     "all_ms": {n: [round(s.wall_ms, 2) for s in samples[kind][n]] for n in args.ns}}  # fmt: skip
    out["ratio"] = out["postgresql"]["ms_per_step"] / out["sqlite"]["ms_per_step"]
    out["cpu_ratio"] = out["postgresql"]["cpu_ms_per_step"] / out["sqlite"]["cpu_ms_per_step"]
    out["reliable"] = all(len(quiet(samples[k][n], args.max_delay)) >= args.reps for k in STORES for n in args.ns)
    return out


def scaling(args: argparse.Namespace, scratch: Path, cluster: Cluster | None, env: dict[str, str]) -> dict[str, Any]:
    """Whole-process medians per store and N (3 repetitions at most: the long runs take seconds each)."""
    reps = max(1, min(args.reps, 3))
    samples: dict[str, dict[int, list[Any]]] = {k: {n: [] for n in args.scaling_ns} for k in STORES}
    for rep in range(reps):
        print(f"  scaling: repetition {rep + 1}/{reps}", file=sys.stderr, flush=True)
        for n in args.scaling_ns:
            for kind in STORES:
                samples[kind][n].append(_one_run(kind, n, scratch, cluster, env))
    out: dict[str, Any] = {}
    for kind in STORES:
        medians = {n: statistics.median(s.wall_ms for s in samples[kind][n]) for n in args.scaling_ns}
        marginal = {f"{a}-{b}": (medians[b] - medians[a]) / (b - a) for a, b in itertools.pairwise(args.scaling_ns)}
        out[kind] = {"median_ms": medians, "ms_per_step_between": marginal}
    return out


# ---------------------------------------------------------------------- the run


def main(argv: list[str]) -> int:
    """Run the parts asked for and print the figures; see the module docstring."""
    args = parse_args(argv)
    info = machine()
    env = clean_env()
    scratch = Path(tempfile.mkdtemp(prefix="runbook-store-bench-"))
    env["RUNBOOK_CACHE_DIR"] = str(scratch / "compile-cache")
    load0 = (time.monotonic(), busy_seconds(), own_cpu_seconds())
    doc: dict[str, Any] = {"command": [sys.executable, *sys.argv], "machine": info, "parts": {}}
    try:
        with pg_cluster(args.pg) as cluster:
            doc["stores"] = {k: describe(k, cluster) for k in STORES}
            print(f"store benchmark: {', '.join(args.parts)}; {info['cpus']} CPUs, load {info['loadavg_start'][0]:.2f}")
            for kind in STORES:
                print(f"  {kind}: {doc['stores'][kind]['what']}")
            if "steps" in args.parts:
                doc["parts"]["steps"] = per_step(args, scratch, cluster, env)
            if "queue" in args.parts:
                doc["parts"]["queue"] = {k: queue_cost(k, scratch, cluster) for k in STORES}
            if "workers" in args.parts:
                doc["parts"]["workers"] = {k: throughput(k, args, scratch, cluster, env) for k in STORES}
            if "scaling" in args.parts:
                doc["parts"]["scaling"] = scaling(args, scratch, cluster, env)
    except NotDone as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    began, busy, own = load0
    end_busy = busy_seconds()
    info["loadavg_end"] = os.getloadavg()
    info["other_cpu_share"] = (None if busy is None or end_busy is None
                               else max(0.0, end_busy - busy - (own_cpu_seconds() - own)) / (time.monotonic() - began))  # fmt: skip
    return report(args, doc)


def report(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    """Print the figures and the targets; write the results file; the exit status."""
    parts, verdicts = doc["parts"], []
    if "steps" in parts:
        steps = parts["steps"]
        print("\nper-step cost: whole-process `runbook run` of N `true` steps, median ms (quiet/all samples)")
        for kind in STORES:
            row = steps[kind]
            cells = "  ".join(f"N={n} {row['median_ms'][n]:.1f} ({row['quiet'][n]})" for n in args.ns)
            print(f"  {kind:10s} {cells}  -> {row['ms_per_step']:.3f} ms/step; CPU {row['cpu_ms_per_step']:.3f} ms/step"
                  f"{' (runbook process + PostgreSQL server)' if kind == 'postgresql' else ''}")  # fmt: skip
        print(f"  CPU per step, PostgreSQL against SQLite: {steps['cpu_ratio']:.2f}x (less sensitive to other load than wall time)")
        verdicts.append(("PostgreSQL per-step cost", steps["ratio"], STEP_LIMIT, "<=", steps["reliable"]))
    if "queue" in parts:
        print("\nqueuing a run (Engine.start, execute=False), in-process median:")
        for kind in STORES:
            print(f"  {kind:10s} {parts['queue'][kind]['median_ms']:.2f} ms")
    if "workers" in parts:
        print(f"\nworkers: {args.runs} queued {args.steps}-step runs, `runbook worker --workers {args.threads}` processes")
        for kind in STORES:
            for p, row in parts["workers"][kind]["by_processes"].items():
                print(f"  {kind:10s} {p} process{'es' if p > 1 else '  '} {row['runs_per_s']:7.1f} runs/s  (rounds: {row['all']}, "
                      f"{row['started_quiet']} started quiet; CPU per run: workers {row['worker_cpu_ms']:.1f} ms, server "
                      f"{row['server_cpu_ms']:.1f} ms)")  # fmt: skip
        pg = parts["workers"]["postgresql"]["by_processes"]
        if 1 in pg and 2 in pg:
            verdicts.append(("2 PostgreSQL worker processes against 1", pg[2]["runs_per_s"] / pg[1]["runs_per_s"], SCALE_LIMIT, ">=", True))
    if "scaling" in parts:
        print("\nsteps-per-run scaling: whole-process `runbook run` of N steps, median ms; ms per step between two N")
        for kind in STORES:
            row = parts["scaling"][kind]
            cells = "  ".join(f"N={n} {row['median_ms'][n]:.0f}" for n in args.scaling_ns)
            between = "  ".join(f"{k}: {v:.3f}" for k, v in row["ms_per_step_between"].items())
            print(f"  {kind:10s} {cells}\n  {'':10s} ms/step {between}")
    print()
    ok = True
    for name, value, limit, op, reliable in verdicts:
        passed = value <= limit if op == "<=" else value >= limit
        ok = ok and passed
        star = "" if reliable else "*"
        print(f"{'PASS' if passed else 'FAIL'}{star}  {name}: {value:.2f}x (target {op} {limit}x)")
    share = doc["machine"].get("other_cpu_share")
    print(
        f"other processes used {share or 0:.0%} of a CPU on average during the benchmark; load {doc['machine']['loadavg_end'][0]:.2f} at the end"
    )
    out = args.out or RESULTS / f"store-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    write_results(out, doc)
    print(f"results: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
