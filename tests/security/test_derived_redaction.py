"""Whatever a template derives from a secret is masked everywhere, and counts as a secret for the HTTP guard.

must-show 4: random secrets (letters, digits, ``& < > ' " / + = %``, spaces, backslashes and unicode) pushed
through a list of Jinja filters and string operations; no derived value appears in stdout (human and
``--json``), stderr, ``events --json``, ``status --json``, the SQLite file and its WAL, the PostgreSQL tables,
or the server's log; and a request carrying a derived value to a templated host is refused, nothing sent.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from harness.httpserver import HTTPTestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.secrets import Redactor
from tests.conftest import Project
from tests.security.conftest import TOKEN

OPERATIONS = {
    "upper": "{{ params.pw | upper }}",
    "lower": "{{ params.pw | lower }}",
    "title": "{{ params.pw | title }}",
    "capitalize": "{{ params.pw | capitalize }}",
    "reverse": "{{ params.pw | reverse }}",
    "tojson": "{{ params.pw | tojson }}",
    "to_json": "{{ params.pw | to_json }}",
    "urlencode": "{{ params.pw | urlencode }}",
    "b64encode": "{{ params.pw | b64encode }}",
    "escape": "{{ params.pw | e }}",
    "replace": "{{ params.pw | replace('a', '@') | replace('/', '|') }}",
    "slice": "{{ params.pw[2:] }}",
    "slice-end": "{{ params.pw[:-2] }}",
    "concat": "k:{{ params.pw }}:v",
    "tilde": "{{ 'id=' ~ params.pw ~ '&x=1' }}",
    "join": "{{ params.pw | list | join('.') }}",
    "repeat": "{{ params.pw * 2 }}",
    "format": "{{ '<%s>' | format(params.pw) }}",
    "shquote": "{{ params.pw | shquote }}",
    "dict-json": "{{ {'password': params.pw, 'user': 'app'} | tojson }}",
    "chain": "{{ (params.pw ~ '  ') | trim | upper | reverse | b64encode }}",
}
SPECIAL = [*"&<>'\"/+=% \\", "é", "ü", "中", "€", "😀", "ß"]
SECRETS = st.text(
    alphabet=st.one_of(st.sampled_from(SPECIAL), st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")),
    min_size=8,
    max_size=20,
).filter(lambda s: s.strip() == s)  # file: keeps the value as written; a secret is not padded


def runbook(directory: Path) -> str:
    env = "\n".join(f'        D{i}: "{t}"' for i, t in enumerate(OPERATIONS.values()))
    prints = " ".join(f'"$D{i}"' for i in range(len(OPERATIONS)))
    return f"""
name: derive
params:
  pw: {{type: string, secret: true, allow: ["file:{directory}/*"]}}
steps:
  - id: show
    shell:
      script: 'for v in {prints}; do printf "%s\\n" "$v"; printf "%s\\n" "$v" >&2; done'
      env:
{env}
  - id: fail
    shell:
      script: 'printf "%s\\n" "$D5" "$D8" >&2; exit 3'
      env:
        D5: "{OPERATIONS["tojson"]}"
        D8: "{OPERATIONS["b64encode"]}"
