"""Workers: graceful SIGTERM of ``runbook serve`` and a separate ``runbook worker`` process on the same store."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

from tests.conftest import Project
from tests.server.conftest import TOKEN
from tests.server.serverkit import ServerProcess, poll

TWO_STEPS = """
name: two-steps
steps:
  - id: first
    shell: [sh, -c, 'echo first >> "$0"; sleep 2', "LOG"]
  - id: second
    shell: [sh, -c, 'echo second >> "$0"', "LOG"]
"""


def test_sigterm_finishes_the_step_requeues_the_run_and_a_worker_completes_it(project: Project,
                                                                               serve: Callable[..., ServerProcess]) -> None:  # fmt: skip
    log = project.root / "steps.log"
    project.write("two-steps.yaml", TWO_STEPS.replace("LOG", str(log)))
    server = serve("tokens: [{name: admin, token: env:T_ADMIN, scopes: [admin]}]\n", env={"T_ADMIN": TOKEN}, token=TOKEN, workers=1)
    c = server.client()
    rid = c.post("/v1/runs", json={"runbook": "two-steps"}).json()["run_id"]
    poll(lambda: log.exists() and log.read_text() == "first\n", what="the first step to start")
    assert server.stop(signal.SIGTERM) == 0
    assert "finishing current steps" in server.log()
    status = project.run("status", rid, "--json").json()
    assert status["state"] == "queued", status
    assert [s["state"] for s in status["steps"]] == ["succeeded", "pending"], "the step in flight finished and was checkpointed"
    events = [e["type"] for e in project.run("events", rid, "--json").json()["events"]]
    assert events[-2:] == ["run.interrupted", "run.queued"]

    worker = subprocess.Popen(project.cmd("worker", "--workers", "1", "--poll", "0.1"), cwd=project.root, env=project.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        poll(lambda: project.run("status", rid, "--json").json()["state"] == "succeeded", what="the worker to finish the run")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert log.read_text().split() == ["first", "second"], "no step ran twice"


def test_worker_executes_runs_queued_by_a_server_without_workers(project: Project, serve: Callable[..., ServerProcess]) -> None:
    log = project.root / "steps.log"
    project.write("two-steps.yaml", TWO_STEPS.replace("LOG", str(log)).replace("sleep 2", "true"))
    server = serve("", workers=0)
    ids = [server.client().post("/v1/runs", json={"runbook": "two-steps"}).json()["run_id"] for _ in range(3)]
    assert all(server.run_state(rid) == "queued" for rid in ids)
    worker = subprocess.Popen(project.cmd("worker", "--workers", "2", "--poll", "0.1"), cwd=project.root, env=project.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        for rid in ids:
            server.wait_state(rid, "succeeded")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert worker.returncode == 0
    assert sorted(log.read_text().split()) == ["first"] * 3 + ["second"] * 3
    views = [server.client().get(f"/v1/runs/{rid}/events").json()["events"] for rid in ids]
    executors = {e["data"]["executor"] for evs in views for e in evs if e["type"] == "run.started"}
    assert executors and all(x.startswith("worker-") for x in executors)
