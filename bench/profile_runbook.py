"""Where does the time of ``runbook run`` go? Start-up imports, loading, and each step, in milliseconds.

Usage (same venv as the benchmark)::

    python bench/profile_runbook.py            # N=100 true steps
    python bench/profile_runbook.py -n 10 --cprofile

Prints four views of one workload (a fresh project per run, like the benchmark):

1. whole-process wall time (median of ``--reps``), for N and for N=1;
2. an instrumented run (``_phases.py``): every module the run needs imported
   first and timed as one block, then inclusive timers around the engine's,
   store's and shell step's functions, with calls and per-call microseconds;
3. ``python -X importtime``: import self-time summed by top-level package;
4. with ``--cprofile``: the top functions by own time (cProfile roughly doubles
   Python-heavy code, so read it for ranking, not for milliseconds).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import run_measured
from _systems import RUNBOOK_NAME, clean_env, runbook_yaml

HERE = Path(__file__).resolve().parent
CLI = ["-m", "runner", "run", RUNBOOK_NAME, "--json"]


def _env(scratch: Path) -> dict[str, str]:
    """The benchmark's environment, with a compile cache of the profile's own (as the benchmark has)."""
    return {**clean_env(), "RUNBOOK_CACHE_DIR": str(scratch / "compile-cache")}


def project(scratch: Path, n: int) -> Path:
    """A fresh project dir holding the N-step runbook and an empty ``.runbook/``."""
    root = Path(tempfile.mkdtemp(dir=scratch))
    (root / ".runbook").mkdir()
    (root / "runbooks").mkdir()
    (root / "runbooks" / f"{RUNBOOK_NAME}.yaml").write_text(runbook_yaml(n), encoding="utf-8")
    return root


def whole(scratch: Path, n: int, reps: int) -> float:
    """Median whole-process wall time (ms) of ``runbook run`` with N steps; fails loudly if a run fails."""
    times = []
    for _ in range(reps + 1):  # the first warms caches and is dropped
        sample = run_measured([sys.executable, *CLI], cwd=project(scratch, n), env=_env(scratch), timeout=600)
        if sample.code != 0 or json.loads(sample.stdout)["state"] != "succeeded":
            raise SystemExit(f"runbook run failed (exit {sample.code}): {sample.stderr[-500:]}")
        times.append(sample.wall_ms)
    return statistics.median(times[1:])


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(cwd.parent), capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr[-800:]}")
    return proc


def phases(scratch: Path, n: int) -> dict[str, object]:
    """The instrumented run's report (see ``_phases.py``)."""
    modules, report = scratch / "modules.json", scratch / "phases.json"
    _python([str(HERE / "_phases.py"), "--list-modules", str(modules), "--", *CLI[2:]], project(scratch, n))
    _python([str(HERE / "_phases.py"), "--modules", str(modules), "--report", str(report), "--", *CLI[2:]], project(scratch, n))
    result: dict[str, object] = json.loads(report.read_text(encoding="utf-8"))
    return result


def print_phases(report: dict[str, object], n: int) -> None:
    """The instrumented run as a table, slowest first."""
    print(f"\n== instrumented run, N={n} (inclusive wall time; nested timers overlap)")
    print(f"   imports of every module the run needs: {report['imports_s'] * 1000:7.1f} ms")  # type: ignore[operator]
    print(f"   runner.cli.run() after the imports:    {report['cli_run_s'] * 1000:7.1f} ms")  # type: ignore[operator]
    stats: dict[str, dict[str, float]] = report["stats"]  # type: ignore[assignment]
    print(f"   {'ms':>8} {'calls':>6} {'us/call':>9}  function")
    for name, s in sorted(stats.items(), key=lambda kv: -kv[1]["seconds"]):
        if s["seconds"] * 1000 >= 0.05:
            print(f"   {s['seconds'] * 1000:8.2f} {int(s['calls']):6d} {s['seconds'] * 1e6 / s['calls']:9.1f}  {name}")
    if report["missing"]:
        print(f"   (not found in this version, not timed: {', '.join(report['missing'])})")  # type: ignore[arg-type]


def importtime(scratch: Path, n: int, top: int = 18) -> None:
    """``-X importtime`` of one run: self time by top-level package, and the slowest single modules."""
    err = _python(["-X", "importtime", *CLI], project(scratch, n)).stderr
    rows = [(int(m[1]), int(m[2]), m[3]) for m in re.finditer(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", err)]
    by_pkg: Counter[str] = Counter()
    for self_us, _, name in rows:
        by_pkg[name.split(".")[0]] += self_us
    print(f"\n== python -X importtime: {len(rows)} modules, {sum(r[0] for r in rows) / 1000:.1f} ms self time in all"
          " (importtime itself adds overhead)")  # fmt: skip
    print("   by top-level package (self ms):  " + ", ".join(f"{k} {v / 1000:.1f}" for k, v in by_pkg.most_common(top)))
    print("   slowest modules (self ms): " + ", ".join(f"{name} {s / 1000:.1f}" for s, _, name in sorted(rows, reverse=True)[:top]))


def cprofile(scratch: Path, n: int, top: int = 30) -> None:
    """cProfile of one whole run, top functions by own time."""
    import pstats

    out = scratch / "run.prof"
    _python(["-m", "cProfile", "-o", str(out), *CLI], project(scratch, n))
    print(f"\n== cProfile, N={n}, top {top} by own time (profiler overhead inflates Python-level code)")
    pstats.Stats(str(out), stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main(argv: list[str]) -> int:
    """See the module docstring."""
    p = argparse.ArgumentParser(description="Profile `runbook run` of N `shell: [true]` steps.")
    p.add_argument("-n", type=int, default=100, help="steps (default 100)")
    p.add_argument("--reps", type=int, default=5, help="repetitions for the whole-process medians (default 5)")
    p.add_argument("--cprofile", action="store_true", help="also print a cProfile of one run")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runbook-profile-") as tmp:
        scratch = Path(tmp)
        t_n, t_1 = whole(scratch, args.n, args.reps), whole(scratch, 1, args.reps)
        print(f"== whole process, median of {args.reps}: N={args.n} {t_n:.1f} ms, N=1 {t_1:.1f} ms, "
              f"per extra step {(t_n - t_1) / max(args.n - 1, 1):.3f} ms")  # fmt: skip
        print_phases(phases(scratch, args.n), args.n)
        importtime(scratch, args.n)
        if args.cprofile:
            cprofile(scratch, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
