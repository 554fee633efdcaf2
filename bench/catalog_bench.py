"""``runbook run one`` whether or not the project also holds a 5000-step runbook and 200 others (issue 19, must-show 4).

Usage (the venv's interpreter)::

    python bench/catalog_bench.py              # 9 repetitions
    python bench/catalog_bench.py --reps 15

Four projects, each with the same one-step runbook ``one`` (``shell: ["true"]``):

``alone``    only ``one``
``big``      ``one`` and a runbook of 5000 steps (about 280 KB of YAML)
``many``     ``one`` and 200 small runbooks (2 params, 5 steps each)
``both``     ``one``, the 5000-step runbook and the 200 others

Every project keeps its own SQLite journal and shares one compile cache (the benchmark's own, warmed by an
unmeasured run in each project, as a user's is after the first command). ``runbook run one --json`` runs as a
whole process, the projects interleaved in each repetition; contended samples (``run_bench.py``'s rule) are
replaced for up to ``--patience`` seconds. The figure is each project's median against ``alone``'s.
Exit status: 0 when every ratio is within 1.1, 1 otherwise, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import Sample, run_measured
from _report import quiet
from _systems import clean_env
from run_bench import machine, write_results

PROJECTS = ("alone", "big", "many", "both")
LIMIT = 1.1
RESULTS = Path(__file__).resolve().parent / "results"
ONE = 'name: one\ndescription: one step\nsteps:\n  - id: s\n    shell: ["true"]\n'


def big_yaml(steps: int) -> str:
    """A runbook of ``steps`` steps, each with a timeout and a check (so its compiled form is not trivial)."""
    lines = ["name: big", f"description: {steps} steps", "params:", "  host: {type: string, default: localhost}", "steps:"]
    for i in range(steps):
        lines += [f"  - id: s{i}", f"    shell: [echo, '{{{{ params.host }}}}', '{i}']", "    timeout: 10s"]
    return "\n".join(lines) + "\n"


def small_yaml(i: int) -> str:
    """One of the 200 small runbooks: two params, five steps."""
    steps = "".join(f"  - id: s{j}\n    shell: [echo, '{{{{ params.host }}}}', '{j}']\n" for j in range(5))
    return (f"name: small-{i:03d}\ndescription: small runbook {i}\ntags: [bench]\nparams:\n  host: {{type: string}}\n"
            f"  count: {{type: integer, default: 3}}\nsteps:\n{steps}")  # fmt: skip


def build(root: Path, kind: str, big_steps: int, others: int) -> Path:
    """A project directory of ``kind``."""
    project = root / kind
    (project / ".runbook").mkdir(parents=True)
    runbooks = project / "runbooks"
    runbooks.mkdir()
    (runbooks / "one.yaml").write_text(ONE, encoding="utf-8")
    if kind in ("big", "both"):
        (runbooks / "big.yaml").write_text(big_yaml(big_steps), encoding="utf-8")
    if kind in ("many", "both"):
        for i in range(others):
            (runbooks / f"small-{i:03d}.yaml").write_text(small_yaml(i), encoding="utf-8")
    return project


def once(project: Path, env: dict[str, str]) -> Sample:
    """``runbook run one --json`` in ``project``, checked to have succeeded."""
    sample = run_measured([sys.executable, "-m", "runner", "run", "one", "--json"], cwd=project, env=env, timeout=120)
    view = json.loads(sample.stdout) if sample.code == 0 else {}
    if view.get("state") != "succeeded":
        raise SystemExit(f"run in {project.name} failed (exit {sample.code}): {(sample.stderr or sample.stdout)[-600:]}")
    return sample


def main(argv: list[str]) -> int:
    """Measure and report; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--big-steps", type=int, default=5000)
    p.add_argument("--others", type=int, default=200)
    p.add_argument("--max-delay", type=float, default=0.03, metavar="SHARE")
    p.add_argument("--patience", type=float, default=120.0, metavar="SECONDS")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    info = machine()
    scratch = Path(tempfile.mkdtemp(prefix="runbook-catalog-bench-"))
    env = {**clean_env(), "RUNBOOK_CACHE_DIR": str(scratch / "compile-cache")}
    try:
        projects = {kind: build(scratch, kind, args.big_steps, args.others) for kind in PROJECTS}
        for project in projects.values():  # warm-up: compile cache, page cache, .pyc files
            once(project, env)
            once(project, env)
        samples: dict[str, list[Sample]] = {kind: [] for kind in PROJECTS}
        for rep in range(args.reps):
            print(f"  repetition {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
            for kind, project in projects.items():
                samples[kind].append(once(project, env))
        deadline = time.monotonic() + args.patience
        while time.monotonic() < deadline:
            lacking = [k for k in PROJECTS if len(quiet(samples[k], args.max_delay)) < args.reps]
            if not lacking:
                break
            for kind in lacking:
                samples[kind].append(once(projects[kind], env))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report(args, info, samples)


def report(args: argparse.Namespace, info: dict[str, Any], samples: dict[str, list[Sample]]) -> int:
    """Print the medians and ratios; write the results file."""
    rows: dict[str, dict[str, Any]] = {}
    for kind in PROJECTS:
        calm = quiet(samples[kind], args.max_delay)
        use = calm if len(calm) >= 3 else samples[kind]
        rows[kind] = {"median_ms": statistics.median(s.wall_ms for s in use), "quiet": f"{len(calm)}/{len(samples[kind])}",
                      "cpu_ms": statistics.median(s.cpu_ms for s in use), "peak_mib": max(s.maxrss_mib for s in samples[kind]),
                      "all_ms": [round(s.wall_ms, 1) for s in samples[kind]]}  # fmt: skip
    reliable = all(len(quiet(samples[k], args.max_delay)) >= args.reps for k in PROJECTS)
    base = rows["alone"]["median_ms"]
    print(f"\n`runbook run one --json`, whole process, median of quiet samples; {info['cpus']} CPUs, revision {info['revision']}")
    ok = True
    for kind in PROJECTS:
        row = rows[kind]
        row["ratio"] = row["median_ms"] / base
        verdict = ""
        if kind != "alone":
            passed = row["ratio"] <= LIMIT
            ok = ok and passed
            verdict = f"  {'PASS' if passed else 'FAIL'}{'' if reliable else '*'} (target <= {LIMIT}x)"
        print(f"  {kind:6s} {row['median_ms']:7.1f} ms  CPU {row['cpu_ms']:6.1f} ms  peak {row['peak_mib']:5.1f} MiB  "
              f"quiet {row['quiet']:>5s}  {row['ratio']:.3f}x{verdict}")  # fmt: skip
    if not reliable:
        print("* fewer quiet samples than repetitions for some project: the machine was busy; rerun when it is quiet")
    out = args.out or RESULTS / f"catalog-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    write_results(out, {"command": [sys.executable, *sys.argv], "machine": info, "reliable": reliable, "results": rows,
                        "config": {"reps": args.reps, "big_steps": args.big_steps, "others": args.others}})  # fmt: skip
    print(f"results: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
