"""Secrets never leave the process unmasked: not on stdout or stderr, not in events, status or the journal file.

Random secrets full of regex metacharacters are given by reference (``env:`` and ``file:``, as declared
``secrets:`` and as ``secret: true`` params) and pushed through every path that could leak them: a shell
step printing them, an HTTP server echoing them back, a failing step whose error quotes them, a template
error that quotes them, and a Python step logging them.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from harness.httpserver import HTTPTestServer

from runner.secrets import MASK, Redactor

METACHARS = ".*+?^$()[]{}|\\" + "'\"&%="
PIECE = 10
MODES = ["secrets-env", "secrets-file", "param-env", "param-file"]

SECRETLIB = """
def log_it(ctx, params, value):
    ctx.log(f"using token {value}")
    return {"seen": value, "nested": [{"k": value}]}


def fail(ctx, params, value):
    raise RuntimeError(f"login refused for token {value}")
"""


def make_secret(rng: random.Random) -> str:
    """Letters and digits shuffled with every regex metacharacter, quotes and URL-special characters (some repeated)."""
    chars = list(secrets.token_urlsafe(12) + METACHARS + "".join(rng.choice(METACHARS) for _ in range(6)))
    rng.shuffle(chars)
    return "".join(chars)


def forms(value: str) -> list[str]:
    """The value as it could be written: literally, JSON-escaped, repr()-quoted, URL-encoded, and those JSON-escaped."""
    base = {value, json.dumps(value)[1:-1], repr(value)[1:-1], quote(value, safe=""), quote_plus(value)}
    return sorted(base | {json.dumps(f)[1:-1] for f in base})


def assert_clean(text: str | bytes, value: str, where: str) -> None:
    """No form of ``value`` in ``text``, not even a 10-character piece of one (a secret cut short still leaks)."""
    for form in forms(value):
        for piece in {form[i : i + PIECE] for i in range(max(1, len(form) - PIECE + 1))}:
            needle: str | bytes = piece.encode() if isinstance(text, bytes) else piece
            at = text.find(needle)  # type: ignore[arg-type]
            assert at < 0, f"the secret leaked into {where} (as {form!r}, piece {piece!r}): ...{text[max(0, at - 200) : at + 60]!r}..."


@dataclass
class Case:
    """One way of handing a secret to a run."""

    mode: str
    secret: str
    expr: str  # the template expression that yields the secret
    args: list[str]  # extra CLI args (params)
    env: dict[str, str]
    declared: str  # the `secrets:` block


def make_case(mode: str, secret: str, tmp_path: Path) -> Case:
    source, kind = mode.split("-")
    env: dict[str, str] = {}
    if kind == "env":
        env["RB_TEST_SECRET"] = secret
        ref = "env:RB_TEST_SECRET"
    else:
        path = tmp_path / "secret.txt"
        path.write_text(secret + "\n", encoding="utf-8")  # file: strips one trailing newline
        ref = f"file:{path}"
    if source == "secrets":
        return Case(mode, secret, "secrets.tok", [], env, f"secrets:\n  tok: {ref}\n")
    return Case(mode, secret, "params.token", ["-p", f"token={ref}"], env, "")


def runbooks(case: Case, echo_url: str) -> dict[str, str]:
    """Three runbooks, each ending in a different way of leaking the secret."""
    allow = json.dumps([case.args[1].partition("=")[2]]) if case.args else "[]"
    params = f"params:\n  token: {{type: string, secret: true, description: API token, allow: {allow}}}\n" if case.args else ""
    head = f"{params}{case.declared}"
    e = "{{ " + case.expr + " }}"
    main = f"""name: main
{head}steps:
  - id: shell-echo
    shell:
      script: 'printf "%s\\n" "$TOKEN"; printf "%s\\n" "$TOKEN" >&2'
      env: {{TOKEN: "{e}"}}
  - id: http-echo
    http: {{method: POST, url: "{echo_url}", auth: {{bearer: "{e}"}}, json: {{note: "{e}"}}}}
  - id: log
    python: {{call: "secretlib:log_it", args: {{value: "{e}"}}}}
  - id: fail
    python: {{call: "secretlib:fail", args: {{value: "{e}"}}}}
"""
    template = f"""name: template
{head}steps:
  - id: bad-template
    shell: [echo, "{{{{ steps[{case.expr}] }}}}"]
"""
    expect = f"""name: expect
{head}steps:
  - id: wrong-token
    http: {{url: "{echo_url}", auth: {{bearer: "{e}"}}}}
    expect: {{json: {{headers.authorization: Bearer nope}}}}
"""
    timeout = f"""name: timeout
{head}steps:
  - id: slow
    shell: [sh, -c, "sleep 10", sh, "--token={e}"]
    timeout: 300ms
