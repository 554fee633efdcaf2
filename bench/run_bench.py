"""Benchmark ``runbook run`` against the raw floor, pyinfra and Ansible: N ``true`` steps, whole processes.

Usage (from the repository, with the venv that has runbook installed)::

    python bench/run_bench.py            # 5 repetitions of N = 1, 10, 100
    python bench/run_bench.py --quick    # 3 repetitions; Ansible only at N = 1, 10

Every run is a fresh process in a fresh directory, measured from spawn to reap
(wall time, CPU time and peak RSS via ``os.wait4``), and checked to have really
run its N steps. Systems are interleaved within each repetition so drift in
machine load hits them alike. Prints a table, one PASS/FAIL line per issue-3
target, and writes the figures to ``bench/results/``. Exit status: 0 all targets
pass, 1 a target fails, 2 a run did not do its work (nothing is reported then).
See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import Sample, busy_seconds, own_cpu_seconds, run_measured
from _report import analyse, format_table, quiet, targets
from _systems import System, available_systems

ALL_SYSTEMS = ("raw", "runbook", "runbook-nocache", "pyinfra", "ansible")
TARGET_SYSTEMS = ("raw", "runbook")  # the targets compare these two; the peers are context
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_ANSIBLE_MAX_N = 10  # Ansible takes ~0.4 s per task here; --quick spares it the 100-task runs


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="Benchmark `runbook run` of N `shell: [true]` steps against the raw floor and peers.")
    p.add_argument("--quick", action="store_true", help="3 repetitions and Ansible only up to N=10 (about 30 s)")
    p.add_argument("--reps", type=int, help="repetitions per system and N (default 5, or 3 with --quick)")
    p.add_argument("--ns", default="1,10,100", help="comma-separated step counts (default 1,10,100)")
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS), help=f"comma-separated subset of {', '.join(ALL_SYSTEMS)}")
    p.add_argument("--peers-bin", action="append", default=[], type=Path, metavar="DIR",
                   help="another bin/ directory to look for pyinfra and ansible-playbook in (repeatable; also "
                        "RUNBOOK_BENCH_PEERS_BIN, os.pathsep-separated). The venv's own bin/ is always searched first.")  # fmt: skip
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before one run is killed (default 600)")
    p.add_argument("--max-delay", type=float, default=0.03, metavar="SHARE",
                   help="a sample whose process waited for a CPU longer than this share of its wall time is contended "
                        "(Linux schedstat); medians use the quiet samples (default 0.03)")  # fmt: skip
    p.add_argument("--patience", type=float, metavar="SECONDS",
                   help="extra time to spend re-running the floor's and runbook's contended samples until each N has "
                        "--reps quiet ones (default 300, or 60 with --quick; 0 to take what the plan gives)")  # fmt: skip
    p.add_argument("--out", type=Path, help="results file (default bench/results/bench-<UTC time>.json)")
    args = p.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 5)
    args.patience = args.patience if args.patience is not None else (60.0 if args.quick else 300.0)
    args.ns = sorted({int(n) for n in args.ns.split(",") if n.strip()})
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    env_dirs = os.environ.get("RUNBOOK_BENCH_PEERS_BIN", "")
    args.peers_bin += [Path(d) for d in env_dirs.split(os.pathsep) if d]
    if args.reps < 1 or not args.ns or min(args.ns) < 1:
        p.error("--reps and every N must be at least 1")
    return args


def plan(systems: list[System], ns: list[int], reps: int, quick: bool) -> list[tuple[int, int, System]]:
    """(repetition, N, system) in execution order: systems interleaved inside each repetition and N."""
    order = []
    for rep in range(reps):
        for n in ns:
            for system in systems:
                if quick and system.name == "ansible" and n > QUICK_ANSIBLE_MAX_N:
                    continue
                order.append((rep, n, system))
    return order


class NotDone(Exception):
    """A run exited without doing its N steps: its figures would measure an error."""


def measure_once(system: System, n: int, scratch: Path, timeout: float) -> Sample:
    """One run of ``system`` with ``n`` steps in a fresh directory, checked to have done its work."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{system.name}-{n}-", dir=scratch))
    argv = system.prepare(workdir, n)
    sample = run_measured(argv, cwd=workdir, env=system.env, timeout=timeout)
    problem = system.verify(sample, workdir, n)
    if problem is not None:
        raise NotDone(f"{system.name} with N={n} did not run its {n} steps: {problem}\n"
                      f"  command: {' '.join(argv)}\n  in {workdir} (kept for inspection)")  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    return sample


def run_all(systems: list[System], args: argparse.Namespace, scratch: Path) -> dict[str, dict[int, list[Sample]]]:
    """Warm every system up (page cache, .pyc files, runbook's compile cache; not counted), run the plan, then top up
    quiet samples. runbook warms up at every N, since each N is another runbook file; the others once."""
    for system in systems:
        for n in args.ns if system.name == "runbook" else args.ns[:1]:
            measure_once(system, n, scratch, args.timeout)
    samples: dict[str, dict[int, list[Sample]]] = {s.name: {} for s in systems}
    order = plan(systems, args.ns, args.reps, args.quick)
    progress = Progress(len(order))
    for rep, n, system in order:
        progress.show(f"repetition {rep + 1}/{args.reps}: {system.name} N={n}", first=n == args.ns[0] and system is systems[0])
        samples[system.name].setdefault(n, []).append(measure_once(system, n, scratch, args.timeout))
    top_up(systems, samples, args, scratch, progress)
    progress.done()
    return samples


