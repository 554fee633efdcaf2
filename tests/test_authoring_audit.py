"""Know before you act (issue 20), end to end: what ``validate`` and a run's pre-flight find, found by an acceptance audit."""

from __future__ import annotations

import pytest

from tests.conftest import Project


def problems_of(project: Project, *args: str) -> list[dict[str, object]]:
    res = project.run("validate", *args, "--json")
    assert res.code in (0, 2), res
    return list(res.json()["problems"])


# ---------------------------------------------------------------------- params named like dict methods


def test_params_named_like_mapping_methods_are_the_params(project: Project) -> None:
    out = project.root / "out"
    project.write(
        "meth.yaml",
        f"""
        name: meth
        params:
          items: {{type: array, default: [x, y]}}
          keys: {{type: string, default: k1}}
          get: {{type: integer, default: 3}}
        steps:
          - id: each
            for_each: "{{{{ params.items }}}}"
            shell: [sh, -c, 'echo "$1" >> "$0"', "{out}", "{{{{ item }}}}"]
          - id: keys
            shell: [sh, -c, 'echo "$1 $2" >> "$0"', "{out}", "{{{{ params.keys }}}}", "{{{{ params.get + 1 }}}}"]
        """,
    )
    assert problems_of(project) == []
    res = project.run("run", "meth", "--json")
    assert res.code == 0, res
    assert out.read_text().split("\n") == ["x", "y", "k1 4", ""]


# ---------------------------------------------------------------------- validate FILE and sub-runbooks


def test_validating_one_file_finds_its_sub_runbooks_on_the_search_path(project: Project) -> None:
    parent = project.write("p.yaml", "name: p\nsteps: [{id: call, runbook: {name: child, params: {who: me}}}]\n")
    project.write("lib/child.yaml", "name: child\nparams: {who: {type: string}}\nsteps: [{id: a, shell: ['true']}]\n")
    res = project.run("validate", "runbooks/p.yaml")
    assert res.code == 0, res
    # what is checked against the child is still checked
    parent.write_text("name: p\nsteps: [{id: call, runbook: {name: child, params: {whom: me}}}]\n")
    problems = problems_of(project, "runbooks/p.yaml")
    messages = " | ".join(str(p["message"]) for p in problems)
    assert "has no param 'whom'" in messages and "needs param 'who'" in messages, messages
    assert {p["file"] for p in problems} == {"runbooks/p.yaml"}
    # a name that is nowhere is still reported
    parent.write_text("name: p\nsteps: [{id: call, runbook: {name: nobody}}]\n")
    [problem] = problems_of(project, "runbooks/p.yaml")
    assert "no runbook named 'nobody'" in str(problem["message"])


def test_validating_a_file_outside_the_search_path_finds_sub_runbooks_beside_it(project: Project) -> None:
    elsewhere = project.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "p.yaml").write_text("name: p\nsteps: [{id: call, runbook: {name: sibling}}]\n")
    (elsewhere / "sibling.yaml").write_text("name: sibling\nsteps: [{id: a, shell: ['true']}]\n")
    res = project.run("validate", "elsewhere/p.yaml")
    assert res.code == 0, res
    # only the file named is reported on, not the other files it was resolved against
    (elsewhere / "sibling.yaml").write_text("name: sibling\nbogus: 1\nsteps: [{id: a, shell: ['true']}]\n")
    project.write("other.yaml", "name: other\nbogus: 1\nsteps: [{id: a, shell: ['true']}]\n")
    problems = problems_of(project, "elsewhere/p.yaml")
    assert [p["file"] for p in problems] == ["elsewhere/p.yaml"], problems
    assert "sub-runbook 'sibling' does not load" in str(problems[0]["message"])


def test_validating_one_file_finds_a_cycle_through_runbooks_on_the_search_path(project: Project) -> None:
    project.write("p.yaml", "name: p\nsteps: [{id: call, runbook: {name: q}}]\n")
    project.write("q.yaml", "name: q\nsteps: [{id: back, runbook: {name: p}}]\n")
    [problem] = problems_of(project, "runbooks/p.yaml")
    assert "sub-runbook cycle: p → q → p" in str(problem["message"]) and problem["file"] == "runbooks/p.yaml", problem


# ---------------------------------------------------------------------- every problem of every step


