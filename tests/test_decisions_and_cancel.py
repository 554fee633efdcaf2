"""Decisions on a step are one at a time; an interrupted step that needs a decision notifies at once; cancel's
advice about rollback works; a failed rollback needs a person."""

from __future__ import annotations

import json
import shlex
import signal
import time

from harness.httpserver import HTTPTestServer, Reply

from tests.conftest import Project, kill
from tests.test_engine_cli import wait_for
from tests.test_notify import configure


def interrupt_twice(project: Project, name: str) -> str:
    """Start runbook ``name`` (whose step ``s`` sleeps, with no check), stop it with two SIGINTs; its run id."""
    project.write(f"{name}.yaml", f"name: {name}\nsteps:\n  - {{id: s, shell: [sleep, '60']}}\n")
    proc = project.popen("run", name, "--json")
    wait_for(lambda: project.run("runs", "--runbook", name, "--state", "running", "--json").json()["runs"], what=f"{name} running")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    out, err = kill(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["state"] == "interrupted" and doc["next"]["action"] == "decide", doc
    return str(doc["run_id"])


def test_a_second_decision_on_a_step_is_refused_until_the_first_is_applied(project: Project) -> None:
    rid = interrupt_twice(project, "twice")
    first = project.run("decide", rid, "--retry-step", "s", "--json", env={"RUNBOOK_ACTOR": "alice"})
    assert first.code == 0 and first.json()["next"]["action"] == "resume", first
    for flag in ("--skip-step", "--retry-step"):
        second = project.run("decide", rid, flag, "s", "--json", env={"RUNBOOK_ACTOR": "bob"})
        assert second.code == 2, second
        error = second.json()["error"]
        assert "already has a decision recorded: retry, by alice" in error["message"], error
        assert f"runbook resume {rid}" in error["hint"], error
    from runner.api import Client
    from runner.errors import UsageError

    with Client(paths=[project.runbooks], project_dir=project.root, actor="carol") as client:
        try:
            client.decide(rid, skip_step="s")
        except UsageError as exc:
            assert "retry, by alice" in exc.message
        else:
            raise AssertionError("the Python API accepted a conflicting decision")
    decided = [e for e in project.run("events", rid, "--json").json()["events"] if e["type"] == "request.decide"]
    assert [(e["actor"], e["data"]["decision"]) for e in decided] == [("alice", "retry")], "the refused ones are not recorded"
    project.write("twice.yaml", "name: twice\nsteps:\n  - {id: s, shell: ['true']}\n")
    resumed = project.run("resume", rid, "--accept-changes", "--json")
    assert resumed.code == 0 and resumed.json()["state"] == "succeeded", resumed
    assert "no longer applies" not in resumed.err


def test_a_step_interrupted_into_a_decision_notifies_at_once(project: Project, http_server: HTTPTestServer) -> None:
    http_server.route("/hook", Reply(200))
    configure(project, """
        notify:
          channels: {{hook: {{type: webhook, url: "{hook}"}}}}
          rules: [{{events: [unknown], channels: [hook]}}]
        """, hook=http_server.url("/hook"))  # fmt: skip
    rid = interrupt_twice(project, "cut")
    rows = project.run("notify", "list", "--json").json()["notifications"]
    assert [(r["kind"], r["step"] if "step" in r else r.get("step_id")) for r in rows] == [("unknown", "s")], rows
    assert project.run("notify", "deliver", "--wait", "2s").code == 0
    (msg,) = [r.json() for r in http_server.requests_to("/hook")]
    assert msg["kind"] == "unknown" and msg["run"]["id"] == rid and msg["step"] == "s"
    assert msg["commands"]["skip_step"] == f"runbook decide {rid} --skip-step s"
    resumed = project.run("resume", rid, "--json")  # asks the same question again: no second message
    assert resumed.code == 4 and resumed.json()["next"]["action"] == "decide", resumed
    assert project.run("notify", "deliver", "--wait", "2s").code == 0
    assert len(http_server.requests_to("/hook")) == 1
    assert [r["kind"] for r in project.run("notify", "list", "--json").json()["notifications"]] == ["unknown"]
    assert project.run(*shlex.split(msg["commands"]["skip_step"])[1:]).code == 0
