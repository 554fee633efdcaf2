"""Through the real CLI: a reused idempotency key, budgets that can never fit a step, pasteable ``next`` commands."""

from __future__ import annotations

import shlex

import pytest

from tests.conftest import Project, Result


def paste(project: Project, command: str, *, name: str | None = None) -> Result:
    """Run a ``next`` command string as a shell would (``NAME`` replaced by ``name``)."""
    argv = shlex.split(command)
    assert argv[0] == "runbook", command
    if name is not None:
        argv = [name if a == "NAME" else a for a in argv]
    return project.run(*argv[1:])


def run_count(project: Project) -> int:
    return len(project.run("runs", "--json").json()["runs"])


# ---------------------------------------------------------------------- idempotency keys


NOTE = """
    name: note
    params:
      note: string
      count: {type: integer, default: 1}
      token: {secret: true, allow: ["env:TOKEN_*"]}
    steps:
      - {id: s1, shell: [echo, "{{ params.note }}"]}
"""


def test_a_reused_key_with_other_params_is_refused_naming_the_params_but_no_values(project: Project) -> None:
    project.write("note.yaml", NOTE)
    project.env.update(TOKEN_ONE="token-one-value", TOKEN_TWO="token-two-value")  # resolved when a run starts
    first = project.run("run", "note", "-p", "note=x", "-p", "token=env:TOKEN_ONE", "--idempotency-key", "k1", "--json")
    assert first.code == 0, first
    run_id = first.json()["run_id"]
    same = project.run("run", "note", "-p", "note=x", "-p", "count=1", "-p", "token=env:TOKEN_ONE", "--idempotency-key", "k1", "--json")
    assert (same.code, same.json()["run_id"]) == (0, run_id), "the same request (a default spelt out) is the same run"

    other = project.run("run", "note", "-p", "note=DIFFERENT", "-p", "token=env:TOKEN_TWO", "--idempotency-key", "k1", "--json")
    assert other.code == 2, other
    error = other.json()["error"]
    text = f"{error['message']} {error['hint']}"
    assert "'k1'" in text and run_id in text and "note" in text and "token" in text, error
    assert "count" not in error["message"], "only the params that differ are named"
    for value in ("DIFFERENT", "TOKEN_ONE", "TOKEN_TWO"):
        assert value not in other.out + other.err, f"param values are never printed: {value}"
    assert run_count(project) == 1


def test_a_reused_key_for_another_runbook_is_refused_naming_both(project: Project) -> None:
    project.write("note.yaml", NOTE)
    project.write("edit.yaml", "name: edit\nsteps:\n  - {id: a, shell: [echo, a]}\n")
    project.env.update(TOKEN_ONE="token-one-value")
    first = project.run("run", "note", "-p", "note=x", "-p", "token=env:TOKEN_ONE", "--idempotency-key", "k1", "--json")
    assert first.code == 0, first
    other = project.run("run", "edit", "--idempotency-key", "k1", "--json")
    assert other.code == 2, other
    message = other.json()["error"]["message"]
    assert "'k1'" in message and first.json()["run_id"] in message and "'note'" in message and "'edit'" in message, message
    assert "--idempotency-key" in other.err or "idempotency key" in other.err, other
    assert run_count(project) == 1


# ---------------------------------------------------------------------- budgets


def test_next_command_of_a_budget_that_can_never_fit_a_step_carries_one_that_does(project: Project) -> None:
    log = project.root / "steps.log"
    project.write(
        "budget.yaml",
        f"""
        name: budget
        steps:
          - {{id: a, expected: 1s, shell: {{script: "sleep 1; echo a >> {log}"}}}}
          - {{id: b, expected: 1s, shell: {{script: "sleep 1; echo b >> {log}"}}}}
          - {{id: c, timeout: 4s, shell: {{script: "sleep 1; echo c >> {log}"}}}}
    """,
    )
    results = [project.run("run", "budget", "--budget", "2.5s", "--json")]
    never = None
    while results[-1].code == 3:
        assert len(results) < 6, f"next.command does not make progress: {results[-1]!r}"
        doc = results[-1].json()
        if "can never fit" in doc["reason"]:
            never = doc
            spelt = {b: project.run("status", doc["run_id"], *b, "--json").json()["next"]["command"]
                     for b in [("--budget", "1s"), ("--budget", "30s"), ()]}  # fmt: skip
        results.append(paste(project, doc["next"]["command"]))
    assert results[-1].code == 0, results[-1]
    assert log.read_text().split() == ["a", "b", "c"], "each step ran once, in order"
    assert never is not None and never["next"]["step"] == "c", [r.json()["reason"] for r in results]
    assert never["next"]["action"] == "handoff" and never["next"]["budget_fits"] == 6 and never["next"]["estimate"] == 4
    assert "--budget 6s" in never["next"]["command"] and "--budget 6s or more" in never["reason"], never["next"]
    assert "--budget" not in never["next"]["human_command"], "a person resumes without a budget"
    assert "--budget 6s" in spelt[("--budget", "1s")], "status spells the budget the paused step needs"
    assert "--budget 30s" in spelt[("--budget", "30s")], "a budget that fits is kept"
    assert "--budget" not in spelt[()], "no budget: none is added"


