"""``runbook prune`` through the real CLI: exactly what the rules let go is deleted, and the journal shrinks.

The same checks as ``bench/prune_bench.py`` (which runs them on 100 000 runs), here on 3 000 generated runs
beside one run of every kind retention must tell apart (``bench/_prune_kinds.py``).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from tests.conftest import Project

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _prune_kinds import ARGS, KINDS
from prune_bench import build, verify


def test_prune_deletes_exactly_what_the_rules_say_and_the_file_shrinks(project: Project) -> None:
    built = build(project.journal, 3000)
    report = verify(project.root, built)
    assert report["problems"] == []
    gone = sum(1 for kept in KINDS.values() if not kept)
    assert report["deleted"]["runs"] == built["old"] + gone
    assert report["kept"] == {"active_descendant": 1, "idempotency_window": 1, "alert_open": 1}
    assert report["vacuum"] == "incremental" and report["bytes_after"] < report["bytes_before"] * 0.75


def test_prune_human_output_and_usage_errors(project: Project) -> None:
    build(project.journal, 200)
    dry = project.run("prune", *ARGS, "--dry-run")
    assert dry.code == 0 and dry.out.startswith("would delete 109 run(s)"), dry
    done = project.run("prune", *ARGS)
    assert done.code == 0 and done.out.startswith("deleted 109 run(s)") and "journal:" in done.out and "incremental vacuum" in done.out, (
        done
    )
    assert "kept, though old enough: 1 (active descendant), 1 (alert open), 1 (idempotency window)" in done.out
    again = project.run("prune", *ARGS, "--json").json()
    assert again["runs"] == 0 and again["dry_run"] is False
    bad = project.run("prune", "--older-than", "soon")
    assert bad.code == 2 and "--older-than" in bad.err and "expected a duration" in bad.err, bad
    bad = project.run("prune", "--older-than", "1d", "--state", "running")
    assert bad.code == 2 and "'running' is not one of" in bad.err, bad


def test_prune_switches_a_journal_without_incremental_vacuum_once(project: Project) -> None:
    project.journal.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(project.journal) as conn:  # created by an earlier version: auto_vacuum=NONE
        conn.execute("CREATE TABLE earlier (x)")
    built = build(project.journal, 1000)
    report = project.run("prune", *ARGS, "--json").json()
    assert report["vacuum"] == "full" and report["runs"] == built["old"] + sum(1 for kept in KINDS.values() if not kept)
    assert report["bytes_after"] < report["bytes_before"]
    with sqlite3.connect(project.journal) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