@pytest.mark.parametrize(
    ("step", "wanted"),
    [
        ('{id: s, approval: {message: "ok {{ params.who }}", approvers: zero}}', "approvers"),
        ('{id: s, shell: {command: [echo, "{{ params.x }}"], cwd: 5}}', "cwd"),
    ],
    ids=["approval", "shell"],
)
def test_a_config_type_error_hides_no_template_error_of_the_step(project: Project, step: str, wanted: str) -> None:
    project.write("typed.yaml", f"name: typed\nsteps:\n  - {step}\n")
    problems = problems_of(project)
    messages = " | ".join(str(p["message"]) for p in problems)
    assert len(problems) == 2, messages
    assert any(wanted in str(p.get("where") or "") + str(p["message"]) for p in problems), messages
    assert "refers to param" in messages, messages


def test_a_top_level_error_hides_no_lock_error(project: Project) -> None:
    project.write(
        "locked.yaml",
        """
        name: locked
        descripton: x
        lock: "x:{{ steps.a.output }}"
        steps: [{id: a, shell: ['true']}]
        """,
    )
    messages = [str(p["message"]) for p in problems_of(project)]
    assert any("descripton" in m for m in messages), messages
    assert any("names 'steps'" in m and "lock" in m for m in messages), messages


# ---------------------------------------------------------------------- a forward `when`


@pytest.mark.parametrize(
    "step_b",
    [
        """{id: b, when: "steps.c.state == 'succeeded'", shell: ['true']}""",
        """{id: b, shell: [echo, "{{ steps.c.output.stdout }}"]}""",
        """{id: b, for_each: "{{ steps.c.output.stdout }}", shell: [echo, "{{ item }}"]}""",
        """{id: b, shell: [echo, "{{ steps.b.output.stdout }}"]}""",
    ],
    ids=["when", "action", "for_each", "itself"],
)
def test_a_forward_when_reference_fails_pre_flight_before_anything_runs(project: Project, step_b: str) -> None:
    marker = project.root / "marker"
    project.write(
        "fwd.yaml",
        f"""
        name: fwd
        steps:
          - id: a
            shell: [touch, "{marker}"]
          - {step_b}
          - id: c
            shell: [echo, x]
            rollback: {{shell: [echo, "{{{{ steps.c.output.stdout }}}} {{{{ steps.a.state }}}}"]}}
        """,
    )
    res = project.run("run", "fwd", "--json")
    assert res.code == 1, res
    doc = res.json()
    assert not marker.exists(), "step 'a' ran before the run failed"
    reason = str(doc["reason"])
    assert reason.startswith("pre-flight found 1 problem"), reason
    assert "step 'b'" in reason, reason
    assert ("step 'b' itself" in reason) if "steps.b" in step_b else ("step 'c', which runs after" in reason), reason


def test_a_step_not_known_yet_is_named_at_run_time_not_an_internal_class() -> None:
    from types import SimpleNamespace

    from runner.engine.execution import DoneSteps
    from runner.errors import TemplateError
    from runner.templating import Renderer

    exe = SimpleNamespace(steps={"a": SimpleNamespace(state="succeeded", output=1), "c": SimpleNamespace(state="pending")})
    view = DoneSteps(exe, lambda rec: {"state": rec.state})  # type: ignore[arg-type]
    assert Renderer().render("{{ steps.a.state }}", {"steps": view}) == "succeeded"
    for name, wanted in (("c", "step 'c' has not finished yet"), ("zz", "no step 'zz'")):
        with pytest.raises(TemplateError) as info:
            Renderer().render(f"{{{{ steps.{name}.state }}}}", {"steps": view}, file="f.yaml", step="b", field="when")
        text = str(info.value)
        assert "DoneSteps" not in text and "runner." not in text, text
        assert wanted in text, text


# ---------------------------------------------------------------------- a broken file found by its file name


def test_running_a_broken_runbook_by_its_file_name_shows_the_files_problems(project: Project) -> None:
    project.write("other.yaml", "name: renamed\nbogus: 1\nsteps: [{id: a, shell: ['true']}]\n")
    res = project.run("run", "other")
    assert res.code == 2, res
    assert "no runbook named" not in res.err, res
    assert "runbooks/other.yaml" in res.err and "bogus" in res.err, res
