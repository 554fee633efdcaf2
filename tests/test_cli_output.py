"""Plain-text output through a pipe keeps every value on one line, so it can be grepped and cut."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.procs import wait_for

from tests.conftest import Project, kill

LONG = "the-service-that-must-be-restarted-before-the-migration-" * 3


def test_tables_in_a_pipe_never_wrap_ids_or_reasons(project: Project) -> None:
    project.write(
        "long.yaml",
        f"""
        name: long
        steps:
          - id: fails
            shell: [sh, -c, "echo {LONG} >&2; exit 3"]
            expect: {{exit_code: 0}}
    """,
    )
    ids = [project.run("run", "long", "--json").json()["run_id"] for _ in range(2)]
    env = {k: v for k, v in project.env.items() if k != "COLUMNS"}  # no terminal, no COLUMNS: what a pipe sees
    out = subprocess.run(project.cmd("runs", "--runbook", "long"), cwd=project.root, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stdout  # the header and one line per run
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(ids)
    shown = subprocess.run(project.cmd("status", ids[0]), cwd=project.root, env=env, capture_output=True, text=True, timeout=60)
    assert any(ids[0] in line for line in shown.stdout.splitlines()), shown.stdout


def test_a_person_is_shown_the_commands_to_approve_refuse_or_retry(project: Project) -> None:
    project.write("appr.yaml", "name: appr\nsteps:\n  - id: g\n    approval: {message: ok?}\n")
    project.write("fl.yaml", 'name: fl\nsteps:\n  - id: g\n    shell: ["false"]\n')
    waiting = project.run("run", "appr")
    assert waiting.code == 4, waiting
    rid = project.run("runs", "--runbook", "appr", "--json").json()["runs"][0]["run_id"]
    assert f"next: runbook approve {rid} --by NAME" in waiting.out
    assert f"or refuse: runbook deny {rid} --by NAME" in waiting.out
    failed = project.run("run", "fl")
    assert failed.code == 1, failed
    rid = project.run("runs", "--runbook", "fl", "--json").json()["runs"][0]["run_id"]
    assert f"fix the cause, then: runbook retry {rid}" in failed.out
    assert f"then: runbook resume {rid}" in failed.out
    assert f"or retry and resume at once: runbook resume {rid} --retry" in failed.out


def test_next_command_works_from_any_directory(project: Project, tmp_path: Path) -> None:
    import shlex

    (project.root / "other").mkdir()
    project.write("../other/two.yaml", "name: two\nsteps:\n  - {id: a, shell: [echo, a]}\n  - {id: b, shell: [echo, b]}\n")
    res = project.run("--path", "other", "--store", "sqlite:///rel.db", "run", "two", "--max-steps", "1", "--json")
    assert res.code == 3, res
    command = shlex.split(res.json()["next"]["command"])
    assert command[0] == "runbook"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(project.cmd(*command[1:]), cwd=elsewhere, env=project.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project.root / "rel.db").exists() and not (elsewhere / "rel.db").exists()


def test_every_run_view_in_json_has_the_documented_notices_key(project: Project) -> None:
    project.write("two.yaml", "name: two\nsteps:\n  - {id: a, shell: [echo, a]}\n  - {id: b, shell: [echo, b]}\n")
    run = project.run("run", "two", "--max-steps", "1", "--json")
    rid = run.json()["run_id"]
    for args in (("status", rid), ("pause", rid), ("cancel", rid), ("status", rid)):
        res = project.run(*args, "--json")
        assert res.code in (0, 3, 5), res
        assert res.json()["notices"] == [] and res.json()["run_id"] == rid, args


def test_run_ids_that_name_nothing_are_errors(project: Project) -> None:
    project.write("one.yaml", "name: one\nsteps:\n  - {id: a, shell: [echo, a]}\n")
    rid = project.run("run", "one", "--json").json()["run_id"]
    unknown = project.run("runs", "--before", "ZZZZZZZZ")
    assert unknown.code == 2 and "no run with id 'ZZZZZZZZ'" in unknown.err, unknown
    assert project.run("runs", "--before", rid[:8], "--json").json()["runs"] == []
    short = project.run("status", rid[:4])
    assert short.code == 2 and "too short" in short.err and "at least its first 6" in short.err, short
    both = project.run("resume", rid, "--retry-step", "a", "--skip-step", "a")
    assert both.code == 2 and "both name step 'a'" in both.err, both


def test_status_says_when_a_running_runs_executor_is_gone(project: Project) -> None:
    marker = project.root / "started"
    project.write("slow.yaml", f"name: slow\nsteps:\n  - {{id: s, idempotent: true, shell: [sh, -c, 'touch {marker}; exec sleep 30']}}\n")
    proc = project.popen("run", "slow", "--json")
    wait_for(marker.exists, 20, "the step to start")
    kill(proc)
    rid = project.run("runs", "--runbook", "slow", "--json").json()["runs"][0]["run_id"]
    shown = project.run("status", rid)
    assert "running" in shown.out and "is no longer running; resume recovers the run" in shown.out, shown
    assert project.run("cancel", rid).code in (0, 5)  # and stop the orphaned sleep
