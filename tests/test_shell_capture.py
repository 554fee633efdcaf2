"""Where the shell step captures a command's output: an anonymous file in the temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runbook_shell.step import run_process


def _stdout_target() -> str:
    res = run_process(["readlink", "/proc/self/fd/1"], env=None, cwd=None, stdin=None, timeout=30, max_output=4096, kill_grace=1)
    assert res.exit_code == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_capture_files_live_in_tmpdir_and_leave_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    target = _stdout_target()
    assert target.startswith(f"{tmp_path}/"), target
    assert list(tmp_path.iterdir()) == []  # unnamed (O_TMPFILE) or unlinked at once


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_a_missing_tmpdir_falls_back_and_still_captures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    target = _stdout_target()
    assert target.endswith("(deleted)"), target
    assert not (tmp_path / "missing").exists()
