"""``runbook prune`` on a big journal: it deletes exactly what the rules let go, and the file shrinks.

    python bench/prune_bench.py                  # 100 000 generated runs + one run of every kind (about 2 minutes)
    python bench/prune_bench.py --runs 1000000   # the same at a million

The journal holds ``--runs`` finished alert runs written by ``bench/gen_history.py``: half finished 40 to 60 days
ago, half 1 to 26 days ago; and one run of every kind retention must tell apart (``bench/_prune_kinds.py``:
active runs, run trees, idempotency keys inside and outside their window, alerts still firing and resolved),
made through the store API under a clock shifted into the past. Then, through the real CLI::

    runbook prune --older-than 30d --idempotency-window 35d --alert-window 1d [--dry-run] --json

Checked: the dry run counts what the real prune deletes and deletes nothing; every old generated run is gone
and every recent one is kept; every kind is kept or deleted as ``_prune_kinds.KINDS`` says; no event or step
of a deleted run is left; the file shrinks. Prints the figures as JSON; exit status 1 if a check fails.
``tests/test_prune_cli.py`` runs the same checks on a few thousand runs in the default suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _prune_kinds import ARGS, check, write_kinds
from gen_history import generate

DAY = 86400.0


def build(journal: Path, runs: int) -> dict[str, Any]:
    """The journal of the benchmark; returns the kinds' ids and the generated runs' counts."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    old, recent = runs // 2, runs - runs // 2
    generate(journal, old, days=20, age=40 * DAY, prefix="old")
    generate(journal, recent, days=25, age=DAY, prefix="new")
    ids = write_kinds(journal)
    with sqlite3.connect(journal) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"ids": ids, "old": old, "recent": recent}


def prune(project: Path, *extra: str) -> tuple[dict[str, Any], float]:
    """``runbook prune`` through the real entry point; returns its JSON and the wall time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "runner", "prune", *ARGS, *extra, "--json"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=3600)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"runbook prune failed ({res.returncode}):\n{res.stderr}")
    return json.loads(res.stdout), time.monotonic() - t0


def verify(project: Path, built: dict[str, Any]) -> dict[str, Any]:
    """Run the dry run and the prune and check them; returns the figures (``problems`` empty when all holds)."""
    journal = project / ".runbook" / "journal.db"
    size_before = journal.stat().st_size
    dry, dry_s = prune(project, "--dry-run")
    problems = [] if journal.stat().st_size == size_before else ["the dry run changed the journal"]
    real, real_s = prune(project)
    with sqlite3.connect(journal) as conn:
        left_old = conn.execute("SELECT COUNT(*) FROM runs WHERE runbook='noop' AND params LIKE '%\"old-%'").fetchone()[0]
        left_new = conn.execute("SELECT COUNT(*) FROM runs WHERE runbook='noop' AND params LIKE '%\"new-%'").fetchone()[0]
    problems += check(journal, built["ids"])
    if left_old or left_new != built["recent"]:
        problems.append(f"generated runs left: {left_old} old (expected 0), {left_new} recent (expected {built['recent']})")
    for key in ("runs", "events", "steps", "decisions", "deliveries"):
        if dry[key] != real[key]:
            problems.append(f"the dry run counted {dry[key]} {key}, the prune deleted {real[key]}")
    size_after = journal.stat().st_size
    if not size_after < size_before:
        problems.append(f"the journal did not shrink ({size_before} -> {size_after} bytes)")
    return {"deleted": {k: real[k] for k in ("runs", "events", "steps", "decisions", "deliveries")}, "kept": real["kept"],
            "batches": real["batches"], "vacuum": real["vacuum"], "bytes_before": size_before, "bytes_after": size_after,
            "dry_run_s": round(dry_s, 1), "prune_s": round(real_s, 1), "problems": problems}  # fmt: skip


def main(argv: list[str]) -> int:
    """Build, prune, check, print."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100_000, help="generated finished runs (half old, half recent)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rb-prune-bench.") as tmp:
        project = Path(tmp)
        t0 = time.monotonic()
        built = build(project / ".runbook" / "journal.db", args.runs)
        report = {"runs": args.runs, "kinds": len(built["ids"]), "build_s": round(time.monotonic() - t0, 1), **verify(project, built)}
    print(json.dumps(report, indent=1))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
