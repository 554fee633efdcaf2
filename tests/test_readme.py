"""README's quick start: exactly two set-up commands, and the first one's runbook acts, shows it, says what to try
next, and finds everything done the second time (its output is the one README shows)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.docblocks import Block, Ids, blocks, commands, match

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INSTALL = ["python3 -m venv .venv", ".venv/bin/pip install -e ."]


def quick_start() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Quick start\n")
    end = text.index("\n## ", start + 1)
    first, last = text[:start].count("\n") + 1, text[:end].count("\n") + 1
    return [b for b in blocks(README) if first <= b.line <= last]


def test_the_quick_start_is_two_set_up_commands() -> None:
    setup = [b.text.strip() for b in quick_start() if b.kind == "bash"]
    assert len(setup) == 2, setup
    main, tests = setup
    assert main.split(" && ")[:2] == INSTALL, "the first installs"
    assert main.split(" && ")[2:] == [".venv/bin/runbook run first-steps"], "then runs the demo, on the embedded SQLite"
    assert (ROOT / "runbooks" / "first-steps.yaml").is_file()
    ci = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```\n<!-- /test-command -->", README.read_text(encoding="utf-8"), re.S)
    assert ci and ci.group(1) == tests == "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest -q"


def runbook(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/runbook ARGS`` as in a checkout: this repository's runbooks, the journal in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k == "RUNBOOK_CACHE_DIR"}
    env.update(RUNBOOK_PATH=str(ROOT / "runbooks"), RUNBOOK_ACTOR="ana@laptop")
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_first_command_acts_shows_it_and_says_what_next(tmp_path: Path) -> None:
    shown = next(b for b in quick_start() if b.kind == "console")
    (cmd,) = commands(shown)
    argv = shlex.split(cmd.command)
    assert (
        argv[0] == ".venv/bin/runbook" and cmd.command == next(b for b in quick_start() if b.kind == "bash").text.split(" && ")[-1].strip()
    )
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    scratch = tmp_path / "runbook-first-steps"  # instead of /tmp/runbook-first-steps, which another run may hold
    first = runbook(checkout, *argv[1:], "-p", f"dir={scratch}")
    assert first.returncode == 0, first
    ids = Ids()
    match(cmd.shown, first.stdout.replace(str(scratch), "/tmp/runbook-first-steps").splitlines(), ids, "README's first command")
    assert (checkout / ".runbook" / "journal.db").is_file(), "journaled in the embedded SQLite, under .runbook/"
    assert sorted(p.name for p in scratch.iterdir()) == ["app.log"]
    hints = re.findall(r"^what-next stdout\|   (runbook \S+ \S+)", first.stdout, re.M)
    assert [h.split()[1] for h in hints] == ["status", "logs", "run"]
    for hint in hints[:2]:  # what it says to try next works
        tried = runbook(checkout, *shlex.split(hint)[1:])
        assert tried.returncode == 0, tried
    assert f"delete-old-logs stdout| deleted {scratch}/app-1.log" in runbook(checkout, *shlex.split(hints[1])[1:]).stdout
    again = runbook(checkout, *argv[1:], "-p", f"dir={scratch}")
    assert again.returncode == 0, again
    assert again.stdout.splitlines()[:2] == [
        "= make-a-mess satisfied — check held: the scratch directory exists already",
        "= delete-old-logs satisfied — check held: no log file is older than max_age_days",
    ], again.stdout
