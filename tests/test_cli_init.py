"""``runbook init``: a commented starter runbook that validates and runs, a ``.runbook/`` directory, nothing overwritten."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Result


def cli(cwd: Path, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k == "RUNBOOK_CACHE_DIR"}
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env={**env, "RUNBOOK_ACTOR": "tester"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return Result(list(args), proc.returncode, proc.stdout, proc.stderr)


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def uncomment_the_approval(text: str) -> str:
    """The starter's commented example steps, uncommented as its comment tells a reader to."""
    head, marker, tail = text.partition("Uncomment these lines to try it.\n")
    assert marker, "the starter says which lines to uncomment"
    return head + marker + re.sub(r"(?m)^  # ?", "  ", tail)


def test_init_writes_a_starter_that_validates_and_runs_idempotently(tmp_path: Path) -> None:
    res = cli(tmp_path, "init", "greet")
    assert res.code == 0, res
    written = files(tmp_path)
    assert sorted(written) == [".runbook/.gitignore", ".runbook/config.yaml", "runbooks/greet.yaml"]
    assert res.out.splitlines()[:3] == [
        "created runbooks/greet.yaml   a starter runbook: params, a precondition, a check, an action, a verify",
        "created .runbook/config.yaml  the project's configuration (empty, commented)",
        "created .runbook/.gitignore   keeps the journal out of version control",
    ]
    assert "  runbook run greet " in res.out
    starter = written["runbooks/greet.yaml"]
    for part in ("name: greet", "params:", "precondition:", "check:", "verify:", "# - id: confirm", "#   approval:"):
        assert part in starter
    assert all(line.lstrip().startswith("#") for line in written[".runbook/config.yaml"].splitlines()), "comments only"
    assert cli(tmp_path, "validate").code == 0
    target = tmp_path / "out" / "greeting.txt"
    (tmp_path / "out").mkdir()
    first = cli(tmp_path, "run", "greet", "-p", f"file={target}", "--json")
    assert first.code == 0 and first.json()["steps"][0]["state"] == "succeeded", first
    assert target.read_text() == "hello, world\n"
    second = cli(tmp_path, "run", "greet", "-p", f"file={target}", "--json")
    assert second.code == 0 and second.json()["steps"][0]["state"] == "satisfied", second
    blocked = cli(tmp_path, "run", "greet", "-p", f"file={tmp_path}/missing/g.txt", "--json")
    assert blocked.code == 1 and blocked.json()["steps"][0]["state"] == "blocked", "the precondition guards the action"


def test_the_journal_is_ignored_by_git_and_the_rest_is_not(tmp_path: Path) -> None:
    git = ["git", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    assert cli(tmp_path, "init").code == 0
    (tmp_path / "out").mkdir()
    assert cli(tmp_path, "run", "hello", "-p", f"file={tmp_path}/out/g.txt").code == 0
    assert (tmp_path / ".runbook" / "journal.db").is_file()
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"], capture_output=True, text=True, check=True)
    assert sorted(line[3:] for line in status.stdout.splitlines()) == [".runbook/.gitignore", ".runbook/config.yaml", "out/g.txt",
                                                                        "runbooks/hello.yaml"]  # fmt: skip


def test_the_commented_approval_works_once_uncommented(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").code == 0
    path = tmp_path / "runbooks" / "hello.yaml"
    path.write_text(uncomment_the_approval(path.read_text()))
    assert cli(tmp_path, "validate").code == 0
    target = tmp_path / "g.txt"
    waiting = cli(tmp_path, "run", "hello", "-p", f"file={target}", "--json")
    assert waiting.code == 4 and waiting.json()["next"]["action"] == "await_approval", waiting
    rid = waiting.json()["run_id"]
    assert cli(tmp_path, "approve", rid, "--by", "alice").code == 0
    done = cli(tmp_path, "resume", rid, "--json")
    assert done.code == 0 and [s["state"] for s in done.json()["steps"]] == ["succeeded", "succeeded", "succeeded"], done
    assert cli(tmp_path, "logs", rid, "show").out == "show stdout| hello, world\n"


def test_nothing_is_overwritten(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").code == 0
    (tmp_path / ".runbook" / "config.yaml").write_text("notify: {}\n")
    before = files(tmp_path)
    again = cli(tmp_path, "init")
    assert (
        again.code == 2
        and again.err == "error: runbooks/hello.yaml already exists; nothing was written; choose another name: `runbook init NAME`\n"
    )
    assert files(tmp_path) == before
    (tmp_path / "runbooks" / "other.yaml").write_text("name: taken\nsteps:\n  - {id: a, shell: [echo]}\n")
    clash = cli(tmp_path, "init", "taken", "--json")
    assert clash.code == 2 and clash.json()["error"]["message"].startswith("a runbook named 'taken' already exists in "), clash
    assert not (tmp_path / "runbooks" / "taken.yaml").exists()
    more = cli(tmp_path, "init", "second", "--json")
    assert more.code == 0, more
    assert [f["file"] for f in more.json()["created"]] == ["runbooks/second.yaml"]
    assert [f["file"] for f in more.json()["kept"]] == [".runbook/config.yaml", ".runbook/.gitignore"]
    assert (tmp_path / ".runbook" / "config.yaml").read_text() == "notify: {}\n", "an existing project file is kept as it is"
    assert more.json()["try"][2] == {"command": "runbook run second", "what": "run it (twice: the second run finds it done)"}


@pytest.mark.parametrize("name", ["Hello", "-x", "a/b", "x" * 129])
def test_a_bad_name_is_refused(tmp_path: Path, name: str) -> None:
    res = cli(tmp_path, "init", "--", name)
    assert res.code == 2 and "is not a runbook name" in res.err, res
    assert files(tmp_path) == {}


def test_init_writes_where_path_points(tmp_path: Path) -> None:
    res = cli(tmp_path, "--path", "ops", "init", "first")
    assert res.code == 0, res
    assert (tmp_path / "ops" / "first.yaml").is_file()
    assert "runbook --path ops run first" in res.out
    assert cli(tmp_path, "--path", "ops", "validate").code == 0
