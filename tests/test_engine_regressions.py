"""Defects found in review of the engine, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Project, kill
from tests.test_engine_cli import wait_for


def steps_of(doc: dict) -> dict[str, dict]:
    return {s["id"]: s for s in doc["steps"]}


def test_skip_step_is_no_way_around_an_approval(project: Project) -> None:
    acted = project.root / "acted"
    project.write(
        "gate.yaml",
        f"""
        name: gate
        steps:
          - id: confirm
            approval: {{message: ok?}}
          - {{id: act, shell: [touch, {acted}]}}
    """,
    )
    run_id = project.run("run", "gate", "--json").json()["run_id"]
    refused = project.run("resume", run_id, "--skip-step", "confirm")
    assert refused.code == 2 and "decides only unknown, failed, blocked or interrupted steps" in refused.err
    pending = project.run("resume", run_id, "--skip-step", "act")
    assert pending.code == 2, "a step that has not run cannot be skipped either"
    assert not acted.exists()


def test_a_crash_during_rollback_never_reruns_the_failed_step(project: Project) -> None:
    log = project.root / "log"
    project.write(
        "rbc.yaml",
        f"""
        name: rbc
        on_failure: rollback
        steps:
          - id: a
            shell: {{script: "echo a >> {log}"}}
            rollback: {{shell: {{script: "echo undo-start >> {log}; sleep 3; echo undo-a >> {log}"}}}}
          - id: b
            shell: {{script: "echo b >> {log}; exit 1"}}
    """,
    )
    proc = project.popen("run", "rbc", "--json")
    wait_for(lambda: log.exists() and "undo-start" in log.read_text(), what="the rollback to start")
    kill(proc)
    run_id = project.run("runs", "--json").json()["runs"][0]["run_id"]
    res = project.run("resume", run_id, "--json")
    assert res.code == 1, res
    assert log.read_text().split().count("b") == 1, "the failed step's action ran once"
    assert "undo-a" in log.read_text().split(), "the rollback was finished"
    assert steps_of(res.json())["a"]["state"] == "rolled_back"


def test_an_error_outside_a_step_fails_the_run_and_frees_its_lock(project: Project) -> None:
    project.write(
        "tg.yaml",
        """
        name: tg
        params: {host: string}
        lock: "host:{{ params.host }}"
        steps:
          - {id: a, shell: ["true"]}
          - {id: fan, targets: "{{ params.no_such_param }}", shell: ["true"]}
    """,
    )
    res = project.run("run", "tg", "-p", "host=web1", "--json")
    assert res.code == 1, res
    doc = res.json()
    assert doc["state"] == "failed" and "no_such_param" in doc["reason"], "pre-flight renders the targets first"
    assert steps_of(doc)["a"]["state"] == "pending", "and refuses the run before its first step"
    again = project.run("run", "tg", "-p", "host=web1", "--json")
    assert again.code == 1 and again.json()["run_id"] != doc["run_id"], "the lock was released"


def test_a_pause_during_an_in_process_wait_pauses_the_run(project: Project) -> None:
    after = project.root / "after"
    project.write("w.yaml", f"name: w\nsteps:\n  - {{id: pause-me, wait: {{for: 30s}}}}\n  - {{id: after, shell: [touch, {after}]}}\n")
    proc = project.popen("run", "w", "--json")
    wait_for(lambda: project.run("runs", "--state", "running", "--json").json()["runs"], what="the run to start")
    run_id = project.run("runs", "--json").json()["runs"][0]["run_id"]
    started = time.monotonic()
    assert project.run("pause", run_id).code == 0
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert time.monotonic() - started < 10, "the wait was cut short"
    assert json.loads(out)["state"] == "paused" and not after.exists()


def test_a_retried_approval_asks_again(project: Project) -> None:
    project.write("ex.yaml", "name: ex\nsteps:\n  - id: go\n    approval: {message: ok?, expires: 1s}\n")
    run_id = project.run("run", "ex", "--json").json()["run_id"]
    time.sleep(1.2)
    assert project.run("resume", run_id, "--json").code == 1
    again = project.run("resume", run_id, "--retry", "--json")
    assert again.code == 4 and again.json()["next"]["action"] == "await_approval", "a fresh request, not the expired one"


def test_approving_the_parent_reaches_the_sub_runbook_and_cancel_reaches_it_too(project: Project) -> None:
    project.write(
        "child.yaml", "name: child\nsteps:\n  - id: ok\n    approval: {message: child approval}\n  - {id: done, shell: [echo, done]}\n"
    )
    project.write("parent.yaml", "name: parent\nsteps:\n  - id: sub\n    runbook: {name: child}\n")
    parent = project.run("run", "parent", "--json").json()
    assert parent["state"] == "waiting"
    assert project.run("approve", parent["run_id"], "--by", "ops").code == 0, "the parent's human_command works"
    assert project.run("resume", parent["run_id"]).code == 0

    project.write("slowchild.yaml", "name: slowchild\nsteps:\n  - {id: s, shell: [sleep, '30']}\n")
    project.write("slowparent.yaml", "name: slowparent\nsteps:\n  - id: sub\n    runbook: {name: slowchild}\n")
    proc = project.popen("run", "slowparent", "--json")
    wait_for(lambda: project.run("runs", "--runbook", "slowchild", "--state", "running", "--json").json()["runs"],
             what="the child to run")  # fmt: skip
    run_id = project.run("runs", "--runbook", "slowparent", "--json").json()["runs"][0]["run_id"]
    started = time.monotonic()
    assert project.run("cancel", run_id).code == 0
    proc.communicate(timeout=30)
    assert time.monotonic() - started < 10, "the child's step was stopped, not waited for"
    child = project.run("runs", "--runbook", "slowchild", "--json").json()["runs"][0]
    assert child["state"] == "cancelled"


def test_two_engines_in_one_process_never_take_each_others_lease(project: Project) -> None:
    from runner.api import Client

    project.write("slow.yaml", "name: slow\nsteps:\n  - {id: s, shell: [sleep, '2']}\n")
    with Client(paths=[str(project.runbooks)], store=f"sqlite:///{project.root}/j.db", project_dir=str(project.root)) as one:
        run_id = one.start("slow", execute=False).run_id
        import threading

        first = threading.Thread(target=one.resume, args=(run_id,))
        first.start()
        time.sleep(0.5)
        with Client(paths=[str(project.runbooks)], store=f"sqlite:///{project.root}/j.db", project_dir=str(project.root)) as two:
            other = two.resume(run_id)  # not taken over: the answer says who executes it, and to wait
        assert other.state == "running" and other.next.action == "wait_elsewhere" and other.exit_code == 6, other
        assert "is being executed by api pid" in " ".join(other.notices)
        first.join(timeout=30)
        assert one.status(run_id).state == "succeeded"


def test_a_broken_edit_is_reported_not_replaced_by_the_snapshot(project: Project) -> None:
    path = project.write("brk.yaml", "name: brk\nsteps:\n  - {id: a, shell: [echo, a]}\n  - {id: b, shell: [echo, old-b]}\n")
    run_id = project.run("run", "brk", "--max-steps", "1", "--json").json()["run_id"]
    path.write_text(path.read_text().replace("[echo, old-b]}", "[echo, new-b], timeout: 10 seconds}"))
    res = project.run("resume", run_id)
    assert res.code == 2 and "brk.yaml" in res.err and "timeout" in res.err


def test_a_run_whose_runbook_was_deleted_resumes_from_its_stored_snapshot(project: Project) -> None:
    path = project.write("gone.yaml", "name: gone\nsteps:\n  - {id: a, shell: [echo, a]}\n  - {id: b, shell: [echo, from-snapshot]}\n")
    run_id = project.run("run", "gone", "--max-steps", "1", "--json").json()["run_id"]
    path.unlink()
    res = project.run("resume", run_id, "--json")
    assert res.code == 0, res
    view = res.json()
    assert any("no longer in the catalog" in n and "snapshot" in n for n in view["notices"])
    steps = {s["id"]: s for s in view["steps"]}
    assert steps["b"]["state"] == "succeeded" and "from-snapshot" in json.dumps(steps["b"])


def test_run_ids_are_case_insensitive(project: Project) -> None:
    project.write("a.yaml", "name: a\nsteps: [{id: x, shell: ['true']}]\n")
    run_id = project.run("run", "a", "--json").json()["run_id"]
    assert project.run("status", run_id.lower(), "--json").json()["run_id"] == run_id


def test_a_secret_printed_before_its_first_use_is_masked(project: Project) -> None:
    project.write(
        "sl.yaml",
        """
        name: sl
        secrets: {tok: env:RB_TOKEN}
        steps:
          - {id: leak, shell: {script: 'printf "%0510d" 0; echo " token is $RB_TOKEN"'}}
          - {id: use, shell: {script: 'echo "$T"', env: {T: "{{ secrets.tok }}"}}}
    """,
    )
    secret = "s3cr3t-value-XYZ-123456"
    res = project.run("run", "sl", "--json", env={"RB_TOKEN": secret})
    assert res.code == 0, res
    assert secret not in res.out and "token is ***" in res.out
    events = project.run("events", res.json()["run_id"], "--json").out
    assert secret[:8] not in events, "not even the part of the secret that a 512-character snippet would keep"
    assert secret not in Path(project.journal).read_bytes().decode("utf-8", "replace")


def test_a_missing_working_directory_is_named(project: Project) -> None:
    project.write("cwd.yaml", "name: cwd\nsteps:\n  - {id: a, shell: {command: [ls], cwd: /no/such/dir}}\n")
    res = project.run("run", "cwd", "--json")
    assert res.code == 1 and "working directory '/no/such/dir' does not exist" in res.json()["reason"]


def test_a_plan_is_refused_to_an_agent_as_a_start_would_be(project: Project) -> None:
    from runner.api import Client
    from runner.errors import PolicyDenied

    probed = project.root / "probed"
    project.write("denied.yaml", f"name: denied\nsteps:\n  - id: a\n    check: [{{shell: [touch, {probed}]}}]\n    shell: ['true']\n")
    policy = project.root / "policy.yaml"
    policy.write_text("deny: [denied]\n")
    with Client(paths=[str(project.runbooks)], store=f"sqlite:///{project.root}/j.db", project_dir=str(project.root),
                agent=True, policy=str(policy)) as agent:  # fmt: skip
        with pytest.raises(PolicyDenied):
            agent.plan("denied")
        with pytest.raises(PolicyDenied):
            agent.describe("denied")
    assert not probed.exists(), "no probe ran"


def test_sigterm_during_an_in_process_wait_interrupts(project: Project) -> None:
    project.write("wt.yaml", "name: wt\nsteps:\n  - {id: w, wait: {for: 30s}}\n")
    proc = project.popen("run", "wt", "--json")
    wait_for(lambda: project.run("runs", "--state", "running", "--json").json()["runs"], what="the run to start")
    time.sleep(0.3)
    out, _ = kill(proc, signal.SIGTERM)
    assert proc.returncode == 130 and json.loads(out)["state"] == "interrupted"


def test_a_step_function_changing_its_args_does_not_change_the_next_run(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configs validated once are shared only by step types that never change them; `python` hands its args to
    user code, which may, so each of its actions gets values of its own (three runs in one process)."""
    from runner.api import Client

    (project.root / "rbmutate.py").write_text("def grow(ctx, params, items):\n    items.append(len(items))\n    return list(items)\n")
    monkeypatch.syspath_prepend(str(project.root))
    project.write("mut.yaml", "name: mut\nsteps:\n  - {id: grow, python: {call: 'rbmutate:grow', args: {items: [0]}}}\n")
    with Client(paths=[str(project.runbooks)], store=f"sqlite:///{project.root}/j.db", project_dir=str(project.root)) as client:
        outputs = [client.start("mut").steps[0].output for _ in range(3)]
    assert outputs == [[0, 1]] * 3, outputs
