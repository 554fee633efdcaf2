"""Commands a killed executor left running are stopped before its run is recovered, never run twice at once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.procs import wait_for

from runner import leftovers
from tests.conftest import Project, kill

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="leftovers are found through /proc (Linux)")


def test_resume_after_kill_9_stops_the_orphaned_action_before_running_it_again(project: Project) -> None:
    log, done, first = project.root / "mig.log", project.root / "mig.done", project.root / "first"
    project.write(
        "orphan.yaml",
        f"""
        name: orphan
        steps:
          - id: mig
            check:
              - shell: [test, -f, "{done}"]
            shell: [sh, -c, "echo start $$ >> {log}; if [ -f {first} ]; then sleep 0.2; else touch {first}; sleep 30; fi; echo end $$ >> {log}; touch {done}"]
    """,
    )
    proc = project.popen("run", "orphan", "--json")
    wait_for(lambda: log.exists() and "start" in log.read_text(), 20, "the command to start")
    kill(proc)
    first = log.read_text().split()[1]
    assert Path(f"/proc/{first}").exists(), "the action should outlive its killed executor"
    run_id = project.run("runs", "--runbook", "orphan", "--json").json()["runs"][0]["run_id"]
    res = project.run("resume", run_id, "--json")
    assert res.code == 0, res
    time.sleep(0.3)
    lines = log.read_text().split("\n")
    assert f"end {first}" not in lines, f"the orphaned action went on: {lines}"
    assert [line.split()[0] for line in lines if line] == ["start", "start", "end"], lines
    events = project.run("events", run_id, "--json").json()["events"]
    stopped = [e for e in events if e["type"] == "run.leftovers_stopped"]
    assert len(stopped) == 1 and {p["name"] for p in stopped[0]["data"]["processes"]} == {"sh", "sleep"}
    kinds = [e["type"] for e in events]
    assert kinds.index("run.leftovers_stopped") < kinds.index("step.recovered")


def test_commands_carry_the_run_and_step_and_cannot_drop_them(project: Project) -> None:
    project.write(
        "tagged.yaml",
        """
        name: tagged
        steps:
          - id: argv
            shell: [sh, -c, 'echo "$RUNBOOK_RUN_ID $RUNBOOK_STEP_ID"']
          - id: own-env
            shell: {command: [sh, -c, 'echo "$RUNBOOK_RUN_ID $RUNBOOK_STEP_ID"'], env: {RUNBOOK_RUN_ID: mine}}
          - id: script
            shell: {script: 'echo "$RUNBOOK_RUN_ID $RUNBOOK_STEP_ID"'}
    """,
    )
    res = project.run("run", "tagged", "--json")
    assert res.code == 0, res
    rid = res.json()["run_id"]
    assert {s["id"]: s["output"]["stdout"].strip() for s in res.json()["steps"]} == {
        "argv": f"{rid} argv",
        "own-env": f"{rid} own-env",
        "script": f"{rid} script",
    }


@pytest.fixture
def tagged_session() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A session like a step's command: its leader tagged (a run id of its own), a child that cleared its environment."""
    run_id = f"01TEST{uuid.uuid4().hex[:20].upper()}"
    env = {**os.environ, leftovers.RUN_ENV: run_id, leftovers.STEP_ENV: "s"}
    proc = subprocess.Popen(["sh", "-c", "env -i sleep 60 & sleep 60"], env=env, start_new_session=True)
    try:
        wait_for(lambda: sorted(p.name for p in leftovers.find(run_id)) == ["sh", "sleep", "sleep"], 20, "the command to start")
        yield run_id, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_find_takes_the_whole_session_of_the_runs_steps_only(tagged_session: tuple[str, subprocess.Popen[bytes]]) -> None:
    run_id, proc = tagged_session
    found = leftovers.find(run_id)
    assert {p.sid for p in found} == {proc.pid}
    assert len(found) == 3 and len({p.pid for p in found}) == 3
    assert leftovers.find(run_id, ["s"]) == found
    assert leftovers.find(run_id, ["another-step"]) == [], "a session of a step that is not in flight is left alone"
    assert leftovers.find("01OTHERRUN") == []
    assert all(p.pid != os.getpid() for p in found)


def test_stop_ends_every_process_of_the_session(tagged_session: tuple[str, subprocess.Popen[bytes]]) -> None:
    run_id, proc = tagged_session
    found, survivors = leftovers.stop(run_id, grace=2.0)
    assert len(found) == 3 and survivors == []
    proc.wait(timeout=10)
    assert leftovers.find(run_id) == []


def test_a_daemon_a_finished_step_left_behind_is_not_stopped(project: Project) -> None:
    pidfile, marker = project.root / "daemon.pid", project.root / "second"
    project.write(
        "daemon.yaml",
        f"""
        name: daemon
        steps:
          - id: start-daemon
            shell: [sh, -c, "setsid sleep 300 < /dev/null > /dev/null 2>&1 & echo $! > {pidfile}"]
          - id: long
            check: [{{shell: ["false"]}}]
            shell: [sh, -c, "touch {marker}; exec sleep 30"]
    """,
    )
    proc = project.popen("run", "daemon", "--json")
    wait_for(marker.exists, 20, "the command to start")
    kill(proc)
    daemon = int(pidfile.read_text())
    try:
        rid = project.run("runs", "--runbook", "daemon", "--json").json()["runs"][0]["run_id"]
        assert project.run("cancel", rid).code in (0, 5)  # the orphaned `sleep 30` of step `long` is stopped
        events = project.run("events", rid, "--json").json()["events"]
        [stopped] = [e for e in events if e["type"] == "run.leftovers_stopped"]
        assert [p["name"] for p in stopped["data"]["processes"]] == ["sleep"]
        assert daemon not in [p["pid"] for p in stopped["data"]["processes"]]
        assert Path(f"/proc/{daemon}").exists(), "the daemon of the finished step is still running"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, leftovers.RUN_ENV: "01STUBBORN"}
    ready = tmp_path / "ready"
    code = f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open({str(ready)!r}, 'w').close(); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        wait_for(ready.exists, 20, "the command to start")
        started = time.monotonic()
        found, survivors = leftovers.stop("01STUBBORN", grace=0.5)
        assert [p.pid for p in found] == [proc.pid] and survivors == []
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
