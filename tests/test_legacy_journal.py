"""A journal written by the previous release (format 2: untyped step data) resumes and completes after the upgrade.

``tests/data/legacy_journal/`` holds that journal, its runbooks, the ``out.log`` its steps wrote and ``runs.json``
(each run, its state then, and what finishes it). Every run is finished here with today's code, and ``out.log``
shows each step that had completed was never run again.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Project

DATA = Path(__file__).parent / "data" / "legacy_journal"


@pytest.fixture
def legacy(tmp_path: Path) -> Project:
    project = Project(tmp_path)
    shutil.copytree(DATA / "runbooks", project.runbooks, dirs_exist_ok=True)
    (tmp_path / ".runbook").mkdir()
    shutil.copy(DATA / "journal.db", project.journal)
    shutil.copy(DATA / "out.log", tmp_path / "out.log")
    project.env["RUNBOOK_ACTOR"] = "upgrader"
    return project


def _runs() -> list[dict[str, str]]:
    return list(json.loads((DATA / "runs.json").read_text()))


def _lines(project: Project) -> Counter[str]:
    return Counter((project.root / "out.log").read_text().split())


def _finish(project: Project, run: dict[str, str]) -> dict[str, object]:
    """Do what runs.json says, through the CLI, and return the final view."""
    rid, then = run["run_id"], run["then"]
    for flag in ("checked.done", "verified.flag", "fixed.flag"):
        if flag.split(".")[0] in then:
            (project.root / flag).touch()
    if then.startswith("approve"):
        first = project.run("approve", rid, "--by", "alice", "--json")
        assert first.code in (0, 2), first
    if "decide skip" in then or "decide retry" in then:
        resumed = project.run("resume", rid, "--json")
        assert resumed.json()["next"]["action"] == "decide", resumed
        choice = "--skip-step" if "skip" in then else "--retry-step"
        assert project.run("decide", rid, choice, "blind", "--json").code == 0
    if "retry" in then and "decide" not in then:
        assert project.run("retry", rid, "--json").code == 0
    result = project.run("resume", rid, "--json")
    doc: dict[str, object] = result.json()
    if doc["state"] == "failed" and run["runbook"] == "legacy-gated":
        # the gate's approval request expired an hour after the journal was written: on_expiry denies it, truthfully
        assert "expired" in str(doc["reason"]), doc
        assert project.run("retry", rid, "--json").code == 0
        assert project.run("resume", rid, "--json").json()["next"]["action"] == "await_approval"
        assert project.run("approve", rid, "--by", "alice", "--json").code == 0
        doc = project.run("resume", rid, "--json").json()
    return doc


def test_the_journal_is_upgraded_in_place_and_every_run_completes(legacy: Project) -> None:
    before = _lines(legacy)
    with sqlite3.connect(legacy.journal) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    listed = legacy.run("runs", "--json", "--limit", "100")
    assert listed.code == 0, listed
    with sqlite3.connect(legacy.journal) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        legacy_keys = db.execute("SELECT count(*) FROM steps WHERE data LIKE '%\"wait_kind\"%' OR data LIKE '%\"gate_state\"%'").fetchone()[
            0
        ]
        assert legacy_keys == 0, "every step row now holds typed progress"
    for run in _runs():
        doc = _finish(legacy, run)
        assert doc["state"] == "succeeded", (run, doc)
    after = _lines(legacy)
    ran = after - before
    # steps that had completed before the upgrade never ran again; the rest ran exactly once
    assert ran["a"] == 0 and ran["b"] == 1 and ran["c"] == 2, ran  # two `legacy` runs: paused after 1 and after 2 steps
    assert ran["before"] == 0 and ran["after"] == 3, ran  # two legacy-approval runs, and the parent's child run of it
    assert ran["prep"] == 0 and ran["act"] == 1, ran
    assert ran["first"] == 0 and ran["last"] == 1, ran
    assert ran["one"] == 0 and ran["three"] == 2, ran
    assert ran["blind"] == 1, "the skipped unknown step never ran again; the retried one ran once"
    assert ran["checked"] == 0 and ran["tail"] == 1, "the checked step's check held (its work was done): not re-run"
    assert ran["v"] == 0 and ran["after-v"] == 1, "verification resumed without re-running the action"
    assert ran["setup"] == 0 and ran["needs-fix"] == 1, ran
    assert ran["up"] == 1 and ran["breaks"] == 1, "the rolled-back step ran again on retry"
    assert ran["each-t1"] == 0 and ran["each-t2"] == 1 and ran["each-t3"] == 0 and ran["fanout-done"] == 1, ran
    assert ran["pre"] == 0 and ran["post"] == 1, ran
