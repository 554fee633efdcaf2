"""``runbook serve`` refuses bad configurations before binding, with located, actionable errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.server.conftest import HELLO


def serve_once(project: Project, config: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    project.write("hello.yaml", HELLO.replace("OUT", str(project.root / "hits.log")))
    path = project.root / "server.yaml"
    path.write_text(textwrap.dedent(config).lstrip())
    res = project.run("serve", "--config", str(path), *args, timeout=60, env=env)
    return res.code, res.err


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("listen: 127.0.0.1:8080\nbogus: 1\n", "server.yaml:2:1 (bogus): unknown key 'bogus'"),
        ("tokens:\n  - {name: a, token: env:X, scopes: [root]}\n", "server.yaml:2:38 (tokens.0.scopes.0): Input should be"),
        ("routes:\n  - name: r\n    runbook: missing\n", "server.yaml:3:14 (routes.0.runbook): no runbook named 'missing'"),
        ("routes:\n  - name: r\n    runbook: hello\n    match: {a: '=~('}\n", "invalid regular expression"),
        ("routes:\n  - name: r\n    runbook: hello\n    params: {who: '{{ alert.labels.x '}\n", "routes.0.params.who"),
        ("sources:\n  grafana: {auth: {hmac_secret: env:X, colour: red}}\n", "server.yaml:2:40 (sources.grafana.auth.colour): unknown key"),
        ("sources:\n  nagios: {}\n", "no alert source named 'nagios'"),
        ("listen: nowhere\n", "expected HOST:PORT"),
        ("tokens:\n  - {name: a, token: env:RB_TEST_UNSET_TOKEN, scopes: [read]}\n", "environment variable RB_TEST_UNSET_TOKEN is not set"),
        ("allowed_hosts: ['http://runbook.internal']\n", "server.yaml:1:16 (allowed_hosts): 'http://runbook.internal' is not a host name"),
        ("allowed_origins: [console.example]\n", "is not an origin like https://ops.example.com"),
        ("limits: {max_waiters: 0}\n", "(limits.max_waiters)"),
        ("notify:\n  channels: {x: {type: nope}}\n", "server.yaml:2:24 (notify.channels.x.type): no notifier 'nope'; known: email,"),
        ("notify:\n  channels: {x: {type: slack, url: env:RB_TEST_UNSET_HOOK}}\n", "(notify.channels.x.url): secret reference"),
        ("notify:\n  rules: [{events: [failed], channels: [pager]}]\n", "server.yaml:2:41 (notify.rules.0.channels.0): rule 1 names"),
    ],
    ids=[
        "unknown-key",
        "bad-scope",
        "unknown-runbook",
        "bad-regex",
        "bad-template",
        "bad-auth-key",
        "unknown-source",
        "bad-listen",
        "unset-secret",
        "host-with-scheme",
        "origin-without-scheme",
        "no-waiters",
        "notify-unknown-notifier",
        "notify-unset-secret",
        "notify-unknown-channel",
    ],
)
def test_invalid_configuration_is_refused_with_its_location(project: Project, config: str, needle: str) -> None:
    code, err = serve_once(project, config)
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err


def test_non_loopback_bind_needs_authentication(project: Project) -> None:
    code, err = serve_once(project, "listen: 0.0.0.0:0\n")
    assert code == 2
    assert "refusing to listen on 0.0.0.0 (not loopback) without authentication" in err
    assert "API tokens" in err and "auth for alert source 'alertmanager'" in err


def test_secrets_never_appear_in_errors(project: Project) -> None:
    code, err = serve_once(
        project, "sources:\n  generic: {auth: {hmac_secret: env:GEN}}\nlisten: 0.0.0.0:0\n", env={"GEN": "sekrit-value-123"}
    )
    assert code == 2 and "sekrit-value-123" not in err


def test_missing_server_extra_says_what_to_install(project: Project, tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "fastapi"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'fastapi'\", name='fastapi')\n")
    res = project.run("serve", env={"PYTHONPATH": str(fake.parent)})
    assert res.code == 2
    assert "pip install 'runbook[server]'" in res.err
