"""The ``http`` step type and probe, against a real HTTP server on 127.0.0.1, through the real CLI."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from harness.httpserver import HTTPTestServer, Reply

REPO = Path(__file__).resolve().parents[2]

TOKEN = "tok-Q9v.x7*Lm"


def run(project: Any, name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[Any, dict[str, Any]]:
    """``runbook run NAME --json``: (result, the run view); ``TOK`` (the secret of :func:`one_step`) is set."""
    result = project.run("run", name, *args, "--json", env={"TOK": TOKEN, **(env or {})}, timeout=timeout)
    return result, result.json()


def step(view: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in view["steps"] if s["id"] == step_id)


def refused(view: dict[str, Any], step_id: str) -> str:
    """Why ``step_id``'s request was refused: pre-flight refuses it before the run's first step (the run's reason names the
    step), a refusal only the sent request shows fails the step itself."""
    if step(view, step_id)["state"] == "pending":
        assert view["reason"].startswith("pre-flight found"), view["reason"]
        assert f"step '{step_id}': " in view["reason"], view["reason"]
        return str(view["reason"])
    return str(step(view, step_id)["reason"])


def events(project: Any, run_id: str) -> list[dict[str, Any]]:
    result = project.run("events", run_id, "--json")
    assert result.code == 0, result
    return list(result.json()["events"])


def one_step(project: Any, http: str, *, extra: str = "", name: str = "h") -> None:
    """A runbook ``name`` with one http step ``s`` (``http`` is the YAML flow mapping of its config)."""
    project.write(f"{name}.yaml", f"name: {name}\nsecrets:\n  tok: env:TOK\nsteps:\n  - id: s\n    http: {http}\n{extra}")


# ---------------------------------------------------------------------- expectations


def test_status_json_body_and_header_expectations_hold(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/node", Reply(200, json={"state": "active", "pools": [{"name": "web"}]}, headers={"X-Lb": "lb-7 primary"}))
    url = http_server.url("/node")
    project.write(
        "x.yaml",
        f"""
        name: x
        steps:
          - id: node
            http: {{url: "{url}"}}
            expect:
              status: 200
              json: {{state: active, "pools[0].name": web}}
              body: {{contains: '"active"', matches: 'pools.*web'}}
              header: {{x-lb: primary}}
          - id: shorthand
            http: "{url}"
    """,
    )
    result, view = run(project, "x")
    assert result.code == 0, result
    out = step(view, "node")["output"]
    assert out["status"] == 200 and out["json"]["state"] == "active" and out["truncated"] is False
    assert step(view, "node")["reason"] == "HTTP 200"
    assert [r.method for r in http_server.requests_to("/node")] == ["GET", "GET"]


@pytest.mark.parametrize(
    ("expect", "reason"),
    [
        ("{status: 201}", "status 200, expected 201"),
        ("{json: {state: drained}}", "json state is 'active', expected 'drained'"),
        ("{body: {contains: nope}}", "body does not contain 'nope'"),
        ("{header: {x-lb: secondary}}", "header x-lb is 'lb-7 primary', expected it to contain 'secondary'"),
    ],
    ids=["status", "json", "body", "header"],
)
def test_a_failed_expectation_fails_the_step_and_says_why(project: Any, http_server: HTTPTestServer, expect: str, reason: str) -> None:
    http_server.route("/node", Reply(200, json={"state": "active"}, headers={"X-Lb": "lb-7 primary"}))
    one_step(project, f'{{url: "{http_server.url("/node")}"}}', extra=f"    expect: {expect}\n")
    result, view = run(project, "h")
    assert result.code == 1, result
    assert step(view, "s")["state"] == "failed"
    assert reason in step(view, "s")["reason"]


def test_default_expectation_is_2xx(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/gone", Reply(410, body="gone"))
    one_step(project, f'{{url: "{http_server.url("/gone")}"}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "status 410, expected 2xx" in step(view, "s")["reason"]


# ---------------------------------------------------------------------- redirects


def test_redirects_are_not_followed_by_default(project: Any, http_server: HTTPTestServer) -> None:
    http_server.redirect("/old", "/new")
    http_server.route("/new", Reply(200, body="new place"))
    one_step(project, f'{{url: "{http_server.url("/old")}"}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "status 302, expected 2xx" in step(view, "s")["reason"]
    assert http_server.requests_to("/new") == []


def test_redirects_are_followed_when_asked(project: Any, http_server: HTTPTestServer) -> None:
    http_server.redirect("/old", "/new", status=301)
    http_server.route("/new", Reply(200, body="new place"))
    one_step(project, f'{{url: "{http_server.url("/old")}", follow_redirects: true}}', extra="    expect: {body: {contains: new place}}\n")
    result, _ = run(project, "h")
    assert result.code == 0, result
    assert len(http_server.requests_to("/old")) == 1 and len(http_server.requests_to("/new")) == 1


def test_a_redirect_to_another_origin_carries_none_of_the_steps_headers(
    project: Any, http_server: HTTPTestServer, other_http_server: HTTPTestServer
) -> None:
    http_server.redirect("/hop", other_http_server.url("/echo"))
    headers = '{X-Api-Key: "{{ secrets.tok }}", X-Trace: plain}'
    one_step(
        project,
        f'{{url: "{http_server.url("/hop")}", follow_redirects: true, headers: {headers}, auth: {{bearer: "{{{{ secrets.tok }}}}"}}}}',
    )
    result, view = run(project, "h")
    assert result.code == 0, result
    (got,) = other_http_server.requests_to("/echo")
    assert not {"authorization", "x-api-key", "x-trace"} & set(got.headers), got.headers
    (first,) = http_server.requests_to("/hop")
    assert first.headers["x-api-key"] == TOKEN and first.headers["authorization"] == f"Bearer {TOKEN}"
    assert step(view, "s")["output"]["json"]["path"] == "/echo"


def test_another_host_name_on_the_same_port_is_another_origin(project: Any, http_server: HTTPTestServer) -> None:
    http_server.redirect("/hop", f"http://localhost:{http_server.port}/echo")
    one_step(project, f'{{url: "{http_server.url("/hop")}", follow_redirects: true, headers: {{X-Api-Key: "{{{{ secrets.tok }}}}"}}}}')
    result, _ = run(project, "h")
    assert result.code == 0, result
    (got,) = http_server.requests_to("/echo")
    assert "x-api-key" not in got.headers and got.headers["host"] == f"localhost:{http_server.port}"


def test_a_same_origin_redirect_keeps_the_steps_headers(project: Any, http_server: HTTPTestServer) -> None:
    http_server.redirect("/hop", "/hop2")
    http_server.redirect("/hop2", "/echo", status=308)
    one_step(project, f'{{url: "{http_server.url("/hop")}", follow_redirects: true, headers: {{X-Api-Key: "{{{{ secrets.tok }}}}"}}, '
             'auth: {bearer: "{{ secrets.tok }}"}}')  # fmt: skip
    result, _ = run(project, "h")
    assert result.code == 0, result
    (got,) = http_server.requests_to("/echo")
    assert got.headers["x-api-key"] == TOKEN and got.headers["authorization"] == f"Bearer {TOKEN}"


def test_a_307_to_another_origin_never_resends_a_body_holding_a_secret(
    project: Any, http_server: HTTPTestServer, other_http_server: HTTPTestServer
) -> None:
    http_server.redirect("/hop", other_http_server.url("/echo"), status=307)
    one_step(project, f'{{method: POST, url: "{http_server.url("/hop")}", follow_redirects: true, json: {{key: "{{{{ secrets.tok }}}}"}}}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "redirects to another origin" in step(view, "s")["reason"] and "holds a secret; not following it" in step(view, "s")["reason"]
    assert other_http_server.requests == []
    assert TOKEN not in result.out + result.err


def test_a_307_to_another_origin_resends_a_plain_body_without_the_steps_headers(
    project: Any, http_server: HTTPTestServer, other_http_server: HTTPTestServer
) -> None:
    http_server.redirect("/hop", other_http_server.url("/echo"), status=307)
    one_step(project, f'{{method: POST, url: "{http_server.url("/hop")}", follow_redirects: true, json: {{weight: 0}}, '
             'headers: {X-Api-Key: "{{ secrets.tok }}"}}')  # fmt: skip
    result, _ = run(project, "h")
    assert result.code == 0, result
    (got,) = other_http_server.requests_to("/echo")
    assert (got.method, got.json(), got.headers["content-type"]) == ("POST", {"weight": 0}, "application/json")
    assert "x-api-key" not in got.headers


def test_a_302_after_a_post_turns_into_a_get_without_the_body(project: Any, http_server: HTTPTestServer) -> None:
    http_server.redirect("/hop", "/echo")
    one_step(project, f'{{method: POST, url: "{http_server.url("/hop")}", follow_redirects: true, json: {{weight: 0}}}}')
    result, _ = run(project, "h")
    assert result.code == 0, result
    (got,) = http_server.requests_to("/echo")
    assert (got.method, got.body) == ("GET", b"") and "content-type" not in got.headers


def test_a_redirect_loop_stops(project: Any, http_server: HTTPTestServer) -> None:
    http_server.redirect("/loop", "/loop")
    one_step(project, f'{{url: "{http_server.url("/loop")}", follow_redirects: true}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "more than 10 redirects" in step(view, "s")["reason"]
    assert len(http_server.requests_to("/loop")) == 11


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://lb.internal/x", "https://LB.internal:443/y?z", True),
        ("http://lb.internal/x", "http://lb.internal:80/", True),
        ("https://lb.internal/x", "http://lb.internal/x", False),  # a downgrade
        ("http://127.0.0.1:8080/", "http://localhost:8080/", False),
        ("https://lb.internal/", "https://lb.internal:8443/", False),
    ],
)
def test_origin_comparison(a: str, b: str, same: bool) -> None:
    from runbook_http.redirects import same_origin

    assert same_origin(a, b) is same


# ---------------------------------------------------------------------- time and size bounds


def test_a_slow_server_times_out_with_a_clear_error(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/slow", Reply(200, delay=60))
    url = http_server.url("/slow")
    one_step(project, f'{{url: "{url}", timeout: 0.5}}')
    result, view = run(project, "h", timeout=30)  # the server would answer after 60 s: only the step timeout ends this
    assert result.code == 1, result
    assert f"GET {url}: timed out after 0.5s waiting for the response" in step(view, "s")["reason"]


def test_connect_and_read_timeouts_can_differ(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/slow", Reply(200, delay=60))
    one_step(project, f'{{url: "{http_server.url("/slow")}", timeout: {{connect: 2s, read: 300ms}}}}')
    result, view = run(project, "h", timeout=30)
    assert result.code == 1, result
    assert "timed out after 0.3s waiting for the response" in step(view, "s")["reason"]


def test_the_step_timeout_bounds_the_request_too(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/slow", Reply(200, delay=60))
    one_step(project, f'{{url: "{http_server.url("/slow")}", timeout: 50}}', extra="    timeout: 1s\n")
    result, view = run(project, "h", timeout=30)
    assert result.code == 1, result
    assert "timed out waiting for the response: the step's timeout of 1s ran out" in step(view, "s")["reason"]


def test_a_large_body_is_truncated_at_the_cap(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/big", Reply(200, size=5 * 1024 * 1024))
    one_step(project, f'{{url: "{http_server.url("/big")}", max_response_bytes: 4096}}')
    result, view = run(project, "h")
    assert result.code == 0, result
    out = step(view, "s")["output"]
    assert out["truncated"] is True
    assert step(view, "s")["sizes"]["body"] == 4096 and out["body"].endswith("x" * 2000), "the view shows the tail"
    body = project.run("logs", view["run_id"], "s", "--stream", "body", "--json").json()["lines"]
    assert [line["line"] for line in body] == ["x" * 4096], "logs give the body, complete up to the cap"


def test_reading_a_large_body_keeps_memory_bounded(http_server: HTTPTestServer) -> None:
    """In-process (to measure allocations): a 5 MiB body under the default 1 MiB cap never sits in memory whole."""
    from runner.plugin import PluginHost
    from runner.steptypes import ActionResult

    http_server.route("/big", Reply(200, size=5 * 1024 * 1024))
    step_type = PluginHost().step_types.get("http")
    config = step_type.Config.model_validate({"url": http_server.url("/big")}, context={"rendered": True})
    step_type.execute(config, _ctx())  # warm up: imports and first-use allocations are not the body
    tracemalloc.start()
    try:
        result = step_type.execute(config, _ctx())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(result, ActionResult)
    assert result.truncated is True and len(result.body or "") == 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while reading a 5 MiB body with a 1 MiB cap"


def _ctx(**kw: Any) -> Any:
    """A real Context with a journal that just collects log lines."""
    from pydantic import BaseModel

    from runner.context import Context
    from runner.secrets import Redactor, SecretsView
    from runner.settings import Settings

    class Services:
        logged: list[str] = []

        def journal(self, ctx: Any, kind: str, data: dict[str, Any]) -> None:
            self.logged.append(data["message"])

    class NoParams(BaseModel):
        pass

    return Context(run_id="r", runbook="t", step_id="s", attempt=1, params=NoParams(), param_values={}, outputs={},
                   settings=Settings(), secrets=SecretsView({}, None), redactor=kw.pop("redactor", Redactor()),  # type: ignore[arg-type]
                   services=Services(), started_by="test", timeout=kw.pop("timeout", 30.0))  # type: ignore[arg-type]  # fmt: skip


# ---------------------------------------------------------------------- host allow-lists


def test_a_host_outside_allowed_hosts_is_refused_before_sending(project: Any, http_server: HTTPTestServer) -> None:
    one_step(project, f'{{url: "{http_server.url("/echo")}", allowed_hosts: [lb.example.com, "*.internal"]}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    reason = refused(view, "s")
    assert "host '127.0.0.1' is not allowed by the step's allowed_hosts (lb.example.com, *.internal)" in reason
    assert http_server.requests == []


def test_allowed_hosts_match_host_and_port(project: Any, http_server: HTTPTestServer) -> None:
    one_step(project, f'{{url: "{http_server.url("/echo")}", allowed_hosts: ["127.0.0.1:{http_server.port}"]}}')
    result, _ = run(project, "h")
    assert result.code == 0, result
    one_step(project, f'{{url: "{http_server.url("/echo")}", allowed_hosts: ["127.0.0.1:1"]}}')
    result, _ = run(project, "h")
    assert result.code == 1, result
    assert len(http_server.requests) == 1


def test_the_global_allow_list_applies_to_every_http_step(project: Any, http_server: HTTPTestServer) -> None:
    one_step(project, f'{{url: "{http_server.url("/echo")}"}}')
    result, view = run(project, "h", env={"RUNBOOK_HTTP_ALLOWED_HOSTS": "lb.example.com, localhost"})
    assert result.code == 1, result
    assert "host '127.0.0.1' is not allowed by RUNBOOK_HTTP_ALLOWED_HOSTS" in refused(view, "s")
    assert http_server.requests == []
    result, _ = run(project, "h", env={"RUNBOOK_HTTP_ALLOWED_HOSTS": "lb.example.com,127.0.0.1"})
    assert result.code == 0, result


def test_a_redirect_to_a_host_outside_the_allow_list_is_not_followed(project: Any, http_server: HTTPTestServer) -> None:
    http_server.redirect("/hop", f"http://localhost:{http_server.port}/echo")
    one_step(project, f'{{url: "{http_server.url("/hop")}", follow_redirects: true, allowed_hosts: [127.0.0.1]}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "host 'localhost' is not allowed" in step(view, "s")["reason"]
    assert [r.path for r in http_server.requests] == ["/hop"]


# ---------------------------------------------------------------------- secrets and templated hosts


def templated(project: Any, url: str, config: str, *, name: str = "t") -> None:
    """A runbook ``name`` with params ``base``, ``host`` and ``port`` and one http step ``s`` to ``url``."""
    project.write(
        f"{name}.yaml",
        f"""
        name: {name}
        params:
          base: {{type: string, default: ""}}
          host: {{type: string, default: ""}}
          port: {{type: integer, default: 0}}
        secrets:
          tok: env:TOK
        steps:
          - id: s
            http: {{url: "{url}", {config}}}
    """,
    )


def params_for(server: HTTPTestServer) -> list[str]:
    return ["-p", f"base={server.base}", "-p", "host=127.0.0.1", "-p", f"port={server.port}"]


@pytest.mark.parametrize(
    "config",
    [
        'headers: {X-Api-Key: "{{ secrets.tok }}"}',
        'auth: {bearer: "{{ secrets.tok }}"}',
        'auth: {basic: {username: ops, password: "{{ secrets.tok }}"}}',
        'method: POST, json: {key: "{{ secrets.tok }}"}',
        'method: POST, form: {key: "{{ secrets.tok }}"}',
        'method: POST, body: "key={{ secrets.tok }}"',
    ],
    ids=["header", "bearer", "basic", "json", "form", "body"],
)
def test_a_secret_is_not_sent_to_a_host_chosen_by_a_param(project: Any, http_server: HTTPTestServer, config: str) -> None:
    templated(project, "{{ params.base }}/echo", config)
    result, view = run(project, "t", *params_for(http_server))
    assert result.code == 1, result
    reason = refused(view, "s")
    assert f"POST {http_server.url('/echo')}" in reason or f"GET {http_server.url('/echo')}" in reason
    assert "the request carries a secret and its host '127.0.0.1' comes from a template; refusing to send it" in reason
    assert "`allowed_hosts: [127.0.0.1]`" in reason and "RUNBOOK_HTTP_ALLOWED_HOSTS=127.0.0.1" in reason
    assert http_server.requests == []
    assert TOKEN not in result.out + result.err


@pytest.mark.parametrize(
    "url",
    [
        "http://{{ params.host }}:{port}/echo",
        "http://127.0.0.1:{{{{ params.port }}}}/echo",
        "http://127.0.0.1{% if true %}:{port}{% endif %}/",
    ],
    ids=["host", "port", "statement"],
)
def test_any_template_before_the_path_makes_the_host_templated(project: Any, http_server: HTTPTestServer, url: str) -> None:
    url = url.replace("{port}", str(http_server.port)).replace("{{{{", "{{").replace("}}}}", "}}")
    templated(project, url, 'headers: {X-Api-Key: "{{ secrets.tok }}"}')
    result, view = run(project, "t", *params_for(http_server))
    assert result.code == 1, result
    assert "comes from a template" in refused(view, "s")
    assert http_server.requests == []


def test_a_templated_host_in_a_check_is_refused_too(project: Any, http_server: HTTPTestServer) -> None:
    project.write(
        "c.yaml",
        f"""
        name: c
        params:
          base: {{type: string}}
        secrets:
          tok: env:TOK
        steps:
          - id: s
            check:
              - http: {{url: "{{{{ params.base }}}}/state", auth: {{bearer: "{{{{ secrets.tok }}}}"}}}}
            http: {{url: "{http_server.url("/echo")}"}}
    """,
    )
    result, view = run(project, "c", "-p", f"base={http_server.base}")
    assert result.code == 0, result  # the check did not hold, so the (harmless) action ran
    assert [r.path for r in http_server.requests] == ["/echo"]
    evidence = json.dumps(events(project, view["run_id"]))
    assert "comes from a template" in evidence


@pytest.mark.parametrize(
    ("config", "env"),
    [
        ('allowed_hosts: ["127.0.0.1"]', {}),
        ("allowed_hosts: [lb.internal, 127.0.0.1]", {}),
        ("", {"RUNBOOK_HTTP_ALLOWED_HOSTS": "lb.internal,127.0.0.1"}),
    ],
    ids=["step", "step-list", "operator"],
)
def test_an_allow_list_pins_a_templated_host(project: Any, http_server: HTTPTestServer, config: str, env: dict[str, str]) -> None:
    templated(project, "{{ params.base }}/echo", f'headers: {{X-Api-Key: "{{{{ secrets.tok }}}}"}}, {config}'.rstrip(", "))
    result, _ = run(project, "t", *params_for(http_server), env=env)
    assert result.code == 0, result
    assert http_server.requests_to("/echo")[0].headers["x-api-key"] == TOKEN


def test_a_templated_allow_list_does_not_pin_anything(project: Any, http_server: HTTPTestServer) -> None:
    templated(project, "{{ params.base }}/echo", 'headers: {X-Api-Key: "{{ secrets.tok }}"}, allowed_hosts: ["{{ params.host }}"]')
    result, view = run(project, "t", *params_for(http_server))
    assert result.code == 1, result
    assert "comes from a template" in refused(view, "s")
    assert http_server.requests == []


def test_a_literal_host_may_receive_a_secret(project: Any, http_server: HTTPTestServer) -> None:
    templated(
        project, f"{http_server.base}/{{{{ params.host }}}}/echo", 'auth: {bearer: "{{ secrets.tok }}"}, query: {port: "{{ params.port }}"}'
    )
    http_server.route("/127.0.0.1/echo", Reply(200, body="ok"))
    result, _ = run(project, "t", *params_for(http_server))
    assert result.code == 0, result
    assert http_server.requests_to("/127.0.0.1/echo")[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_templated_host_without_a_secret_is_allowed(project: Any, http_server: HTTPTestServer) -> None:
    templated(project, "{{ params.base }}/echo", 'method: POST, headers: {X-Run: "{{ run.id }}"}, json: {weight: 0}')
    result, _ = run(project, "t", *params_for(http_server))
    assert result.code == 0, result
    assert http_server.requests_to("/echo")[0].json() == {"weight": 0}


@pytest.mark.parametrize(
    ("url", "templated_origin"),
    [
        ("https://lb.internal/pools/{{ params.pool }}", False),
        ("https://lb.internal?x={{ params.x }}", False),
        ("https://lb.internal", False),
        ("{{ params.lb_url }}/pools", True),
        ("https://{{ params.host }}/x", True),
        ("https://lb.internal:{{ params.port }}/x", True),
        ("https://lb.internal{{ params.suffix }}/x", True),
        ("https://user:{{ secrets.pw }}@lb.internal/x", True),
        ("https://lb.internal\\{{ params.x }}/y", True),  # a backslash does not end the authority
        ("https:///{{ params.x }}", True),
        ("{% if params.x %}https://a{% endif %}https://lb.internal/", True),
    ],
)
def test_templated_origin(url: str, templated_origin: bool) -> None:
    from runbook_http.guards import templated_origin as check

    assert check(url) is templated_origin


def test_the_drain_node_example_cannot_be_pointed_at_another_host(project: Any, http_server: HTTPTestServer) -> None:
    (project.runbooks / "drain-node.yaml").write_text((REPO / "runbooks" / "drain-node.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for lb_url in (
        http_server.base,
        "https://lb.internal.evil.example",
        "https://evil.example/lb.internal",
        "https://lb.internal@evil.example",
    ):
        result = project.run("run", "drain-node", "-p", f"lb_url={lb_url}", "-p", "pool=web", "-p", "node=web-1", "--json",
                             env={"LB_API_TOKEN": TOKEN})  # fmt: skip
        assert result.code == 2, result
        assert "lb_url" in result.err, result
    assert http_server.requests == []


# ---------------------------------------------------------------------- retries


def test_retry_on_retries_a_503_inside_one_attempt(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/flaky", Reply(503), Reply(502), Reply(200, json={"ok": True}))
    one_step(project, f'{{url: "{http_server.url("/flaky")}", retry_on: {{attempts: 3, delay: 10ms, backoff: 2}}}}')
    result, view = run(project, "h")
    assert result.code == 0, result
    assert step(view, "s")["attempts"] == 1
    assert len(http_server.requests_to("/flaky")) == 3
    logs = [e["data"]["message"] for e in events(project, view["run_id"]) if e["type"] == "step.log"]
    assert any("HTTP 503" in m and "retry 1 of 2" in m for m in logs), logs


def test_without_retry_on_a_503_fails_at_once(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/flaky", Reply(503), Reply(200))
    one_step(project, f'{{url: "{http_server.url("/flaky")}"}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "status 503, expected 2xx" in step(view, "s")["reason"]
    assert len(http_server.requests_to("/flaky")) == 1


def test_retries_give_up_after_the_last_attempt(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/down", Reply(503))
    one_step(project, f'{{url: "{http_server.url("/down")}", retry_on: {{attempts: 2, delay: 10ms}}}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "status 503" in step(view, "s")["reason"]
    assert len(http_server.requests_to("/down")) == 2


def test_retry_after_is_honoured(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/busy", Reply(429, headers={"Retry-After": "1"}), Reply(200))
    one_step(project, f'{{url: "{http_server.url("/busy")}", retry_on: {{attempts: 2, delay: 10ms}}}}')
    result, _ = run(project, "h")
    assert result.code == 0, result
    first, second = http_server.requests_to("/busy")
    assert second.at - first.at >= 0.9  # the server asked for 1 s; the configured 10 ms delay was not used


def test_retry_after_is_capped_by_max_delay(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/busy", Reply(503, headers={"Retry-After": "3600"}), Reply(200))
    one_step(project, f'{{url: "{http_server.url("/busy")}", retry_on: {{attempts: 2, delay: 10ms, max_delay: 100ms}}}}')
    result, _ = run(project, "h", timeout=30)  # an uncapped Retry-After would sleep an hour
    assert result.code == 0, result
    assert len(http_server.requests_to("/busy")) == 2


def test_connection_errors_are_retried_and_then_reported(project: Any) -> None:
    from harness.procs import free_port

    url = f"http://127.0.0.1:{free_port()}/x"
    one_step(project, f'{{url: "{url}", retry_on: {{attempts: 2, delay: 10ms}}}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert f"GET {url}: cannot connect" in step(view, "s")["reason"]
    logs = [e["data"]["message"] for e in events(project, view["run_id"]) if e["type"] == "step.log"]
    assert any("ConnectError" in m for m in logs), logs


# ---------------------------------------------------------------------- request bodies and auth


def test_post_json_and_form_bodies(project: Any, http_server: HTTPTestServer) -> None:
    echo = http_server.url("/echo")
    project.write(
        "x.yaml",
        f"""
        name: x
        params:
          node: {{type: string}}
        steps:
          - id: j
            http: {{method: POST, url: "{echo}", json: {{node: "{{{{ params.node }}}}", weight: 0}}, query: {{dry: true, tag: [a, b]}}}}
          - id: f
            http: {{method: put, url: "{echo}", form: {{node: "{{{{ params.node }}}}", state: drain}}}}
          - id: t
            http: {{method: PATCH, url: "{echo}", body: "plain text", headers: {{Content-Type: text/x-custom}}}}
    """,
    )
    result, view = run(project, "x", "-p", "node=web-1; rm -rf /")
    assert result.code == 0, result
    j, f, t = http_server.requests_to("/echo")
    assert (j.method, j.json(), j.headers["content-type"]) == ("POST", {"node": "web-1; rm -rf /", "weight": 0}, "application/json")
    assert j.query == {"dry": ["true"], "tag": ["a", "b"]}
    assert (f.method, f.text(), f.headers["content-type"]) == (
        "PUT",
        "node=web-1%3B+rm+-rf+%2F&state=drain",
        "application/x-www-form-urlencoded",
    )
    assert (t.method, t.text(), t.headers["content-type"]) == ("PATCH", "plain text", "text/x-custom")
    assert step(view, "j")["output"]["json"]["method"] == "POST"


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ('{bearer: "{{ secrets.tok }}"}', f"Bearer {TOKEN}"),
        ('{basic: {username: ops, password: "{{ secrets.tok }}"}}', "Basic b3BzOnRvay1ROXYueDcqTG0="),
    ],
    ids=["bearer", "basic"],
)
def test_auth_from_secrets_reaches_the_server_but_not_the_journal(
    project: Any, http_server: HTTPTestServer, auth: str, header: str
) -> None:
    one_step(project, f'{{url: "{http_server.url("/echo")}", auth: {auth}}}')
    result, view = run(project, "h", env={"TOK": TOKEN})
    assert result.code == 0, result
    assert http_server.requests_to("/echo")[0].headers["authorization"] == header
    echoed = step(view, "s")["output"]["json"]["headers"]["authorization"]
    assert echoed.split()[1] == "***"
    secret_part = header.split()[1]
    assert secret_part not in result.out
    assert secret_part not in project.run("events", view["run_id"], "--json").out
    assert secret_part.encode() not in project.journal.read_bytes()


def test_auth_and_an_authorization_header_together_are_refused(project: Any, http_server: HTTPTestServer) -> None:
    one_step(project, f'{{url: "{http_server.url("/echo")}", auth: {{bearer: x-token}}, headers: {{Authorization: other}}}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert "give `auth` or an Authorization header, not both" in step(view, "s")["reason"]
    assert http_server.requests == []


def test_a_secret_in_the_url_is_refused(project: Any, http_server: HTTPTestServer) -> None:
    one_step(project, f'{{url: "{http_server.url("/echo")}", query: {{token: "{{{{ secrets.tok }}}}"}}}}')
    result, view = run(project, "h", env={"TOK": TOKEN})
    assert result.code == 1, result
    reason = refused(view, "s")
    assert "the URL contains a secret value" in reason and "pass the secret in a header" in reason
    assert "token=***" in reason
    assert TOKEN not in result.out + result.err
    assert http_server.requests == []


# ---------------------------------------------------------------------- environment, TLS


def test_proxies_from_the_environment_are_ignored(project: Any, http_server: HTTPTestServer) -> None:
    from harness.procs import free_port

    bogus = f"http://127.0.0.1:{free_port()}"  # nothing listens there: going through it would fail
    one_step(project, f'{{url: "{http_server.url("/echo")}"}}')
    env = {"HTTP_PROXY": bogus, "HTTPS_PROXY": bogus, "ALL_PROXY": bogus, "http_proxy": bogus, "all_proxy": bogus, "NO_PROXY": ""}
    result, _ = run(project, "h", env=env)
    assert result.code == 0, result
    assert len(http_server.requests_to("/echo")) == 1


def test_tls_verification_and_ca_bundle(project: Any, https_server: tuple[HTTPTestServer, Path]) -> None:
    server, cert = https_server
    url = server.url("/echo")
    project.write(
        "x.yaml",
        f"""
        name: x
        steps:
          - id: trusted
            http: {{url: "{url}", ca_bundle: "{cert}"}}
          - id: unverified
            http: {{url: "{url}", verify_tls: false}}
          - id: default
            http: {{url: "{url}"}}
    """,
    )
    result, view = run(project, "x")
    assert result.code == 1, result
    assert [step(view, s)["state"] for s in ("trusted", "unverified", "default")] == ["succeeded", "succeeded", "failed"]
    assert f"GET {url}: cannot connect" in step(view, "default")["reason"]
    assert "ca_bundle" in step(view, "default")["reason"]


def test_connection_refused_names_method_and_url(project: Any) -> None:
    from harness.procs import free_port

    url = f"http://127.0.0.1:{free_port()}/drain"
    one_step(project, f'{{method: POST, url: "{url}"}}')
    result, view = run(project, "h")
    assert result.code == 1, result
    assert f"POST {url}: cannot connect" in step(view, "s")["reason"]


# ---------------------------------------------------------------------- as a probe


def test_http_as_check_skips_the_action_when_already_done(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/node", Reply(200, json={"state": "drained"}))
    node = http_server.url("/node")
    project.write(
        "x.yaml",
        f"""
        name: x
        steps:
          - id: drain
            check:
              - http: {{url: "{node}"}}
                expect: {{json: {{state: drained}}}}
            http: {{method: POST, url: "{http_server.url("/drain")}"}}
    """,
    )
    result, view = run(project, "x")
    assert result.code == 0, result
    assert step(view, "drain")["state"] == "satisfied"
    assert http_server.requests_to("/drain") == []
    plan = project.run("plan", "x", "--json")
    assert plan.code == 0 and plan.json()["steps"][0]["verdict"] == "already-satisfied", plan


def test_http_as_verify_polls_until_the_server_is_healthy(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/health", Reply(503), Reply(503), Reply(200, json={"healthy": True}))
    http_server.route("/undrain", Reply(204))
    project.write(
        "x.yaml",
        f"""
        name: x
        steps:
          - id: undrain
            http: {{method: POST, url: "{http_server.url("/undrain")}"}}
            verify:
              within: 20s
              every: 100ms
              checks:
                - http: "{http_server.url("/health")}"
                  expect: {{json: {{healthy: true}}}}
    """,
    )
    result, view = run(project, "x")
    assert result.code == 0, result
    assert step(view, "undrain")["reason"] == "verified after 3 polls"
    assert len(http_server.requests_to("/health")) == 3


def test_ctx_http_from_a_python_step(project: Any, http_server: HTTPTestServer, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "lbtool.py").write_text(
        "def weight(ctx, params, url):\n"
        "    r = ctx.http('POST', url, json={'weight': 0}, headers={'X-Who': ctx.run_id}, timeout=5)\n"
        "    return {'status': r.status, 'echoed': r.json['body']}\n",
        encoding="utf-8",
    )
    project.write(
        "x.yaml",
        f"""
        name: x
        steps:
          - id: w
            python: {{call: "lbtool:weight", args: {{url: "{http_server.url("/echo")}"}}}}
    """,
    )
    result, view = run(project, "x", env={"PYTHONPATH": str(lib)})
    assert result.code == 0, result
    assert step(view, "w")["output"] == {"status": 200, "echoed": '{"weight":0}'}
    assert http_server.requests_to("/echo")[0].headers["x-who"] == view["run_id"]


# ---------------------------------------------------------------------- validation and display


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ('{url: "ftp://example.com/x"}', "expected a URL starting with http:// or https://"),
        ('{url: "http://"}', "expected a URL with a host name"),
        ('{url: "http://x", json: {a: 1}, form: {b: c}}', "give at most one request body"),
        ('{url: "http://x", method: "GET /"}', "expected an HTTP method"),
        ('{url: "http://x", timeout: 0}', "timeouts must be more than 0 seconds"),
        ('{url: "http://x", auth: {bearer: a, basic: {username: u, password: p}}}', "exactly one of 'bearer' or 'basic'"),
        ('{url: "http://x", verify: false}', "verify"),
    ],
    ids=["scheme", "no-host", "two-bodies", "method", "zero-timeout", "two-auths", "unknown-key"],
)
def test_invalid_configs_are_rejected_at_load(project: Any, http: str, message: str) -> None:
    one_step(project, http)
    result = project.run("validate", "--json")
    assert result.code == 2, result
    assert message in result.out, result


def test_show_summarises_method_and_url(project: Any) -> None:
    project.write(
        "x.yaml",
        """
        name: x
        params:
          lb: {type: string}
        steps:
          - id: drain
            http: {method: post, url: "https://{{ params.lb }}/drain"}
    """,
    )
    result = project.run("show", "x")
    assert result.code == 0, result
    assert "http: POST https://{{ params.lb }}/drain" in result.out


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["list"], ["show", "h"]], ids=["help", "plugins", "list", "show"])
def test_loading_the_plugin_does_not_import_httpx(project: Any, args: list[str]) -> None:
    import subprocess
    import sys

    one_step(project, '{url: "http://127.0.0.1:9/x"}')  # a runbook that uses the http step type
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", *args], capture_output=True, text=True,
                          cwd=project.root, env=project.env, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "httpx" not in proc.stderr and "runbook_http.transport" not in proc.stderr
    if args in (["list"], ["show", "h"]):
        # the runbook was compiled with the http step type's Config (runbook_http.step, loaded on first use, imports
        # runbook_http.config; -X importtime does not list a module loaded by importlib.import_module itself)
        assert "runbook_http.config" in proc.stderr


def test_sensitive_response_headers_are_masked_in_the_stored_output(project: Any, http_server: HTTPTestServer) -> None:
    http_server.route("/multi", Reply(200, body="ok", headers={"Set-Cookie": "session=abc123"}))
    one_step(project, f'{{url: "{http_server.url("/multi")}"}}', extra="    expect: {header: {set-cookie: session=}}\n")
    result, view = run(project, "h")
    assert result.code == 0, result
    assert step(view, "s")["output"]["headers"]["set-cookie"] == "***"
    assert "abc123" not in json.dumps(view)
