"""Secret references belong to the operator: a caller picks only among the references a param allows.

Checked before a run is created, on every surface (CLI, Python API, HTTP); the allow-list itself is validated
when the runbook is loaded, with errors naming file, line and field; the JSON Schema exports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ParamsError
from runner.params import ParamSpec
from runner.secretrefs import check_allow_pattern, check_secret_refs, reference_allowed
from tests.conftest import Project
from tests.security.conftest import TOKEN

ALLOWED = """
    name: db
    params:
      pw: {type: string, secret: true, default: "env:DB_DEFAULT", allow: ["env:DB_*", "file:{dir}/*"]}
    steps:
      - id: use
        shell: {script: 'test -n "$PW"', env: {PW: "{{ params.pw }}"}}
"""


@pytest.mark.parametrize(
    ("ref", "allowed"),
    [
        ("env:DB_PASSWORD", True),
        ("env:DB_", True),
        ("env:AWS_SECRET_ACCESS_KEY", False),
        ("file:/etc/app/secrets/db", True),
        ("file:/etc/app/secrets/sub/db", False),  # * does not cross /
        ("file:/etc/app/secrets/../../shadow", False),
        ("file:/etc/app/secrets//db", False),
        ("file:/etc/app/secrets/./db", False),
        ("file:~/secrets/db", False),
        ("file:/etc/shadow", False),
        ("vault:kv/app/db", False),
    ],
)
def test_reference_matching(ref: str, allowed: bool) -> None:
    why = reference_allowed(ref, ["env:DB_*", "file:/etc/app/secrets/*"])
    assert (why is None) == allowed, why
    if not allowed:
        assert ref.partition(":")[2].split("/")[-1] in why  # names the reference (never a value: it is not one)


def test_double_star_crosses_directories_and_the_default_is_always_allowed() -> None:
    assert reference_allowed("file:/run/secrets/app/..2026/token", ["file:/run/secrets/app/**"]) is None
    assert reference_allowed("env:ANYTHING", [], default="env:ANYTHING") is None
    why = reference_allowed("env:OTHER", [], default="env:ANYTHING")
    assert why is not None and "only its default 'env:ANYTHING'" in why


def test_a_symlink_cannot_lead_out_of_an_allowed_directory(tmp_path: Path) -> None:
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    (allowed / "shadow").symlink_to("/etc/shadow")
    why = reference_allowed(f"file:{allowed}/shadow", [f"file:{allowed}/*"])
    assert why is not None and "resolves to '/etc/shadow'" in why


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("DB_*", "expected 'scheme:pattern'"),
        ("file:relative/*", "must be absolute"),
        ("file:/etc/../shadow", "must be normalised"),
        ("env:DB-*", "environment variable name"),
        ("Env:X", "expected 'scheme:pattern'"),
    ],
)
def test_bad_allow_entries_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_allow_pattern(pattern)


def test_allow_needs_secret_and_is_validated_at_load_time(project: Project) -> None:
    project.write("a.yaml", "name: a\nparams:\n  n: {type: string, allow: ['env:X']}\nsteps:\n  - {id: s, shell: ['true']}\n")
    project.write("b.yaml", "name: b\nparams:\n  pw:\n    secret: true\n    allow: ['file:etc/x']\nsteps:\n  - {id: s, shell: ['true']}\n")
    result = project.run("validate", "--json")
    assert result.code == 2, result
    problems = {Path(p["file"]).name: p for p in result.json()["problems"]}
    assert problems["a.yaml"]["line"] == 3 and problems["a.yaml"]["where"] == "field 'params.n'", problems
    assert "needs 'secret: true'" in problems["a.yaml"]["message"]
    assert problems["b.yaml"]["line"] == 4 and problems["b.yaml"]["where"] == "field 'params.pw'", problems
    assert "'file:etc/x': a file path must be absolute" in problems["b.yaml"]["message"]


def test_the_schema_exports_allow() -> None:
    schema = ParamSpec.model_json_schema()
    assert "allow" in schema["properties"]
    repo = Path(__file__).resolve().parents[2]
    exported = json.loads((repo / "docs" / "runbook.schema.json").read_text(encoding="utf-8"))
    assert '"allow"' in json.dumps(exported)


def test_python_params_declare_allow_with_secret_allow() -> None:
    from typing import Annotated

    from runner import Params, Secret
    from runner.params import SecretAllow, build_params_model, spec_from_model

    class P(Params):
        token: Annotated[Secret, SecretAllow("env:API_*")]

    spec = spec_from_model(P)["token"]
    assert spec.secret and spec.allow == ["env:API_*"]
    model = build_params_model("x", spec_from_model(P))
    assert model.model_json_schema()["properties"]["token"]["x-allow"] == ["env:API_*"]


def test_check_secret_refs_names_every_refused_param() -> None:
    specs = {"a": ParamSpec(secret=True, allow=["env:A_*"]), "b": ParamSpec(secret=True), "c": ParamSpec()}
    with pytest.raises(ParamsError) as info:
        check_secret_refs("rb", specs, {"a": "env:B_X", "b": "file:/etc/passwd", "c": "file:/etc/passwd"}, ["env", "file"])
    assert [p.split(":")[0] for p in info.value.problems] == ["a", "b"]
    check_secret_refs("rb", specs, {"a": "env:A_1", "b": "file:/x"}, ["env", "file"], default_allow=["file:/x"])


def _runs(project: Project) -> list[Any]:
    return list(project.run("runs", "--json").json()["runs"])


def test_the_cli_refuses_a_reference_outside_the_list_before_the_run_is_created(project: Project, tmp_path: Path) -> None:
    project.write("db.yaml", ALLOWED.replace("{dir}", str(tmp_path)))
    for ref in ("file:/etc/passwd", "env:HOME", "file:/dev/zero", f"file:{tmp_path}/../etc/passwd"):
        result = project.run("run", "db", "-p", f"pw={ref}", "--json")
        assert result.code == 2, result
        error = result.json()["error"]
        assert error["type"] == "ParamsError" and ("not allowed" in error["message"] or "normalised" in error["message"]), error
    assert _runs(project) == []
    (tmp_path / "pw").write_text("a-password\n", encoding="utf-8")
    ok = project.run("run", "db", "-p", f"pw=file:{tmp_path}/pw", "--json")
    assert ok.code == 0, ok
    ok = project.run("run", "db", "--json", env={"DB_DEFAULT": "default-password"})
    assert ok.code == 0, ok


def test_without_allow_only_the_default_or_the_operators_list(project: Project) -> None:
    project.write(
        "p.yaml",
        """
        name: p
        params:
          pw: {type: string, secret: true, default: "env:PW_DEFAULT"}
        steps:
          - {id: s, shell: ['true']}
        """,
    )
    env = {"PW_DEFAULT": "default-value", "PW_OTHER": "other-value"}
    refused = project.run("run", "p", "-p", "pw=env:PW_OTHER", "--json", env=env)
    assert refused.code == 2 and "declares no `allow:` list" in refused.out, refused
    assert _runs(project) == []
    assert project.run("run", "p", "-p", "pw=env:PW_DEFAULT", "--json", env=env).code == 0
    operator = project.run("run", "p", "-p", "pw=env:PW_OTHER", "--json", env={**env, "RUNBOOK_SECRET_ALLOW": "env:PW_*"})
    assert operator.code == 0, operator
    bad = project.run("run", "p", "--json", env={**env, "RUNBOOK_SECRET_ALLOW": "file:relative"})
    assert bad.code == 2 and "RUNBOOK_SECRET_ALLOW" in bad.out + bad.err, bad


def test_the_python_api_refuses_too(project: Project, tmp_path: Path) -> None:
    from runner.api import Client

    project.write("db.yaml", ALLOWED.replace("{dir}", str(tmp_path)))
    with Client(paths=[str(project.runbooks)], store=f"sqlite:///{tmp_path}/j.db", project_dir=str(project.root)) as client:
        with pytest.raises(ParamsError, match="not allowed"):
            client.start("db", {"pw": "file:/etc/shadow"})
        assert client.list_runs().runs == []


def test_http_refuses_before_a_run_is_created(project: Project, serve: Any, tmp_path: Path) -> None:
    project.write("db.yaml", ALLOWED.replace("{dir}", str(tmp_path)))
    server = serve("tokens:\n  - {name: ops, token: env:SEC_TOKEN, scopes: [admin]}\n", env={"SEC_TOKEN": TOKEN}, token=TOKEN)
    client = server.client()
    response = client.post("/v1/runs", json={"runbook": "db", "params": {"pw": "file:/etc/shadow"}})
    assert 400 <= response.status_code < 500, response.text
    assert "not allowed" in response.text
    assert client.get("/v1/runs").json()["runs"] == []


def test_the_server_config_sets_the_operators_list(project: Project, serve: Any) -> None:
    project.write("p.yaml", "name: p\nparams:\n  pw: {type: string, secret: true}\nsteps:\n  - {id: s, shell: ['true']}\n")
    config = "secret_allow: ['env:APP_*']\ntokens:\n  - {name: ops, token: env:SEC_TOKEN, scopes: [admin]}\n"
    server = serve(config, env={"SEC_TOKEN": TOKEN, "APP_PW": "app-password"}, token=TOKEN)
    client = server.client()
    refused = client.post("/v1/runs", json={"runbook": "p", "params": {"pw": "env:SEC_TOKEN"}})
    assert 400 <= refused.status_code < 500 and "allowed: env:APP_*" in refused.text, refused.text
    started = client.post("/v1/runs", json={"runbook": "p", "params": {"pw": "env:APP_PW"}, "wait": 30})
    assert started.status_code < 300 and started.json()["state"] == "succeeded", started.text
    bad = project.root / "bad.yaml"
    bad.write_text("secret_allow: ['file:relative']\n", encoding="utf-8")
    result = project.run("serve", "--config", str(bad), "--listen", "127.0.0.1:0")
    assert result.code == 2 and "bad.yaml:1" in result.err and "must be absolute" in result.err, result
