"""Saying a thing once: ``defaults:`` per step type and ``include:`` of shared defaults and step lists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from runner.catalog import Catalog, LoadedRunbook, load_file
from runner.defaults import merge
from runner.errors import ValidationError
from runner.plugin import PluginHost
from runner.registry import StepTypeRegistry
from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry() -> StepTypeRegistry:
    return PluginHost().step_types


def load(path: Path, registry: StepTypeRegistry, search: list[Path] | None = None) -> LoadedRunbook:
    return load_file(path, registry, search=search or [path.parent], cache=False)[0]


def problems(path: Path, registry: StepTypeRegistry, search: list[Path] | None = None) -> list[str]:
    with pytest.raises(ValidationError) as info:
        load(path, registry, search)
    return [str(p) for p in info.value.problems]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- merge rules


@pytest.mark.parametrize(
    ("default", "value", "merged"),
    [
        ({"a": 1, "b": 2}, {"b": 3}, {"a": 1, "b": 3}),
        ({"env": {"A": "1", "B": "2"}}, {"env": {"B": "x", "C": "3"}}, {"env": {"A": "1", "B": "x", "C": "3"}}),
        ({"hosts": ["a", "b"]}, {"hosts": ["c"]}, {"hosts": ["c"]}),
        ({"auth": {"bearer": "t"}, "x": 1}, {"auth": None}, {"x": 1}),
        ({"auth": {"bearer": "t"}}, {"auth": {"basic": {"username": "u", "password": "p"}}},
         {"auth": {"bearer": "t", "basic": {"username": "u", "password": "p"}}}),
        ({"a": {"b": 1}}, {"a": "flat"}, {"a": "flat"}),
    ],
    ids=["scalar-step-wins", "dicts-merge", "lists-replace", "null-removes", "nested", "type-change"],
)  # fmt: skip
def test_merge_rules(default: dict[str, Any], value: dict[str, Any], merged: dict[str, Any]) -> None:
    assert merge(default, value) == merged


def test_defaults_reach_every_use_of_the_type_and_the_step_wins(tmp_path: Path, registry: StepTypeRegistry) -> None:
    rb = load(
        write(
            tmp_path / "d.yaml",
            """\
name: d
defaults:
  shell: {env: {LC_ALL: C, MODE: default}, cwd: /tmp}
  http: {base_url: "https://api.example.com", headers: {X-Team: ops}, allowed_hosts: [api.example.com]}
steps:
  - id: a
    shell: {command: [echo, a], env: {MODE: step}}
    check: [{shell: [test, -f, x]}]
    rollback: {shell: [echo, undo]}
  - id: b
    http: /v1/ping
    verify: [{http: {url: /v1/health, headers: {X-Req: "1"}}}]
  - id: c
    wait: {checks: [{http: /v1/ready}], every: 1s}
  - id: d
    http: {url: "https://other.example.com/x", allowed_hosts: null}
""",
        ),
        registry,
    )
    a, b, c, d = rb.spec.steps
    assert a.action.config == {"command": ["echo", "a"], "env": {"LC_ALL": "C", "MODE": "step"}, "cwd": "/tmp"}
    assert a.check[0].config == {"command": ["test", "-f", "x"], "env": {"LC_ALL": "C", "MODE": "default"}, "cwd": "/tmp"}
    assert a.rollback is not None and a.rollback.config["env"]["MODE"] == "default"
    assert b.action.config == {"url": "https://api.example.com/v1/ping", "headers": {"X-Team": "ops"}, "allowed_hosts": ["api.example.com"]}
    assert b.verify is not None and b.verify.checks[0].config["headers"] == {"X-Team": "ops", "X-Req": "1"}
    assert c.action.config["checks"][0]["config"]["url"] == "https://api.example.com/v1/ready"
    assert d.action.config == {"url": "https://other.example.com/x", "headers": {"X-Team": "ops"}}  # absolute url; null drops


def test_a_runbook_with_defaults_compiles_to_the_runbook_written_out(registry: StepTypeRegistry) -> None:
    """drain-node says url/auth/allowed_hosts once; it is the same runbook (and hashes) as the one that repeats them."""
    short = load(REPO / "runbooks" / "drain-node.yaml", registry)
    long = load(REPO / "tests" / "data" / "drain-node-written-out.yaml", registry)
    assert short.spec == long.spec and short.step_hashes == long.step_hashes and short.content_hash == long.content_hash
    assert "defaults" in (REPO / "runbooks" / "drain-node.yaml").read_text()


def test_an_error_in_a_default_is_reported_once_where_the_default_is(tmp_path: Path, registry: StepTypeRegistry) -> None:
    found = problems(
        write(
            tmp_path / "e.yaml",
            """\
name: e
defaults:
  http: {timeout: soon, alowed_hosts: [x]}
steps:
  - {id: a, http: "https://a.example.com/"}
  - {id: b, http: "https://b.example.com/"}
  - {id: c, http: "https://c.example.com/"}
