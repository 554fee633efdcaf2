"""The catalog commands through the real entry point: list, show, validate, schema, plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from runner.errors import ValidationError
from runner.yamlsafe import load_yaml
from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent
INVALID = REPO / "tests" / "cases" / "invalid"


REPO_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": str(REPO),
    "RUNBOOK_STORE": "sqlite:////tmp/never-created-by-catalog.db",
    "RUNBOOK_CACHE_DIR": "off",
}  # never a cache under the repository (HOME is the repository here)


def repo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=REPO, capture_output=True, text=True, env=REPO_ENV, timeout=60)


def example_names() -> set[str]:
    """Names of every runbook file in runbooks/ (YAML parsed directly; Python files imported)."""
    from runner.catalog import load_file
    from runner.plugin import PluginHost

    names = set()
    registry = PluginHost().step_types
    for path in (REPO / "runbooks").iterdir():
        if path.suffix in (".yaml", ".yml"):
            names.add(load_yaml(path.read_text(), str(path)).data["name"])
        elif path.suffix == ".py" and not path.name.startswith("_"):
            names.update(rb.name for rb in load_file(path, registry))
    return names


def test_list_json_lists_every_example_with_params_schema() -> None:
    res = repo_cli("list", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["problems"] == []
    listed = {rb["name"]: rb for rb in doc["runbooks"]}
    assert example_names() <= set(listed)
    assert {"disk-cleanup", "restart-service", "drain-node", "rotate-log"} <= set(listed)
    assert len(listed) >= 4
    for rb in listed.values():
        assert rb["description"]
        schema = rb["params_schema"]
        assert schema["type"] == "object" and "properties" in schema
        jsonschema.Draft202012Validator.check_schema(schema)
    assert listed["disk-cleanup"]["params_schema"]["required"] == ["path"]
    assert listed["rotate-log"]["file"].endswith("rotate_log.py")


@pytest.mark.parametrize(
    ("file", "where"),
    [
        ("syntax-error.yaml", "syntax-error.yaml:5:1"),
        ("unknown-step-type.yaml", "unknown-step-type.yaml:4:5 (step 'restart', field 'systemd')"),
        ("unknown-key.yaml", "unknown-key.yaml:5:5 (step 'restart', field 'retries')"),
        ("duplicate-step-id.yaml", "duplicate-step-id.yaml:5:5 (step 'restart', field 'id')"),
        ("alias-bomb.yaml", "alias-bomb.yaml:3:1"),
        ("undeclared-reference.yaml", "undeclared-reference.yaml:6:19 (step 'restart', field 'shell.1')"),
    ],
)
def test_validate_broken_files_exit_2_fast_naming_the_place(file: str, where: str) -> None:
    started = time.monotonic()
    res = repo_cli("validate", str(INVALID / file))
    elapsed = time.monotonic() - started
    assert res.returncode == 2, res
    assert where in res.stderr, res.stderr
    assert elapsed < 5, "process start included; the issue asks for well under a second of work"
    as_json = json.loads(repo_cli("validate", "--json", str(INVALID / file)).stdout)
    assert as_json["valid"] is False and as_json["problems"][0]["line"] is not None


def test_validate_reports_all_problems_of_all_files() -> None:
    res = repo_cli("validate", "--json", str(INVALID))
    doc = json.loads(res.stdout)
    assert res.returncode == 2
    assert {Path(p["file"]).name for p in doc["problems"]} >= {p.name for p in INVALID.glob("*.yaml")} - {"include-cycle.yaml"}


def test_validate_names_undeclared_params_and_steps_in_templates_and_conditions() -> None:
    doc = json.loads(repo_cli("validate", "--json", str(INVALID / "undeclared-reference.yaml")).stdout)
    messages = sorted((p["where"], p["message"]) for p in doc["problems"])
    assert messages == [
        (
            "step 'report', field 'when'",
            "template \"{{ steps.restrat.state == 'succeeded' and params[params.host] != 1 }}\" refers to "
            "step 'restrat', which the runbook does not declare (steps: report, restart)",
        ),
        (
            "step 'restart', field 'shell.1'",
            "template '{{ params.hots }}' refers to param 'hots', which the runbook does not declare (params: host)",
        ),
    ]  # params['host'] and steps.restart (before 'report') are declared; params[params.host] is computed at run time


def test_validate_accepts_templates_that_bind_or_call_params_and_steps(tmp_path: Path) -> None:
    (tmp_path / "fine.yaml").write_text("""
