"""Step semantics: when, precondition, check, retry, timeout, verify, outputs, rollback, waits, sub-runbooks."""

from __future__ import annotations

import json
import shlex
import signal
import time
from pathlib import Path
from typing import Any
from unittest.mock import ANY

from tests.conftest import Project, kill
from tests.test_engine_cli import wait_for


def steps_of(doc: dict) -> dict[str, dict]:
    return {s["id"]: s for s in doc["steps"]}


def test_when_precondition_check_and_outputs(project: Project) -> None:
    project.write(
        "flow.yaml",
        """
        name: flow
        params:
          env: {type: string, default: dev}
        steps:
          - id: hello
            shell: [echo, "hi {{ params.env }}"]
          - id: only-prod
            when: "params.env == 'prod'"
            shell: [echo, never]
          - id: already
            check:
              - shell: [test, -n, "{{ steps.hello.output.stdout }}"]
            shell: [echo, never]
          - id: uses-output
            shell: [printf, "%s", "{{ steps.hello.output.stdout | trim }}!"]
            expect: {stdout: {matches: "^hi dev!$"}}
    """,
    )
    res = project.run("run", "flow", "--json")
    assert res.code == 0, res
    s = steps_of(res.json())
    assert s["hello"]["output"] == {"exit_code": 0, "stdout": "hi dev\n", "stderr": ""}
    assert s["only-prod"]["state"] == "skipped" and "is false" in s["only-prod"]["reason"]
    assert s["already"]["state"] == "satisfied"
    assert s["uses-output"]["output"]["stdout"] == "hi dev!"


def test_precondition_blocks_and_nothing_runs(project: Project) -> None:
    marker = project.root / "ran"
    project.write(
        "pre.yaml",
        f"""
        name: pre
        steps:
          - id: guarded
            precondition:
              - shell: [test, -d, /nonexistent-dir]
                description: the data dir exists
            shell: [touch, {marker}]
    """,
    )
    res = project.run("run", "pre", "--json")
    assert res.code == 1
    s = steps_of(res.json())["guarded"]
    assert s["state"] == "blocked" and "precondition did not hold" in s["reason"]
    assert not marker.exists()
    probes = [e for e in project.run("events", res.json()["run_id"], "--json").json()["events"] if e["type"] == "probe"]
    assert probes[0]["data"]["kind"] == "precondition" and probes[0]["data"]["holds"] is False
    assert probes[0]["data"]["check"] == "the data dir exists" and probes[0]["data"]["exit_code"] == 1


def test_retry_with_backoff_then_success(project: Project) -> None:
    count = project.root / "count"
    project.write(
        "flaky.yaml",
        f"""
        name: flaky
        steps:
          - id: flaky
            shell: {{script: "echo x >> {count}; test $(wc -l < {count}) -ge 3"}}
            retry: {{attempts: 4, delay: 0.1s, backoff: 2}}
    """,
    )
    res = project.run("run", "flaky", "--json")
    assert res.code == 0, res
    assert steps_of(res.json())["flaky"]["attempts"] == 3
    events = project.run("events", res.json()["run_id"], "--json").json()["events"]
    failed = [e for e in events if e["type"] == "step.attempt_failed"]
    assert [e["data"]["retry_in"] for e in failed] == [0.1, 0.2]
    assert [e["attempt"] for e in events if e["type"] == "step.started"] == [1, 2, 3]


