"""``for_each:``: a step once per item, with the journaling, batch limits and resume rules of a host fan-out."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from harness.procs import wait_for

from runner.engine.units import MAX_KEY, item_key, item_units
from runner.errors import StepFailed
from runner.testing import RunbookHarness
from tests.conftest import Project, kill


def steps_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


# ---------------------------------------------------------------------- must-show 5


def test_defaults_an_include_and_for_each_killed_at_item_3_run_each_item_exactly_once(project: Project) -> None:
    """kill -9 while item 3's action runs; the resume enters item 3 through its check and runs only 4 and 5."""
    log = project.root / "side-effects"
    project.write(
        "_shared/announce.yaml",
        f"""
        steps:
          - id: announce
            shell: {{command: [sh, -c, 'echo "start $GREETING" >> "$0"', "{log}"]}}
            check: [{{shell: [grep, -qx, "start hello", "{log}"]}}]
    """,
    )
    project.write(
        "loop.yaml",
        f"""
        name: loop
        params:
          names: {{type: array, items: string, default: [one, two, three, four, five]}}
        defaults:
          shell: {{env: {{GREETING: hello}}}}
        steps:
          - include: _shared/announce.yaml
          - id: each
            for_each: "{{{{ params.names }}}}"
            check: [{{shell: [sh, -c, 'grep -qx "$1 $GREETING" "$0"', "{log}", "{{{{ item }}}}"]}}]
            shell:
              command: [sh, -c, 'echo "$1 $GREETING" >> "$0"; if [ "$1" = three ]; then touch "$0.three"; sleep 60; fi', "{log}", "{{{{ item }}}}"]
    """,
    )
    proc = project.popen("run", "loop", "--json")
    wait_for(lambda: Path(f"{log}.three").exists(), 60, "item 3's action to run")
    kill(proc, signal.SIGKILL)
    run_id = project.run("runs", "--json").json()["runs"][0]["run_id"]
    assert log.read_text().splitlines() == ["start hello", "one hello", "two hello", "three hello"]

    res = project.run("resume", run_id, "--json")
    assert res.code == 0, res
    lines = log.read_text().splitlines()
    assert lines == ["start hello", "one hello", "two hello", "three hello", "four hello", "five hello"], lines
    each = steps_of(res.json())["each"]
    assert each["state"] == "succeeded", each
    states = {name: t["state"] for name, t in each["targets"].items()}
    assert states == {"one": "succeeded", "two": "succeeded", "three": "satisfied", "four": "succeeded", "five": "succeeded"}
    events = project.run("events", run_id, "--json").json()["events"]
    recovered = [e for e in events if e["type"] == "step.recovered" and "target" in e["data"]]
    assert [(e["step_id"], e["data"]["target"], e["data"]["decision"]) for e in recovered] == [("each", "three", "check")]
    started = [e["data"].get("target") for e in events if e["type"] == "step.started" and e["step_id"] == "each"]
    assert started.count("three") == 1 and started.count("one") == 1, "no item's action was started twice"


def test_exactly_once_per_item_with_two_at_a_time_across_a_kill(tmp_path: Path) -> None:
    directory = tmp_path / "rb"
    directory.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    (directory / "pairs.yaml").write_text(
        f"""
name: pairs
steps:
  - id: touch
    for_each: [{{name: a, n: 1}}, {{name: b, n: 2}}, {{name: c, n: 3}}, {{name: d, n: 4}}, {{name: e, n: 5}}]
    batch: {{max_concurrency: 2}}
    check: [{{shell: [test, -f, "{marks}/{{{{ item.name }}}}"]}}]
    shell: [sh, -c, 'echo "$1" >> "$0"', "{marks}/{{{{ item.name }}}}", "{{{{ item.n }}}}"]
""",
        encoding="utf-8",
    )
    h = RunbookHarness(tmp_path / "h", [directory])
    try:
        killed = h.run_until_killed("pairs", at="touch", target="c", when="after")
        outcome = h.resume(killed.run_id)
        assert outcome.state == "succeeded", outcome.reason
        h.assert_exactly_once(outcome, "touch", target="c")  # killed right after its action: entered through its check
        for name, n in zip("abcde", range(1, 6), strict=True):
            assert (marks / name).read_text() == f"{n}\n", f"item {name} acted exactly once"
            # (an item in flight beside c when the process died may have acted without its ledger line: at most once)
            assert len(h.executions("touch", run_id=outcome.run_id, target=name)) <= 1
            assert outcome.step("touch").targets is not None and outcome.step("touch").targets[name]["state"] in ("succeeded", "satisfied")
    finally:
        h.close()


