"""runbook's own cost per step, without the spawn: ``runbook run`` in this process, ``true`` not started.

Usage (same venv as the benchmark)::

    python bench/inprocess_slope.py             # spawn replaced by an instant exit 0
    python bench/inprocess_slope.py --spawn     # the real spawn, for comparison
    python bench/inprocess_slope.py --reps 31

The real CLI (``runner.cli.run``) runs the benchmark's runbook of N = 10 and N = 100 ``shell: ["true"]`` steps
in fresh projects, interleaved, after one warm-up of each; the shell step's ``run_process`` is replaced by a
function returning exit 0 unless ``--spawn`` is given, and journal connections are left open as the CLI,
which ends with ``os._exit``, leaves them. Prints the medians and the slope
``(t(100) - t(10)) / 90``: the engine, store, loading and view cost of one durable step, which the
whole-process benchmark cannot separate from the spawn. Warm caches make it lower than the same part of a
separate process (each spawn there cools them); use it to compare revisions, not as the benchmark's figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _systems import RUNBOOK_NAME, runbook_yaml


def main() -> int:
    """Measure and print the in-process slope; exit 1 if a run did not succeed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--spawn", action="store_true", help="start `true` for real")
    args = parser.parse_args()
    os.environ["RUNBOOK_ACTOR"] = "bench"

    import runbook_shell.step as shell
    import runbook_sqlite.store as sqlite_store

    from runner.cli import run

    if not args.spawn:
        shell.run_process = lambda argv, **_: shell.ProcessResult(0, "", "", False, 0.0)
    # `runbook` ends with os._exit and never closes its journal connection (closing the last one checkpoints the
    # WAL into the database). Keep each run's connection open, so that this cost is not counted here either.
    kept: list[object] = []
    sqlite_store._Owned.__del__ = lambda self: kept.append(self.conn)  # type: ignore[method-assign]
    scratch = Path(tempfile.mkdtemp(prefix="rb-slope-"))
    os.environ["RUNBOOK_CACHE_DIR"] = str(scratch / "compile-cache")  # its own compile cache, warmed by the warm-up

    def once(n: int, rep: int) -> float:
        project = scratch / f"n{n}-{rep}"
        (project / "runbooks").mkdir(parents=True)
        (project / "runbooks" / f"{RUNBOOK_NAME}.yaml").write_text(runbook_yaml(n))
        os.chdir(project)
        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = run(["run", RUNBOOK_NAME, "--json"])
        elapsed = time.perf_counter() - start
        view = json.loads(out.getvalue())
        if code != 0 or view["state"] != "succeeded" or len(view["steps"]) != n:
            raise SystemExit(f"run of {n} steps did not succeed (exit {code}); project kept in {project}")
        return elapsed

    once(10, -1), once(100, -1)
    small, large = [], []
    for rep in range(args.reps):
        small.append(once(10, rep))
        large.append(once(100, rep))
    t10, t100 = statistics.median(small), statistics.median(large)
    what = "real spawn" if args.spawn else "spawn stubbed"
    print(f"{what}: N=10 {t10 * 1e3:.2f} ms, N=100 {t100 * 1e3:.2f} ms, slope {(t100 - t10) / 90 * 1e6:.1f} us/step "
          f"(medians of {args.reps}; scratch {scratch})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