def test_retry_exhausted_fails_then_resume_retry_after_fix(project: Project) -> None:
    flag = project.root / "fixed"
    project.write(
        "broken.yaml", f"name: broken\nsteps:\n  - {{id: a, shell: [test, -f, {flag}], retry: 2}}\n  - {{id: b, shell: [echo, b]}}\n"
    )
    res = project.run("run", "broken", "--json")
    assert res.code == 1
    doc = res.json()
    nxt = doc["next"]
    assert nxt["action"] == "fix_and_retry" and nxt["human_command"].endswith(f"retry {doc['run_id']} --json")
    assert " status " in nxt["command"], "the driver waits for a person; it never retries blindly"
    assert [o["command"] for o in nxt["options"]] == [f"runbook resume {doc['run_id']} --retry --json"]
    assert "exit code 1, expected 0" in doc["reason"]
    events = len(project.run("events", doc["run_id"], "--json").json()["events"])
    plain = project.run("resume", doc["run_id"], "--json")  # without a recorded retry: the view says what to do
    assert plain.code == 1 and plain.json()["state"] == "failed" and plain.json()["next"] == {**nxt, "not_before": ANY}, plain
    assert any(f"runbook retry {doc['run_id']}" in n for n in plain.json()["notices"]), plain.json()["notices"]
    assert len(project.run("events", doc["run_id"], "--json").json()["events"]) == events, "a plain resume ran nothing"
    human = project.run("resume", doc["run_id"])
    assert human.code == 1 and f"fix the cause, then: runbook retry {doc['run_id']}" in human.out, human
    flag.touch()
    recorded = project.run("retry", doc["run_id"], "--json")  # a person records the retry: nothing runs here
    assert recorded.code == 0 and recorded.json()["state"] == "failed"
    assert recorded.json()["next"]["action"] == "resume"
    again = project.run("resume", doc["run_id"], "--json")
    assert again.code == 0, again
    assert steps_of(again.json())["a"]["attempts"] == 1
    flag.unlink()
    second = project.run("run", "broken", "--json")
    assert second.code == 1
    flag.touch()
    legacy = project.run("resume", second.json()["run_id"], "--retry", "--json")  # the old flag still retries and drives
    assert legacy.code == 0 and legacy.json()["state"] == "succeeded"


def test_timeout_kills_the_whole_process_group(project: Project) -> None:
    pids = project.root / "pids"
    project.write(
        "slow.yaml",
        f"""
        name: slow
        steps:
          - id: hang
            shell: {{script: "sleep 60 & echo $! > {pids}; sleep 60"}}
            timeout: 1s
    """,
    )
    started = time.monotonic()
    res = project.run("run", "slow", "--json")
    assert res.code == 1
    assert time.monotonic() - started < 15
    assert "timed out after 1s" in steps_of(res.json())["hang"]["reason"]
    child = int(pids.read_text())
    wait_for(
        lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
        what="the background child to be killed with its group",
    )


def test_output_is_capped(project: Project) -> None:
    project.write(
        "loud.yaml",
        """
        name: loud
        steps:
          - id: loud
            shell: {script: "head -c 5000000 /dev/zero | tr '\\\\0' x", max_output: 1000}
    """,
    )
    res = project.run("run", "loud", "--json")
    assert res.code == 0, res
    out = steps_of(res.json())["loud"]["output"]
    assert len(out["stdout"]) == 1000 and out["truncated"] is True


def test_verify_polls_until_it_holds_or_fails(project: Project) -> None:
    ready = project.root / "ready"
    project.write(
        "verify.yaml",
        f"""
        name: verify
        steps:
          - id: start
            shell: {{script: "(sleep 0.6; touch {ready}) &"}}
            verify:
              within: 5s
              every: 0.2s
              checks:
                - shell: [test, -f, {ready}]
          - id: never
            shell: ["true"]
            verify:
              within: 0.5s
              every: 0.2s
              checks:
                - shell: [test, -f, /nonexistent]
                  description: the impossible file
    """,
    )
    res = project.run("run", "verify", "--json")
    s = steps_of(res.json())
    assert s["start"]["state"] == "succeeded" and "verified after" in s["start"]["reason"]
    assert s["never"]["state"] == "failed" and "verify did not hold within 0.5s" in s["never"]["reason"]
    assert "(3 polls): exit code 1, expected 0" in s["never"]["reason"]


