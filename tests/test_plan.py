"""``runbook plan``: a plan that does not lie (earlier changes, per-target plans, sub-runbooks, rendered and masked)."""

from __future__ import annotations

import sqlite3
from typing import Any

from tests.conftest import Project


def plan(project: Project, name: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = project.run("plan", name, *args, "--json", env=env)
    assert res.code == 0, res
    doc: dict[str, Any] = res.json()
    return doc


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


def no_runs(project: Project) -> None:
    if project.journal.exists():
        assert sqlite3.connect(project.journal).execute("select count(*) from runs").fetchone()[0] == 0, "plan records no run"


# ---------------------------------------------------------------------- must-show 3


def test_a_check_that_reads_what_an_earlier_step_writes_depends_on_that_step(project: Project) -> None:
    conf = project.root / "app.conf"
    conf.write_text("mode=old\n")
    project.write(
        "converge.yaml",
        f"""
        name: converge
        steps:
          - id: write-config
            writes: ["{conf}"]
            shell: [sh, -c, 'echo mode=new > "$0"', "{conf}"]
          - id: reload
            reads: ["{conf}"]
            check: [{{shell: [grep, -qx, mode=old, "{conf}"]}}]
            shell: [echo, reload]
    """,
    )
    doc = plan(project, "converge")
    steps = by_id(doc)
    assert steps["write-config"]["verdict"] == "would-run"
    reload = steps["reload"]
    assert reload["verdict"] == "depends-on-earlier-change", reload
    assert reload["depends_on"] == ["write-config"] and reload["now"] == "already-satisfied"
    assert reload["reason"] == (f"its check holds now, but it reads what an earlier step would change first (step 'write-config' "
                                f"writes {conf})")  # fmt: skip
    assert conf.read_text() == "mode=old\n", "nothing was changed"
    no_runs(project)
    human = project.run("plan", "converge")
    assert "~ reload depends-on-earlier-change — its check holds now, but it reads what an earlier step would change first" in human.out


def test_a_fan_out_over_3_hosts_is_planned_per_target_with_rendered_commands(project: Project) -> None:
    marks = project.root / "marks"
    marks.mkdir()
    (marks / "web2").touch()
    project.write(
        "fan.yaml",
        f"""
        name: fan
        params: {{service: {{type: string, default: nginx}}}}
        steps:
          - id: restart
            targets: [web1, web2, web3]
            check: [{{shell: [test, -f, "{marks}/{{{{ target.name }}}}"]}}]
            shell: [echo, restart, "{{{{ params.service }}}}", on, "{{{{ target.name }}}}"]
    """,
    )
    step = by_id(plan(project, "fan"))["restart"]
    assert [(t["name"], t["verdict"], t["action"]) for t in step["targets"]] == [
        ("web1", "would-run", "echo restart nginx on web1"),
        ("web2", "already-satisfied", "echo restart nginx on web2"),
        ("web3", "would-run", "echo restart nginx on web3"),
    ]
    assert step["targets"][0]["config"] == {"command": ["echo", "restart", "nginx", "on", "web1"]}
    assert step["targets"][1]["evidence"][0]["check"] == f"shell: test -f {marks}/web2"
    assert step["verdict"] == "would-run" and step["reason"] == "targets: 2 would-run (web1, web3), 1 already-satisfied (web2)"
    human = project.run("plan", "fan").out
    assert "    = web2 already-satisfied: echo restart nginx on web2 — check holds: shell: test -f" in human, human


# ---------------------------------------------------------------------- how dependencies are found


def test_declared_writes_named_by_a_check_nothing_declared_and_independent_checks(project: Project) -> None:
    flag = project.root / "flag"
    flag.touch()
    project.write(
        "d.yaml",
        f"""
        name: d
        steps:
          - {{id: make, writes: ["{flag}", "{project.root}/sub"], shell: [touch, "{flag}"]}}
          - {{id: named, check: [{{shell: [test, -f, "{flag}"]}}], shell: [echo]}}
          - {{id: quiet, writes: [], shell: [echo, only, prints]}}
          - {{id: vague, shell: [echo, something]}}
          - {{id: guarded, check: [{{shell: ["true"]}}], shell: [echo]}}
          - {{id: own, reads: [], check: [{{shell: ["true"]}}], shell: [echo]}}
          - {{id: missing, check: [{{shell: [test, -f, "{project.root}/other"]}}], shell: [echo]}}
          - {{id: wants, reads: ["{project.root}/sub/x"], check: [{{shell: [test, -f, "{project.root}/sub/x"]}}], shell: [echo]}}
    """,
    )
    steps = by_id(plan(project, "d"))
    assert steps["named"]["verdict"] == "depends-on-earlier-change" and steps["named"]["depends_on"] == ["make"], steps["named"]
    assert steps["named"]["reason"].endswith(f"(step 'make' writes {flag})")
    guarded = steps["guarded"]
    assert guarded["verdict"] == "depends-on-earlier-change" and guarded["depends_on"] == ["make", "named", "vague"], guarded
    assert "would run first and may change what it reads" in guarded["reason"], "quiet declares it writes nothing"
    assert steps["own"]["verdict"] == "already-satisfied", "reads: [] — nothing earlier changes what its checks read"
    assert steps["missing"]["verdict"] == "would-run", "a check that does not hold is not made uncertain by a guess"
    assert steps["wants"]["verdict"] == "depends-on-earlier-change" and steps["wants"]["now"] == "would-run", "a declared overlap"
    assert steps["wants"]["depends_on"] == ["make"]


def test_a_precondition_an_earlier_step_makes_true_is_not_blocked(project: Project) -> None:
    ready = project.root / "ready"
    project.write(
        "p.yaml",
        f"""
        name: p
        steps:
          - {{id: prepare, writes: ["{ready}"], shell: [touch, "{ready}"]}}
          - {{id: go, reads: ["{ready}"], precondition: [{{shell: [test, -f, "{ready}"]}}], shell: [echo, go]}}
          - {{id: never, reads: [], precondition: [{{shell: ["false"]}}], shell: [echo]}}
    """,
    )
    doc = plan(project, "p")
    steps = by_id(doc)
    assert steps["go"]["verdict"] == "depends-on-earlier-change" and steps["go"]["now"] == "blocked"
    assert steps["go"]["reason"].startswith("its precondition does not hold now, but it reads what an earlier step would change")
    assert steps["never"]["verdict"] == "blocked" and doc["stops_at"] == "never"
    assert not ready.exists()


# ---------------------------------------------------------------------- sub-runbooks, items, secrets, problems


def test_sub_runbooks_are_planned_with_their_params_after_the_parents_earlier_steps(project: Project) -> None:
    state = project.root / "state"
    state.write_text("old\n")
    project.write(
        "parent.yaml",
        f"""
        name: parent
        params: {{who: {{type: string, default: ops}}}}
        steps:
          - {{id: change, writes: ["{state}"], shell: [sh, -c, 'echo new > "$0"', "{state}"]}}
          - {{id: child, runbook: {{name: child, params: {{greeting: "hello {{{{ params.who }}}}"}}}}}}
    """,
    )
    project.write(
        "child.yaml",
        f"""
        name: child
        params: {{greeting: string}}
        steps:
          - {{id: say, shell: [echo, "{{{{ params.greeting }}}}"]}}
          - {{id: look, reads: ["{state}"], check: [{{shell: [grep, -q, old, "{state}"]}}], shell: [echo]}}
    """,
    )
    step = by_id(plan(project, "parent"))["child"]
    assert step["verdict"] == "would-run" and step["reason"] == "starts sub-runbook 'child': 1 would-run, 1 depends-on-earlier-change"
    child = step["runbook"]
    assert child["runbook"] == "child" and child["params"] == {"greeting": "hello ops"}
    inner = by_id(child)
    assert inner["say"]["action"] == "echo 'hello ops'"
    assert inner["look"]["verdict"] == "depends-on-earlier-change" and inner["look"]["depends_on"] == ["change"]
    human = project.run("plan", "parent").out
    assert "sub-runbook child with {'greeting': 'hello ops'}:" in human and "      ~ look depends-on-earlier-change" in human, human


def test_for_each_is_planned_per_item(project: Project) -> None:
    project.write(
        "e.yaml",
        """
        name: e
        params: {dbs: {type: array, default: [{name: a, size: 1}, {name: b, size: 2}]}}
        steps:
          - {id: grow, for_each: "{{ params.dbs }}", shell: [echo, "grow {{ item.name }} by {{ item.size }}"]}
          - {id: later, for_each: "{{ steps.grow.output | list }}", shell: [echo, "{{ item }}"]}
    """,
    )
    steps = by_id(plan(project, "e"))
    assert [(t["name"], t["item"], t["action"]) for t in steps["grow"]["targets"]] == [
        ("a", {"name": "a", "size": 1}, "echo 'grow a by 1'"), ("b", {"name": "b", "size": 2}, "echo 'grow b by 2'")]  # fmt: skip
    assert steps["later"]["verdict"] == "cannot-know"
    assert steps["later"]["reason"] == "its items needs the outcome of step 'grow', which has not run yet"


def test_commands_urls_and_messages_are_rendered_with_secrets_masked(project: Project) -> None:
    secret = "s3cr3t-plan-value"
    project.write(
        "m.yaml",
        """
        name: m
        params: {host: {type: string, default: web1}}
        secrets: {tok: env:RB_PLAN_TOK}
        steps:
          - {id: call, shell: [curl, -H, "X-Token: {{ secrets.tok }}", "https://{{ params.host }}/x"]}
          - {id: ok, approval: {message: "restart {{ params.host }} (token {{ secrets.tok }})?"}}
          - {id: api, http: {url: "https://api.example.com/{{ params.host }}", headers: {X-Token: "{{ secrets.tok }}"}}}
    """,
    )
    res = project.run("plan", "m", "--json", env={"RB_PLAN_TOK": secret})
    assert res.code == 0 and secret not in res.out, res
    steps = by_id(res.json())
    assert steps["call"]["action"] == "curl -H 'X-Token: ***' https://web1/x"
    assert steps["call"]["config"] == {"command": ["curl", "-H", "X-Token: ***", "https://web1/x"]}
    assert steps["ok"]["verdict"] == "would-wait" and steps["ok"]["action"] == "'restart web1 (token ***)?' (1 approver(s))"
    assert steps["api"]["action"] == "GET https://api.example.com/web1" and steps["api"]["config"]["headers"] == {"X-Token": "***"}
    human = project.run("plan", "m", env={"RB_PLAN_TOK": secret})
    assert secret not in human.out + human.err and "restart web1 (token ***)?" in human.out


def test_plan_shows_what_pre_flight_would_refuse(project: Project) -> None:
    project.write("r.yaml", "name: r\nsecrets: {tok: env:RB_PLAN_MISSING}\nsteps:\n  - {id: a, shell: [echo, '{{ secrets.tok }}']}\n"
                            "  - {id: b, runbook: {name: nowhere}}\n")  # fmt: skip
    doc = plan(project, "r")
    assert [(p["step"], p["message"].split(":")[0]) for p in doc["problems"]] == [
        (None, "cannot resolve the run's secrets"), ("b", "sub-runbook 'nowhere'")]  # fmt: skip
    assert by_id(doc)["b"]["verdict"] == "cannot-know"
    human = project.run("plan", "r").out
    assert "pre-flight: a run would fail before its first step, changing nothing (2 problems):" in human
    assert "  - step 'b': sub-runbook 'nowhere': no runbook named 'nowhere'" in human
    no_runs(project)
