"""docs/first-runbook.md, executed: every file it has the reader write is written, every command it shows runs through
the real CLI in an empty directory, and its output must be what the page shows (run ids and times aside; see
:mod:`tests.docblocks`). A change to the CLI's output that the page does not follow fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docblocks import Block, Ids, blocks, commands, match

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "first-runbook.md"


def shell_env(tmp_path: Path) -> dict[str, str]:
    """A reader's shell: ``runbook`` on PATH (this checkout's), no RUNBOOK_* settings but who they are."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runbook = bin_dir / "runbook"
    runbook.write_text(f'#!/bin/sh\nexec {sys.executable} -m runner "$@"\n')
    runbook.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
            "RUNBOOK_ACTOR": "ana@laptop", "RUNBOOK_CACHE_DIR": os.environ.get("RUNBOOK_CACHE_DIR", "off")}  # fmt: skip


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    project = tmp_path / "hello-runbook"
    project.mkdir()
    env = shell_env(tmp_path)
    ids = Ids()
    ran = 0
    for block in blocks(DOC):
        if block.directive and block.directive.startswith("file: "):
            write(project, block)
        elif block.kind == "console":
            for cmd in commands(block):
                where = f"{DOC.name}:{cmd.line} `{cmd.command}`"
                proc = subprocess.run(["bash", "-c", ids.substitute(cmd.command, where)], cwd=project, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)  # fmt: skip
                assert proc.returncode == cmd.exit_code, (
                    f"{where}: exit status {proc.returncode}, the page says {cmd.exit_code}\n{proc.stdout}"
                )
                match(cmd.shown, proc.stdout.splitlines(), ids, where)
                ran += 1
        else:
            raise AssertionError(f"{DOC.name}:{block.line}: a ```{block.kind} block that is neither run nor written (<!-- file: PATH -->)")
    assert ran >= 15, "the walkthrough runs its commands"
    assert not (tmp_path / ".runbook").exists(), "nothing was written outside the project"


def write(project: Path, block: Block) -> None:
    path = project / (block.directive or "")[len("file: ") :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text, encoding="utf-8")


def test_the_matcher_tells_a_wrong_output_from_a_right_one() -> None:
    """The comparison the walkthrough relies on: wildcards, run ids bound once and reused, times and durations."""
    import pytest

    ids = Ids()
    shown = ["run 01M98CQ6Z7BH08RYEG5A8EWA9H (hello): succeeded", "...", "✓ a succeeded 0.12s — 2026-12-07T13:57:30.727Z"]
    real = "01M99AAAAAAAAAAAAAAAAAAAAA"
    match(shown, [f"run {real} (hello): succeeded", "x", "y", "✓ a succeeded — 2027-01-01T00:00:00.000Z"], ids, "t")
    assert ids.substitute("runbook status 01M98CQ6Z7BH08RYEG5A8EWA9H", "t") == f"runbook status {real}"
    with pytest.raises(AssertionError, match="differs"):
        match(["run 01M98CQ6Z7BH08RYEG5A8EWA9H (hello): succeeded"], ["run 01M99BBBBBBBBBBBBBBBBBBBBB (hello): succeeded"], ids, "t")
    with pytest.raises(AssertionError, match="differs"):
        match(["a", "b"], ["a", "b", "c"], Ids(), "t")
    with pytest.raises(AssertionError, match="used before"):
        Ids().substitute("runbook logs 01M98CQ6Z7BH08RYEG5A8EWA9H", "t")