def test_rollback_undoes_completed_steps_in_reverse_order(project: Project) -> None:
    log = project.root / "log"
    project.write(
        "rb.yaml",
        f"""
        name: rb
        on_failure: rollback
        steps:
          - id: one
            shell: {{script: "echo do-one >> {log}"}}
            rollback: {{shell: {{script: "echo undo-one >> {log}"}}}}
          - id: two
            shell: {{script: "echo do-two >> {log}"}}
            rollback: {{shell: {{script: "echo undo-two >> {log}"}}}}
          - id: skipped-one
            check: [{{shell: ["true"]}}]
            shell: ["true"]
            rollback: {{shell: {{script: "echo undo-satisfied >> {log}"}}}}
          - id: boom
            shell: ["false"]
    """,
    )
    res = project.run("run", "rb", "--json")
    assert res.code == 1
    assert log.read_text().split() == ["do-one", "do-two", "undo-two", "undo-one"]
    s = steps_of(res.json())
    assert s["one"]["state"] == s["two"]["state"] == "rolled_back" and s["skipped-one"]["state"] == "satisfied"
    assert "rolled back two, one" in res.json()["reason"]


def test_retry_after_a_rollback_does_the_rolled_back_steps_again(project: Project) -> None:
    log, fixed = project.root / "log", project.root / "fixed"
    project.write(
        "rb.yaml",
        f"""
        name: rb
        on_failure: rollback
        steps:
          - id: one
            shell: {{script: "echo do-one >> {log}"}}
            rollback: {{shell: {{script: "echo undo-one >> {log}"}}}}
          - id: two
            shell: {{script: "echo do-two >> {log}"}}
            rollback: {{shell: {{script: "echo undo-two >> {log}"}}}}
          - id: three
            shell: [test, -f, "{fixed}"]
    """,
    )
    res = project.run("run", "rb", "--json")
    assert res.code == 1 and res.json()["next"]["action"] == "fix_and_retry"
    fixed.touch()
    again = project.run("resume", res.json()["run_id"], "--retry", "--json")
    assert again.code == 0, again
    assert log.read_text().split() == ["do-one", "do-two", "undo-two", "undo-one", "do-one", "do-two"]
    s = steps_of(again.json())
    assert s["one"]["state"] == s["two"]["state"] == s["three"]["state"] == "succeeded"
    decisions = [e for e in project.run("events", res.json()["run_id"], "--json").json()["events"] if e["type"] == "step.decision"]
    assert {e["step_id"] for e in decisions} == {"one", "two", "three"}


def test_retry_after_a_rollback_does_a_fanned_out_step_again_on_every_target(project: Project) -> None:
    log, fixed = project.root / "log", project.root / "fixed"
    project.write(
        "fo.yaml",
        f"""
        name: fo
        on_failure: rollback
        steps:
          - id: deploy
            targets: [a, b]
            shell: [sh, -c, 'echo do-$0 >> {log}', "{{{{ target.name }}}}"]
            rollback: {{shell: [sh, -c, 'echo undo-$0 >> {log}', "{{{{ target.name }}}}"]}}
          - id: gate
            shell: [test, -f, "{fixed}"]
    """,
    )
    res = project.run("run", "fo", "--json")
    assert res.code == 1, res
    fixed.touch()
    again = project.run("resume", res.json()["run_id"], "--retry", "--json")
    assert again.code == 0, again
    done = log.read_text().split()
    assert sorted(done[-2:]) == ["do-a", "do-b"] and done.count("do-a") == 2, done


def test_step_order_is_read_from_the_step_records_not_the_stored_hashes(project: Project) -> None:
    """PostgreSQL keeps step hashes as jsonb, which sorts keys: a resume must not see that as a reordering."""
    import sqlite3

    project.write(
        "order.yaml",
        "name: order\nsteps:\n  - {id: migrate, shell: ['true']}\n  - {id: db, shell: ['true']}\n  - {id: finish, shell: ['true']}\n",
    )
    rid = project.run("run", "order", "--max-steps", "2", "--json").json()["run_id"]
    with sqlite3.connect(project.journal) as conn:
        (hashes,) = conn.execute("SELECT step_hashes FROM run_specs WHERE run_id=?", (rid,)).fetchone()
        shuffled = dict(sorted(json.loads(hashes).items(), key=lambda kv: (len(kv[0]), kv[0])))  # jsonb's order
        conn.execute("UPDATE run_specs SET step_hashes=? WHERE run_id=?", (json.dumps(shuffled), rid))
    res = project.run("resume", rid, "--json")
    assert res.code == 0, res
    assert res.json()["notices"] == [], "nothing changed"


