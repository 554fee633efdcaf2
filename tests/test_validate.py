"""`runbook validate` finds everything it can know statically: the corpus of broken runbooks in tests/cases/invalid.

Each case (a file, or a directory of runbooks that belong together) holds one class of mistake; the table in
tests/cases/invalid/EXPECTED.md lists every problem it must report, at file:line:column, with its field. The
shipped examples must stay free of problems.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent
INVALID = REPO / "tests" / "cases" / "invalid"
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "RUNBOOK_CACHE_DIR": "off", "RUNBOOK_STORE": "sqlite:////tmp/never-created.db",
       "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=120)


def expected() -> dict[str, list[dict[str, str]]]:
    """case → its rows of EXPECTED.md."""
    cases: dict[str, list[dict[str, str]]] = {}
    for line in (INVALID / "EXPECTED.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 4 or cells[0] in ("case", "---") or set(cells[0]) <= {"-"}:
            continue
        case, at, field, message = cells
        cases.setdefault(case, []).append({"at": at, "field": field, "message": message})
    return cases


CASES = expected()


def field_of(problem: dict[str, Any]) -> str:
    where = problem["where"] or ""
    found = re.search(r"field '([^']*)'", where)
    return found.group(1) if found else "-"


def matches(problem: dict[str, Any], row: dict[str, str], case_dir: Path) -> bool:
    file, line, col = row["at"].rsplit(":", 2)
    return (
        Path(problem["file"]).resolve() == (case_dir / file).resolve()
        and (problem["line"], problem["column"]) == (int(line), int(col))
        and field_of(problem) == row["field"]
        and row["message"] in problem["message"]
    )


def test_the_corpus_covers_at_least_25_cases_in_both_forms() -> None:
    assert len(CASES) >= 25, len(CASES)
    assert sum(1 for c in CASES if c.endswith(".py")) >= 8
    assert sum(1 for c in CASES if c.endswith((".yaml", "/"))) >= 25
    on_disk = {p.name + ("/" if p.is_dir() else "") for p in INVALID.iterdir() if p.name != "EXPECTED.md" and p.name[0] not in "_."}
    assert on_disk == set(CASES), "every case has its rows in EXPECTED.md, and every row a case"
    assert len(CASES["five-mistakes.yaml"]) == 5


@pytest.mark.parametrize("case", sorted(CASES), ids=sorted(CASES))
def test_validate_reports_exactly_the_expected_problems(case: str) -> None:
    path = INVALID / case.rstrip("/")
    case_dir = path if path.is_dir() else path.parent
    res = cli("validate", "--json", str(path))
    assert res.returncode == 2, res
    problems = json.loads(res.stdout)["problems"]
    rows = CASES[case]
    missing = [row for row in rows if not any(matches(p, row, case_dir) for p in problems)]
    assert not missing, f"not reported: {missing}\nreported: {json.dumps(problems, indent=1)}"
    assert len(problems) == len(rows), f"reported more than expected: {json.dumps(problems, indent=1)}"
    human = cli("validate", str(path))
    assert human.returncode == 2
    for row in rows:
        file, line, col = row["at"].rsplit(":", 2)
        assert re.search(rf"{re.escape(Path(file).name)}:{line}:{col}\b", human.stderr), (row, human.stderr)


def test_the_whole_corpus_at_once_reports_every_problem_of_every_file() -> None:
    res = cli("validate", "--json", str(INVALID))
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert len(doc["problems"]) == sum(len(rows) for rows in CASES.values())
    assert doc["valid"] is False and doc["runbooks"]  # the runbooks that compiled (with static problems) are listed
    files = {Path(p["file"]).name for p in doc["problems"]}
    assert {c for c in CASES if not c.endswith("/") and c != "include-cycle.yaml"} <= files


def test_the_summary_counts_files_and_problems() -> None:
    res = cli("validate", str(INVALID / "five-mistakes.yaml"))
    assert res.stdout.strip() == "1 file, 0 runbooks valid: 5 problems in 1 file"
    res = cli("validate", str(INVALID / "subrunbook-params"))
    assert res.stdout.strip() == "2 files, 1 runbook valid: 3 problems in 1 file"
    ok = cli("validate")
    assert ok.returncode == 0, ok.stderr
    assert re.fullmatch(r"\d+ runbooks in \d+ files: ok", ok.stdout.strip())


def test_no_shipped_example_is_reported() -> None:
    res = cli("validate", "--json", str(REPO / "runbooks"))
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["problems"] == [] and doc["valid"] is True, doc["problems"]
    assert {"disk-cleanup", "drain-node", "restart-service", "rotate-log"} <= {r["name"] for r in doc["runbooks"]}


def test_a_problem_in_an_included_file_names_it_and_the_including_file() -> None:
    doc = json.loads(cli("validate", "--json", str(INVALID / "include-error")).stdout)
    by_file = {Path(p["file"]).name: p for p in doc["problems"]}
    assert by_file["lb.yaml"]["included_from"].endswith("include-error/runbook.yaml:2:11")
    assert by_file["health.yaml"]["included_from"].endswith("include-error/runbook.yaml:4:14")
    human = cli("validate", str(INVALID / "include-error")).stderr
    assert "_shared/lb.yaml:3:14 (step 'health', field 'http.timeout')" in human and "(included from " in human
    deep = json.loads(cli("validate", "--json", str(INVALID / "include-cycle.yaml")).stdout)["problems"][0]
    assert deep["included_from"].endswith("_fragments/loop-a.yaml:4:14, included from " + str(INVALID / "include-cycle.yaml:3:14"))


@pytest.mark.parametrize("command", [["run", "five-mistakes"], ["plan", "five-mistakes"], ["show", "five-mistakes"],
                                     ["run", "broken-syntax"]])  # fmt: skip
def test_a_command_on_a_runbook_whose_file_is_invalid_shows_the_files_errors(project: Project, command: list[str]) -> None:
    project.write("five-mistakes.yaml", (INVALID / "five-mistakes.yaml").read_text())
    project.write("syntax.yaml", (INVALID / "syntax-error.yaml").read_text())
    project.write("fine.yaml", "name: fine\nsteps: [{id: a, shell: ['true']}]\n")
    res = project.run(*command)
    assert res.code == 2, res
    assert "no runbook named" not in res.err
    wanted = "runbooks/syntax.yaml:5:1" if command[1] == "broken-syntax" else "runbooks/five-mistakes.yaml:10:5 (step 'b', field 'shel')"
    assert wanted in res.err
    assert "runbooks/syntax.yaml" not in res.err or command[1] == "broken-syntax", "only that file's errors"
    doc = project.run(*command, "--json").json()
    assert doc["error"]["type"] == "ValidationError" and doc["error"]["problems"]
    assert not project.journal.exists() or command[0] != "run" or project.run("runs", "--json").json()["runs"] == []
