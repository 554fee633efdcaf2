"""Decisions on a step are one at a time; an interrupted step that needs a decision notifies at once; cancel's
advice about rollback works; a failed rollback needs a person."""

from __future__ import annotations

import json
import shlex

from harness.httpserver import HTTPTestServer, Reply

from tests.conftest import Project
from tests.test_engine_cli import wait_for
from tests.test_engine_semantics import interrupt_twice
from tests.test_notify import configure


def test_a_second_decision_on_a_step_is_refused_until_the_first_is_applied(project: Project) -> None:
    rid = interrupt_twice(project, "twice")["run_id"]
    first = project.run("decide", rid, "--retry-step", "s", "--json", env={"RUNBOOK_ACTOR": "alice"})
    assert first.code == 0 and first.json()["next"]["action"] == "resume", first
    for flag in ("--skip-step", "--retry-step"):
        second = project.run("decide", rid, flag, "s", "--json", env={"RUNBOOK_ACTOR": "bob"})
        assert second.code == 2, second
        error = second.json()["error"]
        assert "already has a decision recorded: retry, by alice" in error["message"], error
        assert f"runbook resume {rid}" in error["hint"], error
    legacy = project.run("resume", rid, "--skip-step", "s", "--json")  # the old one-call flag is held to it too
    assert legacy.code == 2 and "retry, by alice" in legacy.json()["error"]["message"], legacy
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
    rid = interrupt_twice(project, "cut")["run_id"]
    rows = project.run("notify", "list", "--json").json()["notifications"]
    assert [(r["kind"], r["step"] if "step" in r else r.get("step_id")) for r in rows] == [("unknown", "s")], rows
    assert project.run("notify", "deliver", "--wait", "2s").code == 0
    (msg,) = [r.json() for r in http_server.requests_to("/hook")]
    assert msg["kind"] == "unknown" and msg["run"]["id"] == rid and msg["step"] == "s"
    assert "step 's' needs a decision" in msg["reason"] and "needs a decision at step 's'" in msg["title"], msg
    assert msg["commands"]["skip_step"] == f"runbook decide {rid} --skip-step s"
    resumed = project.run("resume", rid, "--json")  # asks the same question again: no second message
    assert resumed.code == 4 and resumed.json()["next"]["action"] == "decide", resumed
    assert project.run("notify", "deliver", "--wait", "2s").code == 0
    assert len(http_server.requests_to("/hook")) == 1
    assert [r["kind"] for r in project.run("notify", "list", "--json").json()["notifications"]] == ["unknown"]
    assert project.run(*shlex.split(msg["commands"]["skip_step"])[1:]).code == 0


def undo_runbook(project: Project, name: str, two_rollback: str) -> str:
    """Steps ``one`` and ``two`` with rollback actions (``two``'s is ``two_rollback``), then an approval: its run id."""
    log = project.root / "undo.log"
    project.write(f"{name}.yaml", f"""
        name: {name}
        steps:
          - id: one
            shell: [sh, -c, "echo one >> {log}"]
            rollback: {{shell: [sh, -c, "echo undo-one >> {log}"]}}
          - id: two
            shell: [sh, -c, "echo two >> {log}"]
            rollback: {{shell: [sh, -c, '{two_rollback}']}}
          - id: gate
            approval: {{message: go?}}
        """)  # fmt: skip
    started = project.run("run", name, "--json")
    assert started.code == 4, started
    return str(started.json()["run_id"])


def test_the_rollback_a_plain_cancel_left_runs_with_the_command_it_advises(project: Project) -> None:
    import re

    log = project.root / "undo.log"
    rid = undo_runbook(project, "left", f"echo undo-two >> {log}")
    plain = project.run("cancel", rid, "--json")
    assert plain.code == 0 and "not rolled back: two, one" in plain.json()["reason"], plain
    (advice,) = [m for n in plain.json()["notices"] for m in re.findall(r"`(runbook cancel [^`]+)`", n)]
    assert advice == f"runbook cancel {rid} --rollback"
    done = project.run(*shlex.split(advice)[1:], "--json")
    assert done.code == 0, done
    doc = done.json()
    assert doc["state"] == "cancelled" and doc["next"]["action"] == "none", doc
    assert "rolled back two, one" in doc["reason"] and "not rolled back" not in doc["reason"], doc["reason"]
    assert {s["id"]: s["state"] for s in doc["steps"]} == {"one": "rolled_back", "two": "rolled_back", "gate": "failed"}
    assert log.read_text().split() == ["one", "two", "undo-two", "undo-one"], "each rollback once, last step first"
    types = [e["type"] for e in project.run("events", rid, "--json").json()["events"]]
    assert types.count("rollback.finished") == 2 and types[-1] == "run.rolled_back", types
    again = project.run("cancel", rid, "--rollback", "--json")
    assert again.code == 6 and log.read_text().split().count("undo-one") == 1, "nothing is left to roll back"


def test_a_failed_rollback_needs_a_person_and_shows_no_success_mark(project: Project) -> None:
    log, fixed = project.root / "undo.log", project.root / "fixed"
    rid = undo_runbook(project, "stuck", f"test -f {fixed} && echo undo-two >> {log}")
    res = project.run("cancel", rid, "--rollback", "--json")
    doc = res.json()
    assert doc["state"] == "cancelled" and "rollback failed for two" in doc["reason"], doc
    nxt = doc["next"]
    assert nxt["action"] == "fix_and_retry" and nxt["step"] == "two", nxt
    assert nxt["human_command"] == f"runbook cancel {rid} --rollback --json" and "two" in nxt["reason"], nxt
    two = next(s for s in doc["steps"] if s["id"] == "two")
    assert two["state"] == "succeeded" and two["rollback_failed"] is True, two
    human = project.run("status", rid)
    line = next(ln for ln in human.out.splitlines() if " two " in ln)
    assert "✓" not in line and "rollback failed" in line, human.out
    assert f"runbook cancel {rid} --rollback" in human.out, human.out
    fixed.touch()
    again = project.run(*shlex.split(nxt["human_command"])[1:])
    assert again.code == 0, again
    final = project.run("status", rid, "--json").json()
    assert final["next"]["action"] == "none" and {s["id"]: s["state"] for s in final["steps"]}["two"] == "rolled_back", final
    assert log.read_text().split() == ["one", "two", "undo-one", "undo-two"], "undo-one ran once; two's rollback ran when fixed"


def test_a_cancel_of_a_run_executing_elsewhere_says_it_was_requested(project: Project) -> None:
    marker = project.root / "started"
    project.write("busy.yaml", f"name: busy\nsteps:\n  - {{id: s, shell: [sh, -c, 'touch {marker}; sleep 60']}}\n")
    proc = project.popen("run", "busy", "--json")
    wait_for(marker.exists, what="the step started")
    rid = project.run("runs", "--json").json()["runs"][0]["run_id"]
    res = project.run("cancel", rid, "--reason", "wrong host", "--json")
    assert res.code == 0, res
    doc = res.json()
    if doc["state"] == "running":  # (the executor may already have applied it: then the view says cancelled)
        assert doc["exit_code"] == 0 and doc["reason"].startswith("cancel requested: wrong host"), doc
        assert any("the run's executor (cli pid" in n and f"runbook status {rid}" in n for n in doc["notices"]), doc["notices"]
        assert doc["next"]["action"] == "wait_elsewhere", doc["next"]
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 5 and json.loads(out)["state"] == "cancelled"