def test_wait_for_runs_in_process_without_budget_and_exits_4_with_one(project: Project) -> None:
    project.write("w.yaml", "name: w\nsteps:\n  - {id: pause, wait: {for: 1s}}\n  - {id: after, shell: [echo, done]}\n")
    started = time.monotonic()
    assert project.run("run", "w").code == 0
    assert time.monotonic() - started >= 1.0
    project.write("w2.yaml", "name: w2\nsteps:\n  - {id: pause, wait: {for: 30s}}\n  - {id: after, shell: [echo, done]}\n")
    res = project.run("run", "w2", "--budget", "2s", "--json")
    assert res.code == 4, res
    doc = res.json()
    assert doc["next"]["action"] == "wait" and doc["next"]["not_before"] is not None
    assert steps_of(doc)["pause"]["state"] == "waiting"


def test_wait_condition_polls_and_times_out(project: Project) -> None:
    flag, polls = project.root / "flag", project.root / "polls.log"
    project.write(
        "cond.yaml",
        f"""
        name: cond
        steps:
          - id: until-flag
            wait:
              every: 0.2s
              within: 10s
              checks:
                - shell: {{script: "echo poll >> {polls}; test -f {flag}"}}
    """,
    )
    proc = project.popen("run", "cond", "--json")
    deadline = time.monotonic() + 60
    while not polls.exists():  # the first poll failed (no flag yet): the next one holds
        assert time.monotonic() < deadline, "the condition was never polled"
        time.sleep(0.05)
    flag.touch()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert steps_of(json.loads(out))["until-flag"]["output"]["polls"] >= 2
    project.write("never.yaml", "name: never\nsteps:\n  - id: w\n    wait: {every: 0.2s, within: 0.6s, checks: [{shell: ['false']}]}\n")
    res = project.run("run", "never", "--json")
    assert res.code == 1 and "did not hold within" in res.json()["reason"]


def test_sub_runbook_has_its_own_linked_run(project: Project) -> None:
    project.write(
        "child.yaml",
        """
        name: child
        params: {word: string}
        steps:
          - {id: say, shell: [echo, "{{ params.word }}"]}
          - id: ok
            approval: {message: child approval}
    """,
    )
    project.write(
        "parent.yaml",
        """
        name: parent
        steps:
          - id: sub
            runbook: {name: child, params: {word: nested}}
          - {id: after, shell: [echo, "{{ steps.sub.output.steps.say.stdout | trim }}"]}
    """,
    )
    res = project.run("run", "parent", "--json")
    assert res.code == 4, res
    parent = res.json()
    children = [r for r in project.run("runs", "--runbook", "child", "--json").json()["runs"]]
    assert len(children) == 1 and children[0]["parent_run_id"] == parent["run_id"]
    assert project.run("approve", children[0]["run_id"], "--by", "ops").code == 0
    done = project.run("resume", parent["run_id"], "--json")
    assert done.code == 0, done
    assert steps_of(done.json())["after"]["output"]["stdout"] == "nested\n"
    assert project.run("status", children[0]["run_id"], "--json").json()["state"] == "succeeded"


