"""Truthful engine: bounded views with the whole output in `logs`, recursion refused before anything acts,
cancel with rollback resumed after kill -9, edits that would slip past a waiting step, nesting limits."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.conftest import Project, kill


def _wait(fn, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_status_is_bounded_and_logs_give_the_whole_output(project: Project) -> None:
    mib = "head -c 1048000 /dev/zero | tr '\\\\0' x; echo; echo last-line-{i}"
    steps = "\n".join(f'  - {{id: s{i}, shell: {{script: "{mib.format(i=i)}"}}}}' for i in range(3))
    project.write("chatty.yaml", f"name: chatty\nsteps:\n{steps}\n")
    run = project.run("run", "chatty", "--json")
    assert run.code == 0, run.err[-2000:]
    assert len(run.out) < 64 * 1024, f"run --json is {len(run.out)} bytes"
    rid = run.json()["run_id"]
    status = project.run("status", rid, "--json")
    assert len(status.out) < 64 * 1024, f"status --json is {len(status.out)} bytes"
    for i, step in enumerate(status.json()["steps"]):
        assert step["truncated"] is True and step["sizes"]["stdout"] > 1_000_000, step["sizes"]
        assert step["output"]["stdout"].rstrip().endswith(f"last-line-{i}") and step["exit_code"] == 0
    logs = project.run("logs", rid, "s1", "--stream", "stdout", "--json")
    lines = [line["line"] for line in logs.json()["lines"]]
    assert lines[-1] == "last-line-1" and sum(len(line) for line in lines) >= 1048000, "the whole output is in logs"
    text = project.run("logs", rid, "s2")
    assert text.code == 0 and text.out.rstrip().endswith("s2 stdout| last-line-2")


def test_recursive_runbooks_never_start(project: Project) -> None:
    marker = project.root / "marker"
    project.write(
        "self.yaml", f"name: self\nsteps:\n  - {{id: mark, shell: [touch, '{marker}']}}\n  - id: again\n    runbook: {{name: self}}\n"
    )
    project.write(
        "ping.yaml", f"name: ping\nsteps:\n  - {{id: mark, shell: [touch, '{marker}']}}\n  - id: go\n    runbook: {{name: pong}}\n"
    )
    project.write("pong.yaml", "name: pong\nsteps:\n  - id: back\n    runbook: {name: ping}\n")
    checked = project.run("validate", "--json")
    assert checked.code == 2, checked
    text = str(checked.json())
    assert "sub-runbook cycle: self → self" in text and "sub-runbook cycle: ping → pong → ping" in text, text
    for name, cycle in (("self", "self -> self"), ("ping", "ping -> pong -> ping")):
        res = project.run("run", name, "--json")
        assert res.code == 2, res
        assert cycle in res.json()["error"]["message"], res.json()
    assert not marker.exists(), "nothing acted"
    assert project.run("runs", "--json").json()["runs"] == [], "no run was created"


def test_nesting_deeper_than_the_limit_is_refused_with_a_clear_reason(project: Project) -> None:
    for i in range(10):
        call = f"  - id: down\n    runbook: {{name: r{i + 1}}}\n" if i < 9 else "  - {id: bottom, shell: [echo, bottom]}\n"
        project.write(f"r{i}.yaml", f"name: r{i}\nsteps:\n{call}")
    res = project.run("run", "r0", "--json")
    assert res.code == 1, res
    reason = res.json()["reason"]
    assert "would nest 9 levels deep; the limit is 8" in reason and len(reason) < 2000, reason


ROLLBACK = """
name: deploy
steps:
{steps}
  - id: finale
    shell: [sleep, "30"]
"""


def test_cancel_rollback_resumes_after_kill_9_and_runs_each_rollback_once(project: Project) -> None:
    log = project.root / "rb.log"
    hold = project.root / "hold"
    steps = []
    for i in range(1, 4):
        slow = f"while [ -f {hold} ]; do sleep 0.05; done; " if i == 2 else ""
        steps.append(f'  - id: s{i}\n    shell: {{script: "echo do-{i} >> {log}"}}\n'
                     f'    rollback: {{shell: {{script: "{slow}echo undo-{i} >> {log}"}}}}')  # fmt: skip
    project.write("deploy.yaml", ROLLBACK.format(steps="\n".join(steps)))
    proc = project.popen("run", "deploy")
    _wait(lambda: log.exists() and "do-3" in log.read_text())
    rid = project.run("runs", "--json").json()["runs"][0]["run_id"]
    kill(proc)  # the run is left running, its executor dead; nothing was rolled back
    plain_note = project.run("status", rid, "--json").json()
    assert plain_note["state"] == "running"
    hold.touch()  # the rollback of s2 waits here: kill the canceller in the middle of the rollback
    canceller = project.popen("cancel", rid, "--rollback", "--json")
    _wait(lambda: "undo-3" in log.read_text())
    time.sleep(0.3)
    kill(canceller)
    assert log.read_text().split().count("undo-3") == 1 and "undo-1" not in log.read_text()
    hold.unlink()
    resumed = project.run("resume", rid, "--json")
    assert resumed.code == 5, resumed
    doc = resumed.json()
    assert doc["state"] == "cancelled" and "rolled back" in doc["reason"], doc
    undone = [w for w in log.read_text().split() if w.startswith("undo-")]
    assert undone.count("undo-3") == 1 and undone.count("undo-1") == 1, undone
    assert undone[0] == "undo-3" and undone[-1] == "undo-1", "last step first"
    states = {s["id"]: s["state"] for s in doc["steps"]}
    assert states == {"s1": "rolled_back", "s2": "rolled_back", "s3": "rolled_back", "finale": "failed"}, states


def test_a_plain_cancel_names_the_rollbacks_it_did_not_run(project: Project) -> None:
    project.write(
        "undo.yaml",
        "name: undo\nsteps:\n  - id: a\n    shell: [echo, a]\n    rollback: {shell: [echo, undo]}\n  - id: wait\n    approval: {message: go?}\n",
    )
    rid = project.run("run", "undo", "--json").json()["run_id"]
    res = project.run("cancel", rid, "--json")
    assert res.code == 0
    doc = res.json()
    assert doc["state"] == "cancelled" and "not rolled back: a" in doc["reason"], doc
    assert any("--rollback" in n and "a" in n for n in doc["notices"]), doc["notices"]


GATED = """
name: gated
steps:
  - {id: prep, description: first, shell: [echo, prep]}
  - {id: act, shell: [sh, -c, "echo act >> %s"]}
