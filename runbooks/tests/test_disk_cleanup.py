"""disk-cleanup: old matching files go, usage is proved below the threshold, nothing else is touched.

`df` is a stand-in that reports 10% of usage per file in the directory, so usage follows what the runbook deletes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runner.testing import RunbookHarness

DF = """#!/bin/sh
# df -P DIR: a stand-in whose usage is 10% per file under DIR (at most 100%)
dir="$2"
used=$(( $(find "$dir" -type f | wc -l) * 10 ))
[ "$used" -gt 100 ] && used=100
echo "Filesystem 1024-blocks Used Available Capacity Mounted on"
echo "standin 100 $used $((100 - used)) ${used}% $dir"
"""


@pytest.fixture
def spool(runbook: RunbookHarness, tmp_path: Path) -> Path:
    runbook.stub_command("df", DF)
    directory = tmp_path / "spool"
    directory.mkdir()
    old = time.time() - 10 * 86400
    for i in range(6):
        path = directory / f"old-{i}.tmp"
        path.write_text("x")
        os.utime(path, (old, old))
    (directory / "new.tmp").write_text("x")
    (directory / "keep.log").write_text("x")
    os.utime(directory / "keep.log", (old, old))
    return directory


def test_old_matching_files_are_deleted_until_usage_is_below_the_threshold(runbook: RunbookHarness, spool: Path) -> None:
    outcome = runbook.run("disk-cleanup", {"path": str(spool), "threshold": 50})
    assert outcome.state == "succeeded", outcome.reason
    assert outcome.states() == {"usage-before": "succeeded", "delete-old-files": "succeeded", "usage-after": "succeeded"}
    assert "80%" in outcome.output("usage-before")["stdout"] and "20%" in outcome.output("usage-after")["stdout"]
    assert sorted(p.name for p in spool.iterdir()) == ["keep.log", "new.tmp"], "only old files matching the pattern go"
    assert sorted(outcome.output("delete-old-files")["stdout"].split()) == sorted(str(spool / f"old-{i}.tmp") for i in range(6))
    runbook.assert_exactly_once(outcome, "delete-old-files")


def test_usage_already_below_the_threshold_deletes_nothing(runbook: RunbookHarness, spool: Path) -> None:
    outcome = runbook.run("disk-cleanup", {"path": str(spool), "threshold": 90})
    assert outcome.step("delete-old-files").state == "satisfied"
    assert runbook.executions("delete-old-files") == [] and len(list(spool.iterdir())) == 8


def test_a_failing_measurement_stops_the_run_before_anything_is_deleted(runbook: RunbookHarness, spool: Path) -> None:
    runbook.fail_step("usage-before", exit_code=2, message="df: cannot read table of mounted file systems")
    outcome = runbook.run("disk-cleanup", {"path": str(spool), "threshold": 50})
    assert outcome.state == "failed" and outcome.step("usage-before").state == "failed"
    assert "exit code 2" in outcome.step("usage-before").reason
    assert outcome.step("delete-old-files").state == "pending" and len(list(spool.iterdir())) == 8


def test_a_pattern_reaching_outside_the_directory_is_refused(runbook: RunbookHarness, spool: Path) -> None:
    result = runbook.cli("run", "disk-cleanup", "-p", f"path={spool}", "-p", "pattern=../*", "--json")
    assert result.code == 2 and "pattern" in result.json()["error"]["message"]


def test_the_cli_run_is_the_same_run(runbook: RunbookHarness, spool: Path) -> None:
    outcome = runbook.run_cli("disk-cleanup", {"path": str(spool), "threshold": 50})
    assert outcome.state == "succeeded" and outcome.exit_code == 0, outcome.reason
    assert [e.step_id for e in outcome.events_of("step.started")] == ["usage-before", "delete-old-files", "usage-after"]