def test_first_sigint_finishes_the_step_second_interrupts(project: Project) -> None:
    log = project.root / "log"
    project.write(
        "sig.yaml",
        f"""
        name: sig
        steps:
          - {{id: a, shell: {{script: "echo a-start >> {log}; sleep 1; echo a-end >> {log}"}}}}
          - {{id: b, shell: {{script: "echo b >> {log}"}}}}
    """,
    )
    proc = project.popen("run", "sig", "--json")
    wait_for(lambda: log.exists() and "a-start" in log.read_text(), what="step a")
    out, err = kill(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["state"] == "interrupted" and steps_of(doc)["a"]["state"] == "succeeded"
    assert log.read_text().split() == ["a-start", "a-end"], "the step in flight finished; the next did not start"
    assert project.run("resume", doc["run_id"]).code == 0
    assert log.read_text().split() == ["a-start", "a-end", "b"]

    project.write(
        "sig2.yaml", f"name: sig2\nsteps:\n  - {{id: long, check: [{{shell: [test, -f, {project.root}/never]}}], shell: [sleep, '60']}}\n"
    )
    proc = project.popen("run", "sig2", "--json")
    wait_for(lambda: project.run("runs", "--runbook", "sig2", "--state", "running", "--json").json()["runs"], what="sig2 running")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    out, err = kill(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 10
    doc = json.loads(out)
    assert doc["state"] == "interrupted" and steps_of(doc)["long"]["state"] == "interrupted"
    (project.root / "never").touch()  # the step's check now holds: re-entry must see it and not re-run
    resumed = project.run("resume", doc["run_id"], "--json")
    assert resumed.code == 0, resumed
    assert steps_of(resumed.json())["long"]["state"] == "satisfied"
    recovered = [e for e in project.run("events", doc["run_id"], "--json").json()["events"] if e["type"] == "step.recovered"]
    assert recovered and recovered[0]["data"]["decision"] == "check", "an interrupted step is re-entered through its check"
    assert doc["next"]["action"] == "resume", "with a check, resuming re-enters the step"


def interrupt_twice(project: Project, name: str, step: str = "s") -> dict[str, Any]:
    """Start runbook ``name`` (whose one step sleeps, with no check), stop it with two SIGINTs; its run's document."""
    project.write(f"{name}.yaml", f"name: {name}\nsteps:\n  - {{id: {step}, shell: [sleep, '60']}}\n")
    proc = project.popen("run", name, "--json")
    wait_for(lambda: project.run("runs", "--runbook", name, "--state", "running", "--json").json()["runs"], what=f"{name} running")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    out, err = kill(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    doc: dict[str, Any] = json.loads(out)
    assert doc["state"] == "interrupted" and doc["next"]["action"] == "decide" and doc["next"]["step"] == step, doc
    return doc


def test_interrupting_a_step_with_no_check_asks_for_a_decision_at_once(project: Project) -> None:
    doc = interrupt_twice(project, "sig3", "long")
    assert "whether it took effect is unknown" in doc["next"]["reason"]
    skip = next(o["command"] for o in doc["next"]["options"] if o["action"] == "skip_step")
    assert project.run(*shlex.split(skip)[1:]).code == 0


def test_params_are_typed_and_validated(project: Project) -> None:
    project.write(
        "p.yaml",
        """
        name: p
        params:
          count: {type: integer, minimum: 1}
          hosts: {type: array, items: string}
          mode: {type: string, enum: [fast, safe], default: safe}
        steps:
          - {id: show, shell: [echo, "{{ params.count + 1 }} {{ params.hosts | join(',') }} {{ params.mode }}"]}
    """,
    )
    res = project.run("run", "p", "-p", "count=2", "-p", 'hosts=["a","b"]', "--json")
    assert res.code == 0, res
    assert steps_of(res.json())["show"]["output"]["stdout"] == "3 a,b safe\n"
    bad = project.run("run", "p", "-p", "count=zero", "-p", "hosts=a", "-p", "mode=yolo", "-p", "extra=1")
    assert bad.code == 2
    for fragment in ("count: Input should be a valid integer", "mode: Input should be 'fast' or 'safe'", "extra: unknown param"):
        assert fragment in bad.err, bad.err
    params_file = project.root / "params.yaml"
    params_file.write_text("count: 5\nhosts: [x]\n")
    assert project.run("run", "p", "--params-file", str(params_file), "--json").json()["steps"][0]["output"]["stdout"] == "6 x safe\n"