""",
        ),
        registry,
    )
    assert len(found) == 2, found
    assert found[0].startswith(f"{tmp_path}/e.yaml:3:19 (step 'a', field 'http.timeout'): expected a duration")
    assert found[1].startswith(f"{tmp_path}/e.yaml:3:25 (field 'defaults.http.alowed_hosts'): unknown key 'alowed_hosts'")


# ---------------------------------------------------------------------- includes


def test_includes_bring_defaults_and_step_lists_and_the_runbooks_own_defaults_win(tmp_path: Path, registry: StepTypeRegistry) -> None:
    write(tmp_path / "_shared" / "lb.yaml", "defaults:\n  http: {headers: {X-Team: ops, X-Env: prod}, timeout: 5s}\n")
    write(tmp_path / "_shared" / "more.yaml", "include: [lb.yaml]\ndefaults:\n  http: {timeout: 7s}\n")
    write(tmp_path / "_shared" / "health.yaml", "steps:\n  - {id: health, http: 'https://x.example.com/h'}\n  - include: tail.yaml\n")
    write(tmp_path / "_shared" / "tail.yaml", "steps:\n  - {id: tail, shell: [echo, tail]}\n")
    rb = load(
        write(
            tmp_path / "r.yaml",
            """\
name: r
include: [_shared/more.yaml]
defaults:
  http: {headers: {X-Env: staging}}
steps:
  - {id: first, shell: [echo, first]}
  - include: _shared/health.yaml
  - {id: last, http: 'https://x.example.com/l'}
""",
        ),
        registry,
    )
    assert [s.id for s in rb.spec.steps] == ["first", "health", "tail", "last"]
    assert rb.spec.step("health").action.config == {"url": "https://x.example.com/h", "headers": {"X-Team": "ops", "X-Env": "staging"},
                                                    "timeout": 7.0}  # fmt: skip
    assert rb.location("tail").endswith("_shared/tail.yaml:2") and rb.location("last") == f"{tmp_path}/r.yaml:8"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("../outside.yaml", "without '..' or a leading '/'"),
        ("/etc/passwd.yaml", "without '..' or a leading '/'"),
        ("_shared/x.json", "only YAML files"),
        ("_shared/missing.yaml", "no such file"),
        ("_shared/escape.yaml", "outside the runbook search path"),
        ("_shared/dir.yaml", "not a regular file"),
        ("_shared/runbook.yaml", "this file is a runbook"),
        ("_shared/with-steps.yaml", "a top-level include brings only defaults"),
        ("_shared/big.yaml", "the limit is 2000"),
    ],
)
def test_unsafe_or_wrong_includes_are_refused(tmp_path: Path, registry: StepTypeRegistry, ref: str, message: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = tmp_path / "runbooks"
    write(tmp_path / "outside.yaml", "defaults: {}\n")
    write(root / "_shared" / "x.json", "{}")
    (root / "_shared" / "escape.yaml").symlink_to(tmp_path / "outside.yaml")
    (root / "_shared" / "dir.yaml").mkdir()
    write(root / "_shared" / "runbook.yaml", "name: shared\nsteps: [{id: a, shell: ['true']}]\n")
    write(root / "_shared" / "with-steps.yaml", "steps: [{id: a, shell: ['true']}]\n")
    write(root / "_shared" / "big.yaml", "defaults: {shell: {env: {A: '" + "x" * 3000 + "'}}}\n")
    monkeypatch.setenv("RUNBOOK_MAX_FILE_BYTES", "2000")
    path = write(root / "r.yaml", f"name: r\ninclude: [{ref}]\nsteps: [{{id: a, shell: ['true']}}]\n")
    found = problems(path, registry, [root])
    assert any(message in p for p in found), found


def test_include_cycles_are_refused_naming_the_chain(tmp_path: Path, registry: StepTypeRegistry) -> None:
    write(tmp_path / "_f" / "a.yaml", "include: [b.yaml]\n")
    write(tmp_path / "_f" / "b.yaml", "include: [a.yaml]\n")
    found = problems(write(tmp_path / "r.yaml", "name: r\ninclude: [_f/a.yaml]\nsteps: [{id: a, shell: ['true']}]\n"), registry)
    assert len(found) == 1
    assert "include cycle:" in found[0] and found[0].count("a.yaml") >= 3 and "b.yaml" in found[0]
    assert "(included from " in found[0] and "r.yaml:2:11" in found[0]


def test_an_include_that_multiplies_steps_is_capped(tmp_path: Path, registry: StepTypeRegistry) -> None:
    write(tmp_path / "_f" / "l0.yaml", "steps:\n" + "".join(f"  - {{id: s{i}, shell: ['true']}}\n" for i in range(40)))
    for n in range(1, 6):  # each level includes the one below four times: 40 * 4**5 steps if nothing stopped it
        write(tmp_path / "_f" / f"l{n}.yaml", "steps:\n" + f"  - include: l{n - 1}.yaml\n" * 4)
    found = problems(write(tmp_path / "r.yaml", "name: r\nsteps:\n  - include: _f/l5.yaml\n"), registry)
    assert any("more than 64 includes" in p or "more than 1000 steps" in p for p in found), found[:3]


def test_python_form_says_the_same(tmp_path: Path, registry: StepTypeRegistry) -> None:
    write(tmp_path / "_shared" / "steps.yaml", "steps:\n  - {id: shared, http: /ping}\n")
    write(
        tmp_path / "rb_yaml.yaml",
        """\
