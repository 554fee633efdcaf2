"""Peak memory of one run against its number of steps (issue 19, must-show 5: a 5000-step run peaks under 50 MiB).

Usage (the venv's interpreter; see bench/README.md, "Memory per run")::

    python bench/memory_bench.py                    # N = 10, 100, 1000, 5000; 3 repetitions
    python bench/memory_bench.py --ns 10,5000 --reps 1
    python bench/memory_bench.py --trace 5000       # where the memory goes: tracemalloc inside one run

Each sample is ``runbook run bench-true --json`` of a generated runbook of N ``shell: ["true"]`` steps, in a fresh
project with an empty SQLite journal (the default store), run as a whole process and reaped with ``os.wait4``:
``ru_maxrss`` is its peak resident set (the ``true`` children are far smaller, and Linux reports the largest single
process of the tree). Before the measured runs of an N, one unmeasured run fills the benchmark's own compile cache,
as a user's first run does; that first run (``cold``: parse, compile and cache the runbook) is reported beside the
warm figures. Every run is checked: exit 0, ``succeeded`` with N succeeded steps in its ``--json`` view and in its
journal on disk.

A process's ``ru_maxrss`` starts from the peak of the process it was forked (or vfork-ed) from: a run spawned
directly by this benchmark, after it has parsed a 5000-step view, would report the benchmark's own peak if that
were larger. So every run is started by a small launcher (``python -I -S``, about 8 MiB) that forks and execs it
and reports the run's ``ru_maxrss`` from its own ``wait4``; the launcher's start is inside the wall time (a
constant, so the per-step figures do not see it).

``--trace N`` runs one warm N-step run under tracemalloc instead (``bench/_memtrace.py``) and prints the top
allocation sites near its peak of traced memory.

Exit status: 0 the largest N's warm peak is under ``--limit`` (50 MiB) or that N was not run; 1 it is not;
2 a run did not do its N steps.
"""

from __future__ import annotations

import argparse
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

from _measure import Sample, run_measured
from _systems import RUNBOOK_NAME, _runbook_prepare, _runbook_verify, clean_env

RESULTS = Path(__file__).resolve().parent / "results"
LIMIT_N = 5000  # the figure: a 5000-step run peaks under LIMIT_MIB


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", default="10,100,1000,5000", help="comma-separated step counts (default 10,100,1000,5000)")
    p.add_argument("--reps", type=int, default=3, help="measured (warm) runs per N (default 3)")
    p.add_argument("--limit", type=float, default=50.0, metavar="MIB", help=f"peak-memory limit at N={LIMIT_N} (default 50)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before one run is killed (default 600)")
    p.add_argument("--trace", type=int, metavar="N", help="instead: one traced N-step run; print where its memory goes")
    p.add_argument("--out", type=Path, help="results file (default bench/results/memory-<UTC time>.json)")
    args = p.parse_args(argv)
    args.ns = sorted({int(n) for n in args.ns.split(",") if n.strip()})
    return args


class NotDone(Exception):
    """A run did not do its N steps."""