@pytest.mark.parametrize("value", ["0", "0s", "0ms", "-1s", "-2"], ids=["0", "0s", "0ms", "-1s", "-2"])
@pytest.mark.parametrize("command", [["run", "budget"], ["resume", "01M80HGN9DTBMCY1RT7EZKTEC1"], ["status", "01M80HGN9DTBMCY1RT7EZKTEC1"]],
                         ids=["run", "resume", "status"])  # fmt: skip
def test_a_budget_that_is_not_positive_is_a_usage_error(project: Project, command: list[str], value: str) -> None:
    project.write("budget.yaml", "name: budget\nsteps:\n  - {id: a, shell: [echo, a]}\n")
    res = project.run(*command, f"--budget={value}", "--json")
    assert res.code == 2, res
    assert "--budget" in res.err and "greater than zero" in res.err, res
    assert "greater than zero" in res.json()["error"]["message"], res
    assert not project.journal.exists() or run_count(project) == 0, "nothing was started"


# ---------------------------------------------------------------------- human_command


def test_an_approvals_human_command_can_be_pasted(project: Project) -> None:
    project.write("appr.yaml", "name: appr\nsteps:\n  - id: gate\n    approval: {message: x}\n  - {id: after, shell: [echo, after]}\n")
    first = project.run("run", "appr", "--json")
    assert first.code == 4, first
    nxt, run_id = first.json()["next"], first.json()["run_id"]
    assert nxt["action"] == "await_approval"
    assert shlex.split(nxt["human_command"]) == ["runbook", "approve", run_id, "--by", "NAME", "--json"], nxt
    assert f"runbook deny {run_id} --by NAME" in nxt["reason"], "how to refuse is said in the reason"
    assert [o["action"] for o in nxt["options"]] == ["approve", "deny"]
    approved = paste(project, nxt["human_command"], name="alice")
    assert approved.code == 0, approved
    assert paste(project, approved.json()["next"]["command"]).code == 0


def test_a_failed_runs_human_command_can_be_pasted(project: Project) -> None:
    flag = project.root / "fixed"
    project.write("fail.yaml", f"name: fail\nsteps:\n  - {{id: f, shell: [test, -e, '{flag}']}}\n")
    first = project.run("run", "fail", "--json")
    assert first.code == 1, first
    nxt, run_id = first.json()["next"], first.json()["run_id"]
    assert nxt["action"] == "fix_and_retry" and "fix the cause" in nxt["reason"], nxt
    assert shlex.split(nxt["human_command"]) == ["runbook", "retry", run_id, "--json"], "a person records the retry"
    assert shlex.split(nxt["command"]) == ["runbook", "status", run_id, "--json"], "the driver waits for the person"
    assert shlex.split(nxt["then"]) == ["runbook", "resume", run_id, "--json"]
    flag.touch()  # the fix
    recorded = paste(project, nxt["human_command"])
    assert recorded.code == 0 and recorded.json()["state"] == "failed", "recording a retry runs nothing"
    assert recorded.json()["next"]["action"] == "resume"
    assert paste(project, recorded.json()["next"]["command"]).code == 0


def test_a_step_without_an_estimate_runs_detached_and_the_next_resume_picks_it_up(project: Project) -> None:
    import time

    log = project.root / "s.log"
    project.write(
        "slow.yaml", f'name: slow\nsteps:\n  - {{id: s, shell: {{script: "sleep 6; echo s >> {log}"}}}}\n  - {{id: t, shell: [echo, hi]}}\n'
    )
    started = time.monotonic()
    res = project.run("run", "slow", "--budget", "3s", "--json")
    took = time.monotonic() - started
    assert res.code == 3, res
    doc = res.json()
    assert doc["state"] == "running" and doc["next"]["action"] == "resume" and "detached executor" in doc["next"]["reason"], doc
    assert took < 5.5, f"the caller returned within its budget, not after the step ({took:.1f}s)"
    events = [e["type"] for e in project.run("events", doc["run_id"], "--json").json()["events"]]
    assert "run.handed_over" in events
    done = paste(project, doc["next"]["command"].replace("--budget 3s", "--budget 15s"))
    assert done.code == 0, done
    assert log.read_text().split() == ["s"], "the step ran once, never cut short"
    quick = project.run("run", "slow", "--budget", "30s", "--json")
    assert quick.code == 0 and quick.json()["state"] == "succeeded", quick