def top_up(systems: list[System], samples: dict[str, dict[int, list[Sample]]], args: argparse.Namespace, scratch: Path,
           progress: Progress) -> None:  # fmt: skip
    """Repeat the floor's and runbook's contended runs (for up to ``--patience`` s) until each N has ``--reps`` quiet ones."""
    deadline = time.monotonic() + args.patience
    while time.monotonic() < deadline:
        lacking = [(n, s) for n in args.ns for s in systems
                   if s.name in TARGET_SYSTEMS and len(quiet(samples[s.name][n], args.max_delay)) < args.reps]  # fmt: skip
        if not lacking:
            return
        for n, system in lacking:
            progress.show(f"machine busy, more samples: {system.name} N={n}", first=True)
            samples[system.name][n].append(measure_once(system, n, scratch, args.timeout))


class Progress:
    """A live line on a terminal; one line per repetition in a log."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.started, self.tty = total, 0, time.monotonic(), sys.stderr.isatty()

    def show(self, what: str, *, first: bool) -> None:
        """Announce the next run (in a log, only when ``first``)."""
        self.count += 1
        if self.tty or first:
            head = "\r" if self.tty else ""
            of = f"/{self.total}" if self.count <= self.total else ""
            print(f"{head}  [{self.count}{of}] {what} ({time.monotonic() - self.started:.0f} s elapsed)   ",
                  end="" if self.tty else "\n", file=sys.stderr, flush=True)  # fmt: skip

    def done(self) -> None:
        """End the live line."""
        if self.tty:
            print(file=sys.stderr)


def machine() -> dict[str, Any]:
    """What the figures were measured on (and which revision of runbook)."""
    try:
        rev = subprocess.run(["git", "-C", str(RESULTS.parent), "describe", "--always", "--dirty"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return {
        "revision": rev or "unknown",
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }


def _other_load(start: tuple[float, float | None, float]) -> float | None:
    """Average CPUs' worth of work by processes other than the benchmark's, since ``start``."""
    began, busy0, own0 = start
    busy1 = busy_seconds()
    if busy0 is None or busy1 is None:
        return None
    return max(0.0, (busy1 - busy0) - (own_cpu_seconds() - own0)) / (time.monotonic() - began)


def write_results(path: Path, doc: dict[str, Any]) -> None:
    """The JSON results file (N keys become strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    """Run the benchmark; see the module docstring."""
    args = parse_args(argv)
    info = machine()
    scratch = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    load = (time.monotonic(), busy_seconds(), own_cpu_seconds())
    systems, notes = available_systems(args.systems, args.peers_bin, scratch)
    for note in notes:
        print(f"note: {note}")
    print(f"runbook benchmark: N={','.join(map(str, args.ns))}, {args.reps} repetitions, systems {', '.join(s.name for s in systems)}")
    print(f"  runbook {info['revision']}; {info['platform']}, {info['cpus']} CPUs, python {info['python']} ({sys.executable}),"
          f" load {info['loadavg_start'][0]:.2f}")  # fmt: skip
    try:
        samples = run_all(systems, args, scratch)
    except NotDone as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 2  # the scratch directory stays for inspection
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    info["loadavg_end"] = os.getloadavg()
    info["other_cpu_share"] = _other_load(load)
    return report(args, info, systems, notes, samples)


def report(args: argparse.Namespace, info: dict[str, Any], systems: list[System], notes: list[str],
           samples: dict[str, dict[int, list[Sample]]]) -> int:  # fmt: skip
    """Print the table and the targets, write the results file; the exit status."""
    results = analyse({name: by_n for name, by_n in samples.items() if by_n}, max_delay=args.max_delay, reps=args.reps)
    reliable = all(results[name]["reliable"] for name in TARGET_SYSTEMS if name in results)
    versions = {s.name: s.version for s in systems}
    print("\nwhole-process wall time, median of each N (ms); slopes in ms per step; peak RSS of the process tree")
    print(format_table(results, versions))
    if args.quick and "ansible" in results:
        print(f"  (--quick: ansible measured up to N={QUICK_ANSIBLE_MAX_N} only; its slope comes from those)")
    print()
    checks = targets(results)
    for check in checks:
        print(check.line() if reliable else check.line().replace(" ", "* ", 1))
    if not reliable:
        print(f"* other work kept the machine busy (other processes used {info['other_cpu_share'] or 0:.0%} of a CPU on average)"
              f" and fewer than {args.reps} quiet samples were found for some N: wall times are inflated and the verdicts are"
              " not to be quoted. Rerun on a quieter machine, or with a larger --patience.")  # fmt: skip
    out = args.out or RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    write_results(out, {
        "command": [sys.executable, *sys.argv], "machine": info, "reliable": reliable, "versions": versions,
        "notes": notes, "config": {"reps": args.reps, "ns": args.ns, "quick": args.quick, "systems": [s.name for s in systems]},
        "results": results, "samples": {k: {n: [vars(s) | {"stdout": None, "stderr": None} for s in v] for n, v in by_n.items()}
                                        for k, by_n in samples.items()},
        "targets": [vars(c) | {"passed": c.passed} for c in checks],
    })  # fmt: skip
    print(f"\nresults: {out}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