"""


def derived_values(secret: str) -> dict[str, str]:
    """What each operation makes of ``secret``, rendered by the same renderer and filters as a run."""
    from runner.api import Client
    from runner.templating import Renderer

    with Client(paths=[]) as client:
        renderer = Renderer(dict(client.host.template_filters.items()))
    return {name: str(renderer.render(text, {"params": {"pw": secret}})) for name, text in OPERATIONS.items()}


def forms(value: str) -> set[str]:
    """The value as stored text could hold it: literally and JSON-escaped (ASCII-only or not)."""
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def assert_absent(where: str, haystack: str | bytes, derived: dict[str, str]) -> None:
    for name, value in derived.items():
        if len(value.strip()) < 6:
            continue
        for form in forms(value):
            needle: Any = form.encode() if isinstance(haystack, bytes) else form
            at = haystack.find(needle)
            assert at < 0, f"{name} of the secret ({form!r}) leaked into {where}: ...{haystack[max(0, at - 80) : at + 80]!r}..."


def journal_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def run_and_check(project: Project, secret: str, directory: Path, *, store: str | None = None) -> dict[str, str]:
    (directory / "pw").write_text(secret + "\n", encoding="utf-8")
    args = ["--store", store] if store else []
    derived = derived_values(secret)
    as_json = project.run(*args, "run", "derive", "-p", f"pw=file:{directory}/pw", "--json")
    human = project.run(*args, "run", "derive", "-p", f"pw=file:{directory}/pw")
    assert as_json.code == 1 and human.code == 1, (as_json, human)
    view = as_json.json()
    assert view["steps"][0]["state"] == "succeeded" and "***" in view["steps"][0]["output"]["stdout"], view
    events = project.run(*args, "events", view["run_id"], "--json")
    status = project.run(*args, "status", view["run_id"], "--json")
    for where, text in (("run --json stdout", as_json.out), ("run --json stderr", as_json.err), ("run stdout", human.out),
                        ("run stderr", human.err), ("events --json", events.out), ("status --json", status.out)):  # fmt: skip
        assert_absent(where, text, derived)
    if store is None:
        assert_absent("the SQLite journal and its WAL", journal_bytes(project.journal), derived)
    return derived


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(secret=SECRETS)
def test_derived_values_never_leak(project: Project, tmp_path: Path, secret: str) -> None:
    directory = tmp_path / "s"
    directory.mkdir(exist_ok=True)
    project.write("derive.yaml", runbook(directory))
    run_and_check(project, secret, directory)


def test_derived_values_never_leak_into_postgresql(project: Project, tmp_path: Path, pg_dsn: str) -> None:
    import psycopg

    directory = tmp_path / "s"
    directory.mkdir()
    project.write("derive.yaml", runbook(directory))
    secret = "pg&<>'\"/+=%é中-" + "".join(random.choice("abcdefXYZ0123") for _ in range(8))
    derived = run_and_check(project, secret, directory, store=pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        assert tables, "the store created its tables"
        dump = "\n".join(str(row[0]) for t in tables for row in conn.execute(f'SELECT t::text FROM "{t}" t'))
    assert "***" in dump
    assert_absent("the PostgreSQL tables", dump, derived)


def test_derived_values_never_leak_into_the_server_log(project: Project, serve: Any, tmp_path: Path) -> None:
    directory = tmp_path / "s"
    directory.mkdir()
    project.write("derive.yaml", runbook(directory))
    secret = "srv&<>'\"/+=%ü😀" + "".join(random.choice("ghijKLM456") for _ in range(8))
    (directory / "pw").write_text(secret, encoding="utf-8")
    server = serve("tokens:\n  - {name: ops, token: env:SEC_TOKEN, scopes: [admin]}\n", env={"SEC_TOKEN": TOKEN}, token=TOKEN,
                   args=("--log-level", "debug"))  # fmt: skip
    client = server.client()
    started = client.post("/v1/runs", json={"runbook": "derive", "params": {"pw": f"file:{directory}/pw"}, "wait": 30})
    assert started.status_code < 300, started.text
    run_id = started.json()["run_id"]
    server.wait_state(run_id, "failed")
    derived = derived_values(secret)
    for path in (f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/events"):
        assert_absent(f"GET {path}", client.get(path).text, derived)
    assert_absent("the server log", server.log(), derived)
    assert_absent("the journal", journal_bytes(project.journal), derived)


HOSTILE = """
name: call
params:
  base: {type: string}
  pw: {type: string, secret: true, allow: ["file:DIR/*"]}
steps:
  - id: call
    http:
      method: POST
      url: "{{ params.base }}/collect"
      WHERE
"""


@pytest.mark.parametrize(
    "where",
    [
        'headers: {X-Auth: "{{ params.pw | urlencode }}"}',
        'headers: {X-Auth: "{{ params.pw | b64encode }}"}',
        'body: "{{ params.pw | tojson }}"',
        'body: "{{ params.pw | reverse }}"',
        'json: {k: "{{ params.pw | upper }}"}',
        'form: {k: "{{ params.pw[1:] }}"}',
    ],
    ids=["urlencode-header", "b64-header", "tojson-body", "reverse-body", "upper-json", "slice-form"],
)
def test_a_derived_value_is_not_sent_to_a_templated_host(project: Project, tmp_path: Path, http_server: HTTPTestServer,
                                                          where: str) -> None:  # fmt: skip
    directory = tmp_path / "s"
    directory.mkdir()
    (directory / "pw").write_text("Sec&r<e>t/with+all=%chars'\"é\n", encoding="utf-8")
    project.write("call.yaml", HOSTILE.replace("DIR", str(directory)).replace("WHERE", where))
    result = project.run("run", "call", "-p", f"base={http_server.base}", "-p", f"pw=file:{directory}/pw", "--json")
    assert result.code == 1, result
    assert "carries a secret" in result.json()["reason"] and "nothing was sent" in result.json()["reason"], result
    assert http_server.requests_to("/collect") == [], "the request must not leave"


def test_the_redactor_masks_derived_pieces_in_a_unit() -> None:
    """The mechanism without a run: a derived value is registered when its template renders."""
    import os

    from runner.registry import SecretProviderRegistry
    from runner.secrets import SecretResolver, SecretsView
    from runner.templating import Renderer

    os.environ["SEC_UNIT_PW"] = "p&ss/w<o>rd'é+=%x"
    try:
        registry = SecretProviderRegistry()
        registry.add("env", lambda name: os.environ[name])
        redactor = Redactor()
        ctx = {"secrets": SecretsView({"pw": "env:SEC_UNIT_PW"}, SecretResolver(registry, redactor))}
        out = Renderer().render("x={{ secrets.pw | urlencode }}&y=1", ctx)
        assert out.startswith("x=p%26ss/w") and redactor.text(out) == "x=***&y=1"
        assert redactor.text(f"elsewhere: {out[2:-4]}!") == "elsewhere: ***!"
    finally:
        del os.environ["SEC_UNIT_PW"]