name: fine
params:
  region: {type: string, default: eu}
  items: {type: array, default: [{name: a}]}
steps:
  - id: a
    shell:
      command: [echo, "{{ params.get('region', 'x') }}", "{% for k, v in params.items() %}{{ k }}{% endfor %}",
                "{% for steps in params['items'] %}{{ steps.name }}{% endfor %}", "{% set params = {'zone': 1} %}{{ params.zone }}"]
      env: {expr: "not a condition", when: "next week"}
  - id: b
    when: "params.region == 'eu' and steps.a.state == 'succeeded'"
    check: [{expr: "steps['a'].output.exit_code == 0"}]
    shell: [echo, b]
""")
    res = repo_cli("validate", str(tmp_path / "fine.yaml"))
    assert res.returncode == 0, res.stderr


def test_validate_examples_ok() -> None:
    res = repo_cli("validate")
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_schema_accepts_examples_and_rejects_broken_files() -> None:
    res = repo_cli("schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    for path in (REPO / "runbooks").glob("*.yaml"):
        errors = list(validator.iter_errors(load_yaml(path.read_text(), str(path)).data))
        assert errors == [], f"{path.name}: {[e.message for e in errors]}"
    for name in ("unknown-step-type.yaml", "unknown-key.yaml"):
        data = load_yaml((INVALID / name).read_text(), name).data
        assert not validator.is_valid(data), name
    # Syntax errors and aliases never become a document to validate; duplicate ids are beyond JSON Schema
    # (uniqueness of one property across array items) and are caught by `runbook validate` (tested above).
    for name in ("syntax-error.yaml", "alias-bomb.yaml"):
        with pytest.raises(ValidationError, match=name):
            load_yaml((INVALID / name).read_text(), name)


def test_schema_file_in_docs_is_current() -> None:
    """docs/runbook.schema.json (referenced by the examples for editors) matches `runbook schema`."""
    assert json.loads((REPO / "docs" / "runbook.schema.json").read_text()) == json.loads(repo_cli("schema").stdout)


def test_show_lists_params_and_checks() -> None:
    res = repo_cli("show", "disk-cleanup")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "path" in out and "threshold" in out and "90" in out and "integer" in out
    assert "check:" in out and "verify" in out and "precondition:" in out
    doc = json.loads(repo_cli("show", "rotate-log", "--json").stdout)
    assert doc["runbook"]["steps"][0]["action"] == {"type": "python", "config": {"call": "runbook_catalog.rotate_log:rotate"}}


def test_unknown_runbook_is_one_clear_line() -> None:
    res = repo_cli("show", "disk-clean")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: no runbook named 'disk-clean'; did you mean disk-cleanup?"
    doc = json.loads(repo_cli("show", "nope", "--json").stdout)
    assert doc["error"]["type"] == "RunbookNotFound" and doc["error"]["exit_code"] == 2


def test_version_and_debug(project: Project) -> None:
    res = project.run("--version")
    assert res.code == 0 and res.out.startswith("runbook ")
    bad = project.run("--debug", "show", "nope")
    assert bad.code == 2 and "Traceback" in bad.err


def test_duplicate_runbook_names_name_both_files(project: Project) -> None:
    project.write("a.yaml", "name: same\nsteps: [{id: a, shell: ['true']}]\n")
    project.write("sub/b.yaml", "name: same\nsteps: [{id: b, shell: ['true']}]\n")
    res = project.run("show", "same")
    assert res.code == 2
    assert "runbook name 'same' is also defined in runbooks/a.yaml" in res.err and "runbooks/sub/b.yaml" in res.err


def test_path_and_runbook_path(project: Project, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "x.yaml").write_text("name: elsewhere\nsteps: [{id: a, shell: ['true']}]\n")
    assert "elsewhere" in project.run("--path", str(other), "list").out
    assert "elsewhere" in project.run("list", env={"RUNBOOK_PATH": str(other)}).out
    assert "elsewhere" not in project.run("list").out


def test_json_is_compact_through_a_pipe_and_indented_on_a_terminal() -> None:
    import os
    import pty

    piped = repo_cli("list", "--json")
    assert piped.returncode == 0, piped.stderr
    compact = json.loads(piped.stdout)
    assert piped.stdout == json.dumps(compact, separators=(",", ":"), ensure_ascii=False) + "\n"

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runner", "list", "--json"], cwd=REPO, stdout=follower,
                            stderr=subprocess.DEVNULL, env=REPO_ENV)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    assert text.startswith('{\n  "runbooks": [')
    assert json.loads(text) == compact
