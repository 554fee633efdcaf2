"""rotate-log (the Python form): rotation, idempotency, its precondition, and exactly-once across a crash."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from runner.testing import RunbookHarness

SMALL = 0.001  # max_size_mb: about 1 KiB, so a test log of a few KiB is "too big"


def big_log(tmp_path: Path, size: int = 4096) -> Path:
    log = tmp_path / "app.log"
    log.write_bytes(b"x" * size)
    return log


def test_a_big_log_is_rotated_and_old_archives_pruned(runbook: RunbookHarness, tmp_path: Path) -> None:
    log = big_log(tmp_path)
    for n in (1, 2):
        Path(f"{log}.{n}.gz").write_bytes(gzip.compress(b"old"))
    outcome = runbook.run("rotate-log", {"file": str(log), "max_size_mb": SMALL, "keep": 2})
    assert outcome.state == "succeeded", outcome.reason
    assert outcome.states() == {"rotate": "succeeded", "prune": "succeeded"}
    assert outcome.output("rotate") == {"rotated_bytes": 4096, "archive": f"{log}.1.gz"}
    assert log.stat().st_size == 0 and gzip.decompress(Path(f"{log}.1.gz").read_bytes()) == b"x" * 4096
    assert outcome.output("prune") == {"removed": ["app.log.3.gz"]}, "keep=2: the third archive goes"
    assert not Path(f"{log}.3.gz").exists()


def test_a_small_log_is_left_alone(runbook: RunbookHarness, tmp_path: Path) -> None:
    log = big_log(tmp_path, size=10)
    outcome = runbook.run("rotate-log", {"file": str(log), "max_size_mb": SMALL})
    assert outcome.step("rotate").state == "satisfied" and "the log is smaller than max_size_mb" in outcome.step("rotate").reason
    assert runbook.executions("rotate") == [] and log.read_bytes() == b"x" * 10


def test_a_missing_log_blocks_the_run_and_changes_nothing(runbook: RunbookHarness, tmp_path: Path) -> None:
    outcome = runbook.run("rotate-log", {"file": str(tmp_path / "nope.log")})
    assert outcome.state == "failed" and outcome.step("rotate").state == "blocked"
    assert runbook.executions("rotate") == [] and list(tmp_path.iterdir()) == [tmp_path / "runbook"]


@pytest.mark.parametrize("when", ["after", "before"])
def test_killed_at_rotate_then_resumed_rotates_exactly_once(runbook: RunbookHarness, tmp_path: Path, when: str) -> None:
    """SIGKILL in the middle of the run — after rotate's action did its work but before its outcome was recorded, or
    after the step started but before its action ran — then resume: the log is rotated once, never twice."""
    log = big_log(tmp_path)
    killed = runbook.run_until_killed("rotate-log", {"file": str(log), "max_size_mb": SMALL}, at="rotate", when=when)
    assert runbook.status(killed.run_id).step("rotate").state == "running", "the crash left the step in flight"
    outcome = runbook.resume(killed.run_id)
    assert outcome.state == "succeeded", outcome.reason
    runbook.assert_exactly_once(outcome, "rotate")
    # after the kill, resume went through rotate's check: the log was already small (after) or still big (before)
    assert outcome.step("rotate").state == ("satisfied" if when == "after" else "succeeded")
    assert Path(f"{log}.1.gz").exists() and not Path(f"{log}.2.gz").exists(), "a second rotation would have shifted the archive"
    started = outcome.events_of("step.started", "rotate")
    assert len(started) == (1 if when == "after" else 2)


def test_a_failing_rotation_can_be_retried_after_the_fix(runbook: RunbookHarness, tmp_path: Path) -> None:
    log = big_log(tmp_path)
    runbook.fail_step("rotate", message="disk full")
    failed = runbook.run("rotate-log", {"file": str(log), "max_size_mb": SMALL})
    assert failed.state == "failed" and "disk full" in failed.step("rotate").reason
    assert failed.next_action == "fix_and_retry" and runbook.executions("rotate") == []
    again = runbook.resume(failed.run_id, retry=True)
    assert again.state == "succeeded", again.reason
    runbook.assert_exactly_once(again, "rotate")