# ---------------------------------------------------------------------- items, keys, outputs


def test_items_from_an_earlier_step_with_keys_fields_outputs_and_logs(project: Project) -> None:
    project.write(
        "inv.yaml",
        """
        name: inv
        steps:
          - id: list
            shell: [echo, '[{"name": "db", "size": 3}, {"id": 7, "size": 1}, 5, [1, 2]]']
          - id: each
            for_each: "{{ steps.list.output.stdout | from_json }}"
            shell: [echo, "{{ item.size if item is mapping else item | to_json }}"]
          - id: after
            shell: [echo, "{{ steps.each.output.db.stdout | trim }}+{{ steps.each.output['7'].stdout | trim }}"]
    """,
    )
    res = project.run("run", "inv", "--json")
    assert res.code == 0, res
    steps = steps_of(res.json())
    assert list(steps["each"]["targets"]) == ["db", "7", "5", "[1,2]"], "keys: name, id, JSON text"
    assert steps["each"]["output"]["5"]["stdout"] == "5\n" and steps["each"]["output"]["[1,2]"]["stdout"] == "[1, 2]\n"
    assert steps["after"]["output"]["stdout"] == "3+1\n"
    assert steps["each"]["reason"] == "items: 4 succeeded (db, 7, 5, [1,2])"
    assert [t["item"] for t in steps["each"]["targets"].values()] == [{"name": "db", "size": 3}, {"id": 7, "size": 1}, 5, [1, 2]]
    logs = project.run("logs", res.json()["run_id"], "each", "--target", "db", "--json").json()["lines"]
    assert [(line["target"], line["line"]) for line in logs] == [("db", "3")]


def test_an_empty_list_is_nothing_to_do(project: Project) -> None:
    project.write(
        "e.yaml",
        "name: e\nparams:\n  xs: {type: array, default: []}\nsteps:\n  - {id: each, for_each: '{{ params.xs }}', shell: [false]}\n",
    )
    res = project.run("run", "e", "--json")
    assert res.code == 0, res
    assert steps_of(res.json())["each"]["reason"] == "for_each: no items, nothing to do"


def test_batch_limits_hold_items_back_and_a_retry_runs_only_the_rest(project: Project) -> None:
    log = project.root / "log"
    gate = project.root / "fixed"
    project.write(
        "b.yaml",
        f"""
        name: b
        steps:
          - id: each
            for_each: [a, b, c, d]
            batch: {{max_failures: 0}}
            shell: [sh, -c, 'echo "$1" >> "$0"; [ "$1" != b ] || [ -f "{gate}" ]', "{log}", "{{{{ item }}}}"]
    """,
    )
    res = project.run("run", "b", "--json")
    assert res.code == 1, res
    targets = steps_of(res.json())["each"]["targets"]
    assert {n: t["state"] for n, t in targets.items()} == {"a": "succeeded", "b": "failed", "c": "not_started", "d": "not_started"}
    assert targets["c"]["reason"] == "not started: more than 0 item(s) failed"
    gate.touch()
    again = project.run("resume", res.json()["run_id"], "--retry", "--json")
    assert again.code == 0, again
    assert log.read_text().split() == ["a", "b", "b", "c", "d"], "a succeeded and is not run again"


def test_a_rollback_gets_each_item_it_undoes(project: Project) -> None:
    log = project.root / "log"
    project.write(
        "rb.yaml",
        f"""
        name: rb
        on_failure: rollback
        steps:
          - id: each
            for_each: [{{name: x, v: 1}}, {{name: y, v: 2}}]
            shell: [sh, -c, 'echo "do $1" >> "$0"', "{log}", "{{{{ item.v }}}}"]
            rollback: {{shell: [sh, -c, 'echo "undo $1" >> "$0"', "{log}", "{{{{ item.v }}}}"]}}
          - id: boom
            shell: ["false"]
    """,
    )
    res = project.run("run", "rb", "--json")
    assert res.code == 1, res
    assert log.read_text().splitlines() == ["do 1", "do 2", "undo 1", "undo 2"]
    assert steps_of(res.json())["each"]["state"] == "rolled_back"


def test_a_python_step_reads_its_item(project: Project, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "itemlib.py").write_text("def double(ctx, params):\n    return {'key': ctx.unit, 'twice': ctx.item * 2, 'target': ctx.target}\n")
    project.write("py.yaml", "name: py\nsteps:\n  - {id: each, for_each: [1, 2], python: {call: 'itemlib:double'}}\n")
    res = project.run("run", "py", "--json", env={"PYTHONPATH": str(lib)})
    assert res.code == 0, res
    assert steps_of(res.json())["each"]["output"] == {"1": {"key": "1", "twice": 2, "target": None},
                                                      "2": {"key": "2", "twice": 4, "target": None}}  # fmt: skip


