"""``runbook logs`` is complete: every attempt's output (a ``retry:`` in the run and ``runbook retry``), what a
Python step's ``ctx.shell`` calls printed, and what rollback actions printed, each labelled, in order, redacted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import Project

SECRET = "s3cr3t-L0gs-value"
ENV = {"LOGS_TOKEN": SECRET}

FLAKY = """
name: flaky
params:
  token: {{type: string, secret: true, allow: ["env:LOGS_*"]}}
steps:
  - id: flaky
    retry: {{attempts: 3, delay: 0s}}
    shell:
      script: |
        n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}
        echo "try $n token=$TOKEN"; echo "err $n" >&2
        test -f {fixed} || exit 1
      env: {{TOKEN: "{{{{ params.token }}}}"}}
"""


def _lines(project: Project, rid: str, *args: str) -> list[dict[str, Any]]:
    res = project.run("logs", rid, *args, "--json")
    assert res.code == 0, res
    lines: list[dict[str, Any]] = res.json()["lines"]
    return lines


def test_every_attempt_of_a_retried_step_is_in_logs_labelled_in_order(project: Project) -> None:
    count, fixed = project.root / "count", project.root / "fixed"
    project.write("flaky.yaml", FLAKY.format(count=count, fixed=fixed))
    res = project.run("run", "flaky", "-p", "token=env:LOGS_TOKEN", "--json", env=ENV)
    assert res.code == 1, res
    rid = res.json()["run_id"]
    out = [(x["attempt"], x["part"], x["stream"], x["line"]) for x in _lines(project, rid)]
    assert out == [(n, "action", s, f"{w} {n}" + (" token=***" if s == "stdout" else ""))
                   for n in (1, 2, 3) for s, w in (("stdout", "try"), ("stderr", "err"))], out  # fmt: skip
    human = project.run("logs", rid).out
    assert "flaky [attempt 1] stdout| try 1 token=***" in human and "flaky [attempt 3] stderr| err 3" in human, human
    assert human.index("[attempt 1]") < human.index("[attempt 2]") < human.index("[attempt 3]"), human

    # `runbook retry` goes on counting; the first round's attempts stay
    fixed.write_text("")
    assert project.run("retry", rid).code == 0
    res = project.run("resume", rid, env=ENV)
    assert res.code == 0, res
    lines = _lines(project, rid, "--stream", "stdout")
    assert [(x["attempt"], x["line"]) for x in lines] == [(n, f"try {n} token=***") for n in (1, 2, 3, 4)], lines
    assert SECRET not in project.run("logs", rid).out and SECRET not in str(project.run("events", rid, "--json").json())


def test_a_single_attempt_is_not_labelled(project: Project) -> None:
    project.write("one.yaml", "name: one\nsteps:\n  - {id: a, shell: [echo, hi]}\n")
    rid = project.run("run", "one", "--json").json()["run_id"]
    assert project.run("logs", rid).out == "a stdout| hi\n"
    assert _lines(project, rid) == [{"step": "a", "target": None, "stream": "stdout", "n": 1, "line": "hi", "attempt": 1,
                                     "part": "action"}]  # fmt: skip


PYSHELL = """
from runner import Context, Runbook

rb = Runbook("pyshell", secrets={"token": "env:LOGS_TOKEN"})


@rb.step()
def rotate(ctx: Context, p) -> str:
    first = ctx.shell(["sh", "-c", "echo rotating cert; echo warn: old cert expires >&2"])
    second = ctx.shell(["sh", "-c", "echo reloaded token=$TOKEN"], env={"TOKEN": ctx.secrets["token"]})
    return f"exit codes {first.exit_code} {second.exit_code}"
"""


def test_a_python_steps_ctx_shell_output_is_journaled(project: Project) -> None:
    project.write("pyshell.py", PYSHELL)
    res = project.run("run", "pyshell", "--json", env=ENV)
    assert res.code == 0, res
    rid = res.json()["run_id"]
    out = [(x["part"], x["stream"], x["n"], x["line"]) for x in _lines(project, rid)]
    assert out == [("ctx.shell", "stdout", 1, "rotating cert"), ("ctx.shell", "stderr", 1, "warn: old cert expires"),
                   ("ctx.shell", "stdout", 2, "reloaded token=***")], out  # fmt: skip
    assert "rotate [ctx.shell] stdout| rotating cert" in project.run("logs", rid).out
    assert SECRET not in str(project.run("events", rid, "--json").json())


ROLLBACK = """
name: undo
on_failure: rollback
steps:
  - id: change
    shell: {script: "echo changed"}
    rollback: {shell: {script: "echo trying to undo; echo cannot-undo >&2; exit 4"}}
  - id: boom
    shell: {script: "echo boom >&2; exit 1"}
"""


def test_a_rollbacks_output_is_captured_and_labelled(project: Project) -> None:
    project.write("undo.yaml", ROLLBACK)
    res = project.run("run", "undo", "--json")
    assert res.code == 1, res
    rid = res.json()["run_id"]
    lines = _lines(project, rid, "change")
    assert [(x["part"], x["attempt"], x["stream"], x["line"]) for x in lines] == [
        ("action", 1, "stdout", "changed"), ("rollback", None, "stdout", "trying to undo"), ("rollback", None, "stderr", "cannot-undo"),
    ], lines  # fmt: skip
    human = project.run("logs", rid, "change").out
    assert "change [rollback] stderr| cannot-undo" in human, human
    assert [x["line"] for x in _lines(project, rid, "change", "--stream", "stderr")] == ["cannot-undo"]


def test_logs_read_every_run_of_a_journal_written_by_the_previous_release(tmp_path: Path) -> None:
    """The previous release journaled no ``step.attempt_output``/``step.call_output`` and no rollback output: its runs'
    logs read, each unit's output labelled with its last attempt (counted from its ``step.started`` events)."""
    data = Path(__file__).parent / "data" / "legacy_journal"
    project = Project(tmp_path)
    shutil.copytree(data / "runbooks", project.runbooks, dirs_exist_ok=True)
    (tmp_path / ".runbook").mkdir()
    shutil.copy(data / "journal.db", project.journal)
    runs = json.loads((data / "runs.json").read_text())
    for run in runs:
        lines = _lines(project, run["run_id"])
        assert all(x["part"] in ("action", "rollback") and (x["attempt"] is None or x["attempt"] >= 1) for x in lines), lines
    fanout = next(r["run_id"] for r in runs if r["runbook"] == "legacy-fanout")
    (tmp_path / "fixed.flag").touch()
    assert project.run("retry", fanout).code == 0
    assert project.run("resume", fanout).code == 0
    assert project.run("logs", fanout).code == 0
