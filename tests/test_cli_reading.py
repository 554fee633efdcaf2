"""Reading runs: commands that read or steer existing runs never create a journal, and ``runs`` filters by time and actor."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import Project, Result

RUN_ID = "01JZZZZZZZZZZZZZZZZZZZZZZZ"
READERS = [
    ["runs"],
    ["runs", "--json"],
    ["status", RUN_ID],
    ["events", RUN_ID],
    ["logs", RUN_ID],
    ["approve", RUN_ID, "--by", "alice"],
    ["pause", RUN_ID],
    ["cancel", RUN_ID],
    ["resume", RUN_ID],
    ["step", RUN_ID],
]


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k == "RUNBOOK_CACHE_DIR"}
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env={**base, "RUNBOOK_ACTOR": "tester", **(env or {})},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return Result(list(args), proc.returncode, proc.stdout, proc.stderr)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("args", READERS, ids=[" ".join(a[:1] + a[2:]) or a[0] for a in READERS])
def test_a_read_in_an_empty_directory_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli(empty, *args)
    assert tree(empty) == [], f"{args} created {tree(empty)}"
    if args[0] == "runs":
        assert res.code == 0, res
        if "--json" in args:
            assert res.json() == {"runs": [], "next_before": None}
        else:
            assert res.out.strip() == "no runs yet: no journal at .runbook/journal.db (the first `runbook run` creates it)"
    else:
        assert res.code == 2, res
        assert f"no journal at {empty / '.runbook' / 'journal.db'} yet" in res.err, res


@pytest.mark.parametrize("how", ["--store", "RUNBOOK_STORE"])
@pytest.mark.parametrize("args", [["runs"], ["status", RUN_ID], ["events", RUN_ID, "--json"], ["logs", RUN_ID]], ids=lambda a: a[0])
def test_a_store_url_whose_directory_does_not_exist_is_an_error(tmp_path: Path, args: list[str], how: str) -> None:
    url = f"sqlite:///{tmp_path}/nowhere/journal.db"
    res = cli(tmp_path, "--store", url, *args) if how == "--store" else cli(tmp_path, *args, env={"RUNBOOK_STORE": url})
    assert res.code == 2, res
    message = f"no journal at {tmp_path}/nowhere/journal.db: the directory {tmp_path}/nowhere does not exist"
    assert message in (res.json()["error"]["message"] if "--json" in args else res.err), res
    assert not (tmp_path / "nowhere").exists()


def test_an_existing_directory_without_a_journal_lists_no_runs_and_stays_empty(tmp_path: Path) -> None:
    res = cli(tmp_path, "--store", "sqlite:///journal.db", "runs")
    assert res.code == 0 and "no runs yet: no journal at sqlite:///journal.db" in res.out, res
    assert tree(tmp_path) == []


def test_the_first_run_creates_the_journal_that_reads_then_use(project: Project) -> None:
    project.write("one.yaml", "name: one\nsteps:\n  - {id: a, shell: [echo, hi]}\n")
    assert project.run("runs").code == 0 and not project.journal.exists()
    rid = project.run("run", "one", "--json").json()["run_id"]
    assert project.journal.is_file()
    assert [r["run_id"] for r in project.run("runs", "--json").json()["runs"]] == [rid]
    assert project.run("status", rid).code == 0 and project.run("logs", rid).out == "a stdout| hi\n"


def test_runs_filter_by_starter_and_creation_time(project: Project) -> None:
    project.write("one.yaml", "name: one\nsteps:\n  - {id: a, shell: [echo, hi]}\n")
    first = project.run("run", "one", "--as", "alice", "--json").json()
    second = project.run("run", "one", "--as", "alert:am/disk-full", "--json").json()
    third = project.run("run", "one", "--json").json()  # RUNBOOK_ACTOR=tester

    def ids(*args: str) -> list[str]:
        res = project.run("runs", *args, "--json")
        assert res.code == 0, res
        return [r["run_id"] for r in res.json()["runs"]]

    assert ids("--started-by", "alice") == [first["run_id"]]
    assert ids("--started-by", "alert:*") == [second["run_id"]]
    assert ids("--started-by", "alert") == []
    assert ids("--since", second["created_at"]) == [third["run_id"], second["run_id"]]
    assert ids("--until", second["created_at"]) == [first["run_id"]]
    assert ids("--since", first["created_at"], "--until", third["created_at"], "--started-by", "alert:*") == [second["run_id"]]
    assert ids("--since", "1h") == [third["run_id"], second["run_id"], first["run_id"]]
    assert ids("--until", "1h") == []
    day = datetime.fromisoformat(first["created_at"].replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%dT00:00:00Z")
    assert len(ids("--since", day)) == 3, "an ISO date-time with a zone"
    table = project.run("runs", "--started-by", "alice")
    header, row = table.out.splitlines()
    assert header.split() == ["RUN", "RUNBOOK", "STATE", "CREATED", "STARTED", "BY", "REASON"]
    assert row.split()[:5] == [first["run_id"], "one", "succeeded", first["created_at"], "alice"]
    assert project.run("runs", "--started-by", "nobody").out.strip() == "no runs match"
    bad = project.run("runs", "--since", "yesterday")
    assert bad.code == 2 and "Invalid value for '--since'" in bad.err and "ISO 8601" in bad.err, bad


LISTERS = [
    (["notify", "list"], "no notifications: no journal at", {"notifications": [], "next_before": None}),
    (["alerts", "decisions"], "no decisions recorded: no journal at", {"decisions": [], "next_before": None}),
    (["prune", "--older-than", "1d", "--dry-run"], "nothing to prune: no journal at", None),
]


@pytest.mark.parametrize(("args", "note", "doc"), LISTERS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
@pytest.mark.parametrize("json", [False, True], ids=["human", "json"])
def test_listing_commands_in_an_empty_directory_create_nothing(tmp_path: Path, args: list[str], note: str,
                                                                 doc: dict[str, object] | None, json: bool) -> None:  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli(empty, *args, *(["--json"] if json else []))
    assert tree(empty) == [], f"{args} created {tree(empty)}"
    assert res.code == 0, res
    if not json:
        assert note in res.out, res
    elif doc is not None:
        assert res.json() == doc
    else:
        body = res.json()
        assert body["dry_run"] is True and body["runs"] == 0 and body["journal"] is False, body


@pytest.mark.parametrize("args", [a for a, _, _ in LISTERS], ids=lambda a: a[0])
def test_listing_commands_refuse_a_store_url_whose_directory_does_not_exist(tmp_path: Path, args: list[str]) -> None:
    res = cli(tmp_path, "--store", f"sqlite:///{tmp_path}/nowhere/j.db", *args)
    assert res.code == 2, res
    assert f"the directory {tmp_path}/nowhere does not exist" in res.err, res
    assert not (tmp_path / "nowhere").exists()
