"""Cancelling: the reason given is the run's reason, and a cancelled run leaves nothing waiting or running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness.procs import wait_for

from tests.conftest import Project, kill


def test_cancelling_a_running_run_keeps_the_given_reason(project: Project) -> None:
    marker = project.root / "started"
    project.write("slow.yaml", f"name: slow\nsteps:\n  - {{id: s, shell: [sh, -c, 'touch {marker}; sleep 30']}}\n")
    proc = project.popen("run", "slow", "--json")
    wait_for(marker.exists, 20, "the command to start")
    rid = project.run("runs", "--runbook", "slow", "--json").json()["runs"][0]["run_id"]
    assert project.run("cancel", rid, "--reason", "maintenance window closed").code in (0, 5)
    proc.communicate(timeout=30)
    assert proc.returncode == 5
    assert project.run("status", rid, "--json").json()["reason"] == "maintenance window closed"


def test_cancelling_a_waiting_run_leaves_no_step_waiting(project: Project) -> None:
    project.write("w.yaml", "name: w\nsteps:\n  - {id: pause, wait: {for: 1h}}\n  - {id: after, shell: [echo, done]}\n")
    res = project.run("run", "w", "--budget", "2s", "--json")
    assert res.code == 4, res
    rid = res.json()["run_id"]
    cancelled = project.run("cancel", rid, "--reason", "not needed", "--json")
    assert cancelled.code in (0, 5), cancelled
    doc = project.run("status", rid, "--json").json()
    assert doc["state"] == "cancelled" and doc["reason"] == "not needed"
    assert {s["id"]: s["state"] for s in doc["steps"]} == {"pause": "failed", "after": "pending"}


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="leftovers are found through /proc (Linux)")
def test_cancelling_a_run_whose_executor_was_killed_stops_what_it_left_running(project: Project) -> None:
    pidfile = project.root / "pid"
    project.write("orphan.yaml", f"name: orphan\nsteps:\n  - {{id: s, shell: [sh, -c, 'echo $$ > {pidfile}; exec sleep 60']}}\n")
    proc = project.popen("run", "orphan", "--json")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 20, "the command to start")
    kill(proc)
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}").exists()
    rid = project.run("runs", "--runbook", "orphan", "--json").json()["runs"][0]["run_id"]
    assert project.run("cancel", rid).code in (0, 5)
    wait_for(
        lambda: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z",
        10,
        "the process to end",
    )
    events = [e["type"] for e in project.run("events", rid, "--json").json()["events"]]
    assert "run.leftovers_stopped" in events and events[-1] == "run.cancelled"
