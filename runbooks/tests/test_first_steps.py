"""first-steps (the README's first command): it acts and says so, a second run is satisfied, old logs go exactly once."""

from __future__ import annotations

import os
from pathlib import Path

from runner.testing import RunbookHarness


def test_a_first_run_makes_a_mess_cleans_it_and_says_what_next(runbook: RunbookHarness, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    outcome = runbook.run("first-steps", {"dir": str(scratch)})
    assert outcome.state == "succeeded", outcome.reason
    assert outcome.states() == {"make-a-mess": "succeeded", "delete-old-logs": "succeeded", "what-next": "succeeded"}
    assert outcome.output("make-a-mess")["stdout"].splitlines() == [
        *(f"created {scratch}/app-{i}.log (last written 2020-01-01)" for i in (1, 2, 3)),
        f"created {scratch}/app.log (last written now)",
    ]
    assert outcome.output("delete-old-logs")["stdout"].splitlines() == [f"deleted {scratch}/app-{i}.log" for i in (1, 2, 3)]
    assert sorted(p.name for p in scratch.iterdir()) == ["app.log"]
    hints = outcome.output("what-next")["stdout"].splitlines()
    assert hints[0] == f"left in {scratch}: app.log" and hints[1] == "try next:"
    assert [line.split()[:3] for line in hints[2:]] == [
        ["runbook", "status", outcome.run_id],
        ["runbook", "logs", outcome.run_id],
        ["runbook", "run", "first-steps"],
    ]


def test_a_second_run_finds_everything_done(runbook: RunbookHarness, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    first = runbook.run("first-steps", {"dir": str(scratch)})
    again = runbook.run("first-steps", {"dir": str(scratch)})
    assert again.state == "succeeded"
    assert again.states() == {"make-a-mess": "satisfied", "delete-old-logs": "satisfied", "what-next": "succeeded"}
    assert again.step("delete-old-logs").reason == "check held: no log file is older than max_age_days"
    runbook.assert_exactly_once(first, "make-a-mess")
    runbook.assert_exactly_once(first, "delete-old-logs")
    assert runbook.executions("delete-old-logs", run_id=again.run_id) == [], "nothing is done twice"


def test_an_existing_directory_is_only_cleaned(runbook: RunbookHarness, tmp_path: Path) -> None:
    scratch = tmp_path / "mine"
    scratch.mkdir()
    (scratch / "old.log").write_text("x")
    (scratch / "old.txt").write_text("x")
    old = 1_600_000_000  # 2020-09
    for name in ("old.log", "old.txt"):
        os.utime(scratch / name, (old, old))
    outcome = runbook.run("first-steps", {"dir": str(scratch), "max_age_days": 30})
    assert outcome.states()["make-a-mess"] == "satisfied", "an existing directory is not filled"
    assert sorted(p.name for p in scratch.iterdir()) == ["old.txt"], "only old *.log files are deleted"


def test_killed_after_deleting_then_resumed_deletes_once(runbook: RunbookHarness, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    killed = runbook.run_until_killed("first-steps", {"dir": str(scratch)}, at="delete-old-logs", when="after")
    outcome = runbook.resume(killed.run_id)
    assert outcome.state == "succeeded" and outcome.step("delete-old-logs").state == "satisfied", outcome.reason
    runbook.assert_exactly_once(killed, "delete-old-logs")


def test_a_relative_directory_is_refused_before_anything_runs(runbook: RunbookHarness) -> None:
    result = runbook.cli("run", "first-steps", "-p", "dir=scratch", "--json")
    assert result.code == 2 and "dir" in result.json()["error"]["message"], result.out


def test_the_cli_run_shows_each_step_acting(runbook: RunbookHarness, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    outcome = runbook.run_cli("first-steps", {"dir": str(scratch)})
    assert outcome.exit_code == 0, outcome.reason
    logs = runbook.cli("logs", outcome.run_id)
    assert f"delete-old-logs stdout| deleted {scratch}/app-1.log" in logs.out.splitlines()
    assert f"what-next stdout|   runbook logs {outcome.run_id}" in logs.out