# argv: RSS_FILE PROGRAM ARGS...; runs PROGRAM ARGS as a child, writes its ru_maxrss (KiB) to RSS_FILE, exits as it did
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def launched(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> Sample:
    """``argv`` run and measured through :data:`LAUNCHER`, its ``maxrss_mib`` the run's own peak."""
    rss_file = cwd / ".maxrss"
    sample = run_measured([sys.executable, "-I", "-S", "-c", LAUNCHER, str(rss_file), *argv], cwd=cwd, env=env, timeout=timeout)
    try:
        sample.maxrss_mib = int(rss_file.read_text(encoding="ascii")) / 1024
    except (OSError, ValueError):
        sample.maxrss_mib = float("nan")
    return sample


def one_run(n: int, scratch: Path, env: dict[str, str], timeout: float) -> Sample:
    """One ``runbook run`` of ``n`` steps in a fresh project, measured and checked."""
    work = Path(tempfile.mkdtemp(prefix=f"mem-{n}-", dir=scratch))
    argv = _runbook_prepare(work, n)
    sample = launched(argv, cwd=work, env=env, timeout=timeout)
    bad = _runbook_verify(sample, work, n)
    if bad is not None:
        raise NotDone(f"N={n}: {bad} (project kept in {work})")
    shutil.rmtree(work, ignore_errors=True)
    sample.stdout = ""  # the view of a 5000-step run is large; the check above has read it
    return sample


def measure(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> dict[int, dict[str, Any]]:
    """Per N: the cold run, then ``--reps`` warm ones."""
    rows: dict[int, dict[str, Any]] = {}
    true = launched([shutil.which("true") or "/bin/true"], cwd=scratch, env=env, timeout=60)
    for n in args.ns:
        cold = one_run(n, scratch, env, args.timeout)
        warm = [one_run(n, scratch, env, args.timeout) for _ in range(args.reps)]
        wall = statistics.median(s.wall_ms for s in warm)
        rows[n] = {
            "cold_rss_mib": cold.maxrss_mib,
            "cold_ms": cold.wall_ms,
            "rss_mib": max(s.maxrss_mib for s in warm),
            "median_ms": wall,
            "cpu_median_ms": statistics.median(s.cpu_ms for s in warm),
            "ms_per_step": wall / n,
            "launcher_floor_mib": true.maxrss_mib,
            "samples": [
                {"wall_ms": round(s.wall_ms, 2), "cpu_ms": round(s.cpu_ms, 2), "maxrss_mib": round(s.maxrss_mib, 2), "delay": s.delay}
                for s in warm
            ],
        }
        print(f"  N={n}: peak {rows[n]['rss_mib']:.1f} MiB (cold {cold.maxrss_mib:.1f}), {wall:.0f} ms", file=sys.stderr, flush=True)
    return rows


def report(args: argparse.Namespace, rows: dict[int, dict[str, Any]]) -> bool:
    """Print the table; True when the largest N's figure passes (or N = LIMIT_N was not run)."""
    print("\npeak RSS of `runbook run` of N `true` steps (whole process, SQLite journal); warm = compile cache filled")
    print(f"{'N':>6}  {'peak MiB':>8}  {'cold MiB':>8}  {'KiB/step':>8}  {'median ms':>9}  {'ms/step':>7}  {'marginal ms/step':>16}")
    ns = sorted(rows)
    base = ns[0]
    for n in ns:
        row = rows[n]
        per_step = (row["rss_mib"] - rows[base]["rss_mib"]) * 1024 / (n - base) if n != base else 0.0
        marginal = (row["median_ms"] - rows[base]["median_ms"]) / (n - base) if n != base else float("nan")
        row["kib_per_step_over_base"] = per_step
        row["marginal_ms_per_step"] = None if n == base else marginal
        print(f"{n:>6}  {row['rss_mib']:8.1f}  {row['cold_rss_mib']:8.1f}  {per_step:8.2f}  {row['median_ms']:9.0f}  "
              f"{row['ms_per_step']:7.3f}  {'' if n == base else f'{marginal:16.3f}'}")  # fmt: skip
    floor = rows[base].get("launcher_floor_mib")
    if floor is not None:
        print(f"  (a process started the same way that only runs `true` reports {floor:.1f} MiB)")
    if LIMIT_N not in rows:
        print(f"\n(N={LIMIT_N} not run: no verdict)")
        return True
    peak = rows[LIMIT_N]["rss_mib"]
    ok = peak < args.limit
    print(f"\n{'PASS' if ok else 'FAIL'}  peak memory of a {LIMIT_N}-step run: {peak:.1f} MiB (target < {args.limit:.0f} MiB)")
    return ok


def trace(n: int, scratch: Path, env: dict[str, str], timeout: float) -> int:
    """One traced run: the allocation sites live at the peak of traced memory."""
    out = scratch / "trace.txt"
    tenv = {**env, "RUNBOOK_BENCH_TRACE_OUT": str(out)}
    work = Path(tempfile.mkdtemp(prefix=f"trace-{n}-", dir=scratch))
    argv = _runbook_prepare(work, n)
    run_measured(argv, cwd=work, env=env, timeout=timeout)  # fill the compile cache, untraced
    work2 = Path(tempfile.mkdtemp(prefix=f"trace-{n}-", dir=scratch))
    argv = [sys.executable, str(Path(__file__).resolve().parent / "_memtrace.py"), *_runbook_prepare(work2, n)[3:]]
    sample = run_measured(argv, cwd=work2, env=tenv, timeout=timeout)
    if sample.code != 0:
        print(sample.stderr[-2000:], file=sys.stderr)
        return 2
    print(f"traced run of N={n}: ru_maxrss {sample.maxrss_mib:.1f} MiB (tracing itself adds to it)")
    print(out.read_text(encoding="utf-8") if out.exists() else "(no trace written)")
    return 0


def main(argv: list[str]) -> int:
    """Run the benchmark; see the module docstring."""
    args = parse_args(argv)
    env = clean_env()
    scratch = Path(tempfile.mkdtemp(prefix="runbook-memory-bench-"))
    env["RUNBOOK_CACHE_DIR"] = str(scratch / "compile-cache")
    try:
        if args.trace:
            return trace(args.trace, scratch, env, args.timeout)
        print(f"memory benchmark: N={','.join(map(str, args.ns))}, {args.reps} warm runs each; {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.2f}; {sys.executable}")  # fmt: skip
        started = time.time()
        try:
            rows = measure(args, scratch, env)
        except NotDone as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 2
        ok = report(args, rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = args.out or RESULTS / time.strftime("memory-%Y%m%dT%H%M%SZ.json", time.gmtime(started))
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": [sys.executable, *sys.argv], "runbook_name": RUNBOOK_NAME, "limit_mib": args.limit,
           "results": {str(n): row for n, row in rows.items()}, "passed": ok}  # fmt: skip
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