"""
    return {"main": main, "template": template, "expect": expect, "timeout": timeout}


@pytest.fixture(params=MODES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    rng = random.Random(f"{request.param}-{secrets.randbits(32)}")
    yield make_case(request.param, make_secret(rng), tmp_path)


def test_secrets_are_masked_everywhere(project: Any, http_server: HTTPTestServer, case: Case, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "secretlib.py").write_text(SECRETLIB, encoding="utf-8")
    env = {**case.env, "PYTHONPATH": str(lib)}
    for name, text in runbooks(case, http_server.url("/echo")).items():
        project.write(f"{name}.yaml", text)
    secret = case.secret
    views: dict[str, dict[str, Any]] = {}
    for name in ("main", "template", "expect", "timeout"):
        as_json = project.run("run", name, *case.args, "--json", env=env)
        human = project.run("run", name, *case.args, env=env)
        assert as_json.code == 1 and human.code == 1, (as_json, human)
        for result in (as_json, human):
            assert_clean(result.out, secret, f"stdout of {result.args}")
            assert_clean(result.err, secret, f"stderr of {result.args}")
        view = views[name] = as_json.json()
        for cmd in (["events", view["run_id"], "--json"], ["status", view["run_id"], "--json"], ["status", view["run_id"]]):
            shown = project.run(*cmd)
            assert shown.code == 0, shown
            assert_clean(shown.out + shown.err, secret, f"output of {cmd}")
        if name != "timeout":  # that one is refused before anything runs: nothing to mask
            assert MASK in project.run("status", view["run_id"], "--json").out

    # the secret really was used: it reached the server, and *** stands where it was
    assert all(r.headers["authorization"] == f"Bearer {secret}" for r in http_server.requests_to("/echo"))
    steps = {s["id"]: s for s in views["main"]["steps"]}
    assert steps["shell-echo"]["output"]["stdout"] == f"{MASK}\n" and steps["shell-echo"]["output"]["stderr"] == f"{MASK}\n"
    echoed = steps["http-echo"]["output"]["json"]
    assert echoed["headers"]["authorization"] == f"Bearer {MASK}" and json.loads(echoed["body"]) == {"note": MASK}
    assert steps["log"]["output"] == {"seen": MASK, "nested": [{"k": MASK}]}
    assert steps["fail"]["state"] == "failed" and f"login refused for token {MASK}" in steps["fail"]["reason"]
    assert f"login refused for token {MASK}" in views["main"]["reason"]
    events = project.run("events", views["main"]["run_id"], "--json").json()["events"]
    assert f"using token {MASK}" in [e["data"].get("message") for e in events if e["type"] == "step.log"]
    bad = views["template"]  # pre-flight renders the template before any step starts, and refuses the run
    assert bad["steps"][0]["state"] == "pending" and f"has no attribute '{MASK}'" in bad["reason"], bad
    wrong = views["expect"]["steps"][0]
    assert wrong["state"] == "failed" and f"Bearer {MASK}" in wrong["reason"]
    slow = views["timeout"]  # pre-flight finds the secret on its command line: never run, so never timed out
    assert slow["steps"][0]["state"] == "pending" and "the command line carries a secret" in slow["reason"], slow

    # and the journal itself, as bytes on disk (the WAL too, before any checkpoint folds it in)
    for path in (project.journal, Path(f"{project.journal}-wal")):
        if path.exists():
            assert_clean(path.read_bytes(), secret, path.name)


def test_a_literal_value_for_a_secret_param_is_refused(project: Any) -> None:
    literal = make_secret(random.Random(7))
    project.write(
        "p.yaml",
        """
        name: p
        params:
          token: {type: string, secret: true}
        steps:
          - id: s
            shell: ["true"]
    """,
    )
    for args in (["--json"], []):
        result = project.run("run", "p", "-p", f"token={literal}", *args)
        assert result.code == 2, result
        assert "never the value itself" in result.out + result.err
        assert_clean(result.out + result.err, literal, "the refusal")
    assert project.run("runs", "--json").json()["runs"] == []


def test_a_literal_that_looks_like_a_reference_is_refused_before_anything_is_stored(project: Any) -> None:
    literal = "hunter2:" + secrets.token_urlsafe(9)
    project.write(
        "p.yaml",
        """
        name: p
        params:
          token: {type: string, secret: true}
        steps:
          - id: s
            shell: ["true"]
    """,
    )
    result = project.run("run", "p", "-p", f"token={literal}", "--json")
    assert result.code == 2, result
    assert_clean(result.out + result.err, literal, "the refusal")
    assert project.run("runs", "--json").json()["runs"] == []
    if project.journal.exists():
        assert_clean(project.journal.read_bytes(), literal, "the journal")


@pytest.mark.parametrize("value", ["ab", "x", ""], ids=["two", "one", "empty"])
def test_secrets_shorter_than_three_characters_are_refused(project: Any, value: str) -> None:
    project.write(
        "s.yaml",
        """
        name: s
        secrets:
          tok: env:RB_SHORT
        steps:
          - id: s
            shell: [echo, "{{ secrets.tok }}"]
    """,
    )
    result = project.run("run", "s", "--json", env={"RB_SHORT": value})
    assert result.code == 1, result
    assert "shorter than 3 characters; refusing to use it" in result.json()["reason"], "the run fails at start, naming why"
    assert result.json()["steps"][0]["state"] == "pending", "before any step started"


def test_redactor_masks_every_form_longest_first() -> None:
    import shlex

    value = make_secret(random.Random(3))
    redactor = Redactor([value, value[:5]])
    text = f"a {value} b {json.dumps(value)} c {value!r} d {value[:5]} e {quote_plus(value)} f {shlex.join(['--t=' + value])}"
    masked = redactor.text(text)
    assert_clean(masked, value, "the masked text")
    assert masked.startswith(f'a {MASK} b "{MASK}" c ')
    assert masked.endswith(f"d {MASK} e {MASK} f '--t={MASK}'")
    assert redactor.value({value: [value, {"k": f"x{value}y"}], "n": 1}) == {MASK: [MASK, {"k": f"x{MASK}y"}], "n": 1}