name: same-yaml
defaults: {http: {base_url: "https://api.example.com", timeout: 3s}}
steps:
  - {id: first, http: /first}
  - include: _shared/steps.yaml
""",
    )
    write(
        tmp_path / "rb_py.py",
        """\
from runner import Runbook

rb = Runbook("same-py", defaults={"http": {"base_url": "https://api.example.com", "timeout": "3s"}})
rb.add_step("first", http="/first")
rb.include_steps("_shared/steps.yaml")
""",
    )
    catalog = Catalog.load(registry, [tmp_path], cache=False)
    assert catalog.problems == []
    as_yaml, as_py = catalog.get("same-yaml").spec, catalog.get("same-py").spec
    assert as_py.steps == as_yaml.steps
    assert as_py.steps[1].action.config == {"url": "https://api.example.com/ping", "timeout": 3.0}


# ---------------------------------------------------------------------- edits are edits of the steps they reach


def test_editing_a_default_or_an_included_file_changes_the_hashes_of_the_steps_it_reaches(
    tmp_path: Path, registry: StepTypeRegistry
) -> None:
    shared = write(tmp_path / "_shared" / "steps.yaml", "steps:\n  - {id: inc, shell: [echo, one]}\n")
    path = write(tmp_path / "r.yaml", "name: r\ndefaults: {http: {timeout: 5s}}\nsteps:\n  - {id: sh, shell: [echo]}\n"
                                      "  - {id: web, http: 'https://x.example.com/'}\n  - include: _shared/steps.yaml\n")  # fmt: skip
    before = load(path, registry).step_hashes
    path.write_text(path.read_text().replace("timeout: 5s", "timeout: 6s"))
    after_default = load(path, registry).step_hashes
    assert after_default["web"] != before["web"] and after_default["sh"] == before["sh"] and after_default["inc"] == before["inc"]
    shared.write_text(shared.read_text().replace("one", "two"))
    after_include = load(path, registry).step_hashes
    assert after_include["inc"] != after_default["inc"] and after_include["web"] == after_default["web"]


def test_a_runbook_with_includes_is_not_served_stale_from_the_compile_cache(tmp_path: Path, registry: StepTypeRegistry,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(tmp_path / "cache"))
    shared = write(tmp_path / "rb" / "_shared" / "steps.yaml", "steps:\n  - {id: inc, shell: [echo, one]}\n")
    path = write(tmp_path / "rb" / "r.yaml", "name: r\nsteps:\n  - include: _shared/steps.yaml\n")
    first = load_file(path, registry, search=[path.parent])[0]
    shared.write_text("steps:\n  - {id: inc, shell: [echo, two]}\n")
    second = load_file(path, registry, search=[path.parent])[0]
    assert first.spec.steps[0].action.config["command"] == ["echo", "one"]
    assert second.spec.steps[0].action.config["command"] == ["echo", "two"]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_resume_refuses_a_completed_step_changed_through_its_included_file(project: Project) -> None:
    shared = project.write("_shared/first.yaml", "steps:\n  - {id: first, shell: [echo, one]}\n")
    project.write("inc.yaml", "name: inc\nsteps:\n  - include: _shared/first.yaml\n  - {id: second, shell: [echo, two]}\n")
    res = project.run("run", "inc", "--max-steps", "1", "--json")
    assert res.code == 3, res
    run_id = res.json()["run_id"]
    shared.write_text(shared.read_text().replace("[echo, one]", "[echo, uno]"))
    refused = project.run("resume", run_id)
    assert refused.code == 2, refused
    assert "completed step 'first' changed" in refused.err and "['echo', 'one'] -> ['echo', 'uno']" in refused.err


def test_the_schema_describes_defaults_and_includes() -> None:
    import json

    import jsonschema

    from runner.yamlsafe import load_yaml

    schema = json.loads((REPO / "docs" / "runbook.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = load_yaml("name: x\ninclude: [_s/a.yaml]\ndefaults: {http: {base_url: 'https://a', timeout: 3}}\n"
                     "steps:\n  - include: _s/b.yaml\n  - {id: a, http: /x}\n", "x").data  # fmt: skip
    assert list(validator.iter_errors(good)) == []
    for bad in ("defaults: {http: {nope: 1}}", "defaults: {nosuchtype: {}}", "include: [../x.yaml]", "include: [x.json]"):
        data = load_yaml(f"name: x\n{bad}\nsteps: [{{id: a, shell: ['true']}}]\n", "x").data
        assert not validator.is_valid(data), bad
    assert os.path.exists(REPO / "docs" / "runbooks.md")