def test_the_python_form_says_the_same(project: Project) -> None:
    project.write(
        "loop_py.py",
        """
        from runner import Runbook

        rb = Runbook("loop-py")
        rb.add_step("each", for_each=["a", "b"], batch={"max_concurrency": 2}, shell=["echo", "{{ item }}"])
    """,
    )
    res = project.run("run", "loop-py", "--json")
    assert res.code == 0, res
    assert {k: v["stdout"] for k, v in steps_of(res.json())["each"]["output"].items()} == {"a": "a\n", "b": "b\n"}


# ---------------------------------------------------------------------- the key rule


@pytest.mark.parametrize(
    ("item", "key"),
    [("web1", "web1"), ({"name": "db", "size": 3}, "db"), ({"id": 7}, "7"), ({"name": "", "id": "x"}, "x"), (3, "3"),
     (True, "true"), (None, "null"), ("", '""'), ([1, "a"], '[1,"a"]'), ({"b": 1, "a": 2}, '{"a":2,"b":1}')],
    ids=["string", "name", "id", "empty-name", "int", "bool", "null", "empty-string", "list", "mapping"],
)  # fmt: skip
def test_item_keys(item: Any, key: str) -> None:
    assert item_key(item) == key


def test_long_keys_are_cut_stably_and_repeated_keys_are_refused() -> None:
    long = "x" * 300
    key = item_key(long)
    assert len(key) == MAX_KEY and key == item_key("x" * 300) != item_key("x" * 299 + "y")
    with pytest.raises(StepFailed, match=r"for_each items #1 and #3 have the same key 'a'"):
        item_units(["a", "b", {"name": "a"}], "s")
    with pytest.raises(StepFailed, match="for_each gave dict"):
        item_units({"a": 1}, "s")


def test_repeated_keys_are_found_by_pre_flight_before_anything_runs(project: Project) -> None:
    marker = project.root / "marker"
    project.write(
        "d.yaml", f"name: d\nsteps:\n  - {{id: m, shell: [touch, {marker}]}}\n  - {{id: each, for_each: [a, a], shell: [echo]}}\n"
    )
    res = project.run("run", "d", "--json")
    assert res.code == 1 and "step 'each': for_each items #1 and #2 have the same key 'a'" in res.json()["reason"], res
    assert not marker.exists()


# ---------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{id: s, shell: [echo, '{{ item }}']}", "names 'item', which is set only in a step with 'for_each'"),
        ("{id: s, targets: [h], shell: [echo, '{{ item.x }}']}", "names 'item', which is set only in a step with 'for_each'"),
        ("{id: s, for_each: [a], targets: [h], shell: [echo]}", "a step has either 'targets' (hosts) or 'for_each' (items), not both"),
        ("{id: s, for_each: 'a,b', shell: [echo]}", "expected a list or a template that gives one"),
        ("{id: s, for_each: [a], approval: {message: m}}", "a 'approval' step cannot run once per item"),
        ("{id: s, for_each: [a], shell: [echo, '{{ target.name }}']}", "names 'target', which is set only in a step with 'targets'"),
    ],
    ids=["item-outside", "item-in-targets", "both", "not-a-list", "approval", "target-in-for-each"],
)
def test_validate_knows_where_item_is_defined(project: Project, step: str, message: str) -> None:
    project.write("v.yaml", f"name: v\nsteps:\n  - {step}\n")
    res = project.run("validate", "--json")
    assert res.code == 2, res
    assert any(message in p["message"] for p in res.json()["problems"]), res.json()["problems"]


def test_validate_accepts_item_in_every_per_item_field(project: Project) -> None:
    project.write(
        "ok.yaml",
        """
        name: ok
        steps:
          - id: s
            for_each: [{name: a, path: /tmp/a}]
            writes: ["{{ item.path }}"]
            reads: ["{{ item.path }}"]
            check: [{expr: "{{ item.name == 'a' }}"}, {shell: [test, -f, "{{ item.path }}"]}]
            shell: [echo, "{{ item | to_json }}"]
            rollback: {shell: [echo, "{{ item.name }}"]}
    """,
    )
    res = project.run("validate", "--json")
    assert res.code == 0, json.dumps(res.json()["problems"], indent=1)