"""


def test_renaming_a_waiting_gated_step_keeps_its_gate_and_words_only_edits_are_accepted(project: Project, tmp_path: Path) -> None:
    log = project.root / "act.log"
    path = project.write("gated.yaml", GATED % log)
    policy = tmp_path / "policy.yaml"
    policy.write_text("runbooks:\n  gated: {require_approval: [act]}\n")
    first = project.run("run", "gated", "--as-agent", "--policy", str(policy), "--json")
    assert first.code == 4 and first.json()["next"]["action"] == "await_approval", first
    rid = first.json()["run_id"]
    path.write_text(path.read_text().replace("description: first", "description: the first step reworded"))
    still = project.run("status", rid, "--json")
    assert still.json()["next"]["action"] == "await_approval"
    path.write_text(path.read_text().replace("id: act,", "id: act2,"))
    refused = project.run("resume", rid, "--json")
    assert refused.code == 2 and "act" in refused.json()["error"]["message"], refused
    accepted = project.run("resume", rid, "--accept-changes", "--json")
    assert accepted.code == 4 and accepted.json()["next"]["action"] == "await_approval", accepted
    steps = {s["id"]: s["state"] for s in accepted.json()["steps"]}
    assert steps["act"] == "skipped" and steps["act2"] == "waiting", steps
    assert not log.exists(), "the renamed step did not act without its approval"
    assert project.run("approve", rid, "--by", "alice").code == 0
    done = project.run("resume", rid, "--json")
    assert done.code == 0 and log.read_text().split() == ["act"], done


def test_a_description_only_edit_of_a_completed_step_is_accepted(project: Project) -> None:
    path = project.write(
        "two.yaml", "name: two\nsteps:\n  - {id: a, description: old words, shell: [echo, a]}\n  - {id: b, shell: [echo, b]}\n"
    )
    rid = project.run("run", "two", "--max-steps", "1", "--json").json()["run_id"]
    path.write_text(path.read_text().replace("old words", "new words"))
    res = project.run("resume", rid, "--json")
    assert res.code == 0, res
    edited = [e for e in project.run("events", rid, "--json").json()["events"] if e["type"] == "run.edited"]
    assert edited and edited[0]["data"]["cosmetic"] == ["a"] and not edited[0]["data"]["accepted"]
    assert json.dumps(res.json()["notices"]).count("cosmetic") == 1


def test_sigterm_is_handled_by_the_detached_executor_not_lost(project: Project) -> None:
    """A detached executor is a normal executor: a signal to it interrupts its step resumably."""
    project.write("slow.yaml", "name: slow\nsteps:\n  - {id: s, shell: [sleep, '20']}\n")
    res = project.run("run", "slow", "--budget", "3s", "--json")
    assert res.code == 3 and res.json()["state"] == "running", res
    executor = _wait(lambda: project.run("status", res.json()["run_id"], "--json").json()["executor"])  # once it took the lease
    assert executor.startswith("detached pid ")
    pid = int(executor.split()[2])
    import os

    os.kill(pid, signal.SIGTERM)  # the first: finish the step, then stop
    time.sleep(0.5)  # (two signals sent at once are one signal)
    os.kill(pid, signal.SIGTERM)  # the second: stop the step now, resumably
    _wait(lambda: project.run("status", res.json()["run_id"], "--json").json()["state"] == "interrupted")


def test_a_waiting_approval_wakes_workers_at_its_expiry(project: Project) -> None:
    """A worker looks at a waiting approval again when it expires, so on_expiry applies without anyone resuming."""
    from runbook_sqlite.store import SQLiteStore

    project.write("ask.yaml", "name: ask\nsteps:\n  - id: gate\n    approval: {message: ok?, expires: 2h}\n")
    rid = project.run("run", "ask", "--json").json()["run_id"]
    store = SQLiteStore(f"sqlite:///{project.journal}")
    try:
        run = store.get_run(rid)
        local = store.get_steps(rid)[0].progress.local
        assert run.wake_at is not None and abs(run.wake_at - local["expires_at"]) < 0.001, (run.wake_at, local)
    finally:
        store.close()
