"""The console's pages in process: catalog and start forms, runs list, run and step pages, live updates, decisions."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.console_cases import CONFIG, ENV, POLICY, RUNBOOKS, TOKENS
from tests.server.consolekit import ConsoleApp, console_app, csrf_of

pytest.importorskip("fastapi")


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsoleApp]:
    with console_app(tmp_path, RUNBOOKS, CONFIG, ENV, monkeypatch, policy=POLICY) as app:
        yield app


def tag(page: str, element_id: str) -> str:
    """The opening tag of the element with ``element_id``."""
    m = re.search(rf'<(input|select|textarea)[^>]*\bid="{re.escape(element_id)}"[^>]*>', page, re.S)
    assert m, f"no element #{element_id}"
    return m.group(0)


def start_form(console: ConsoleApp, c: object, runbook: str, values: dict[str, str], request_id: str = "req-1") -> object:
    page = c.get(f"/runbooks/{runbook}")  # type: ignore[attr-defined]
    data = {"csrf_token": csrf_of(page.text), "request_id": request_id, **{f"param.{k}": v for k, v in values.items()}}
    return c.post(f"/runbooks/{runbook}/start", data=data)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- catalog and start form


def test_the_start_form_is_generated_from_the_params_schema(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    catalog = c.get("/runbooks").text
    for name in ("gated", "only-alice", "probe", "typed", "longout"):
        assert f'href="/runbooks/{name}"' in catalog
    page = c.get("/runbooks/typed").text
    count = tag(page, "param-count")
    assert 'type="number"' in count and 'step="1"' in count and 'min="1' in count and 'max="10' in count and 'value="2"' in count
    assert "required" not in count, "a param with a default is optional"
    mode = tag(page, "param-mode")
    assert mode.startswith("<select") and " required" in mode
    options = re.findall(r'<option value="([^"]*)"', page.split('id="param-mode"')[1].split("</select>")[0])
    assert options == ["", "fast", "slow"], "a required enum without default must be chosen"
    token = tag(page, "param-token")
    assert 'type="text"' in token and 'placeholder="env:NAME or file:/path"' in token and 'autocomplete="off"' in token
    assert "secret reference" in page and "never the secret itself" in page
    assert tag(page, "param-tags").startswith("<textarea") and "one string per line" in page
    dry = page.split('id="param-dry"')[1].split("</select>")[0]
    assert re.findall(r'<option value="([^"]*)"', dry) == ["", "true", "false"]
    assert "how many &lt;i&gt;times&lt;/i&gt;" in page, "descriptions are escaped"
    for name in ("count", "mode", "token", "tags", "dry", "note"):
        assert f'<label for="param-{name}">' in page, f"param {name} has a label"


def test_the_start_form_types_params_and_keeps_secrets_as_references(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    r = start_form(console, c, "typed", {"count": "3", "mode": "slow", "token": "env:DEPLOY_TOKEN", "tags": "a\n b \n\n", "dry": "true",
                                         "note": ""})  # fmt: skip
    assert r.status_code == 303, r.text
    run_id = r.headers["location"].rsplit("/", 1)[1]
    run = console.state.store.get_run(run_id)
    assert run.params == {"count": 3, "mode": "slow", "token": "env:DEPLOY_TOKEN", "tags": ["a", "b"], "dry": True, "note": ""}
    assert run.started_by == "oncall" and run.state == "queued" and run.trigger["source"] == "api"
    page = c.get(f"/runs/{run_id}").text
    assert f"Started run {run_id} of typed as oncall." in page
    assert "env:DEPLOY_TOKEN" in page and "secret reference" in page


def test_a_refused_start_says_why_per_field_and_keeps_the_values(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    r = start_form(console, c, "typed", {"count": "many", "mode": "", "token": "env:T"})
    assert r.status_code == 422
    assert "&#39;many&#39; is not a whole number" in r.text and 'value="many"' in r.text and 'aria-invalid="true"' in r.text
    r = start_form(console, c, "typed", {"count": "3", "mode": "fast", "token": "hunter2-plain-value"})
    assert r.status_code == 422 and "never the value itself" in r.text
    assert "hunter2-plain-value" not in r.text, "a secret typed instead of its reference is not shown back"
    r = start_form(console, c, "typed", {"count": "30", "mode": "fast", "token": "env:T", "note": "a;b"})
    assert r.status_code == 422 and "count" in r.text and "note" in r.text
    assert console.state.store.list_runs() == [], "nothing was started"


def test_a_start_form_submitted_twice_starts_one_run(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    first = start_form(console, c, "longout", {}, request_id="same")
    again = start_form(console, c, "longout", {}, request_id="same")
    other = start_form(console, c, "longout", {}, request_id="other")
    assert first.headers["location"] == again.headers["location"] != other.headers["location"]
    assert len(console.state.store.list_runs()) == 2


# ---------------------------------------------------------------------- run and step pages


def test_the_run_page_shows_steps_probes_and_the_failed_steps_output(console: ConsoleApp) -> None:
    run_id = console.start("probe")
    c = console.client(TOKENS["viewer"])
    page = c.get(f"/runs/{run_id}").text
    steps = re.findall(r'<li id="step-([^"]+)" data-state="([^"]+)"', page)
    assert steps == [("first", "succeeded"), ("restart", "failed")]
    restart = page.split('id="step-restart"')[1]
    assert "Probes (1)" in restart and "shell: test -f /nonexistent/flag-file" in restart and "did not hold" in restart
    assert "exit code 4" in restart and "backend refused the connection" in restart and "trying restart" in restart
    assert 'href="/runs/' + run_id + '/steps/restart"' in restart
    assert "step &#39;restart&#39; failed: exit code 4, expected 0" in page
    assert "Retry the failed step" not in page and "Cancel run" not in page, "the viewer has no run scope"
    assert "data-events-url" not in page, "a failed run is not followed live"


def test_the_run_page_shows_the_tail_and_the_step_page_the_whole_output(console: ConsoleApp) -> None:
    run_id = console.start("longout")
    c = console.client(TOKENS["viewer"])
    run_page = c.get(f"/runs/{run_id}").text
    assert "line-100" in run_page and "line-81\n" in run_page and "line-80\n" not in run_page and "(last lines)" in run_page
    step = c.get(f"/runs/{run_id}/steps/chatty")
    assert step.status_code == 200
    text = html.unescape(step.text)
    assert "\n".join(f"line-{i}" for i in range(1, 101)) in text and "(last lines)" not in text
    assert c.get(f"/runs/{run_id}/steps/nope").status_code == 400
    assert c.get("/runs/01NOPENOPENOPENOPENOPENOPE").status_code == 404


def test_fan_out_output_and_probes_are_shown_per_target(console: ConsoleApp) -> None:
    run_id = console.start("fanout")
    c = console.client(TOKENS["viewer"])
    page = c.get(f"/runs/{run_id}").text
    assert '<li id="step-each" data-state="failed"' in page
    step = page.split('id="step-each"')[1].split("</li>")[0]
    alpha, beta = step.split("<h4>alpha")[1].split("<h4>beta")
    assert "succeeded" in alpha and "hello from alpha" in alpha and "beta" not in alpha
    assert "failed" in beta and "exit code 5" in beta and "beta broke" in beta and "hello from beta" in beta
    probes = re.findall(r"<td>(alpha|beta)</td></tr>", step)
    assert sorted(probes) == ["alpha", "beta"], "each target's check is shown with its target"
    whole = c.get(f"/runs/{run_id}/steps/each").text
    assert "hello from alpha" in whole and "beta broke" in whole


def test_everything_shown_is_escaped_and_pages_carry_a_strict_csp(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    r = start_form(console, c, "typed", {"mode": "fast", "token": "env:T", "note": "<script>alert(2)</script>"})
    run_id = r.headers["location"].rsplit("/", 1)[1]
    for path in ("/runbooks", "/runbooks/typed", f"/runs/{run_id}", "/runs", "/"):
        page = c.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<script src=" in page.text, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), f"an inline script in {path}"
        assert not re.search(r'\son[a-z]+="', page.text) and ' style="' not in page.text, f"inline handlers or styles in {path}"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in c.get(f"/runs/{run_id}").text
    assert "Types &lt;script&gt;alert(1)&lt;/script&gt; of params" in c.get("/runbooks").text


def test_static_assets_are_served_by_name_only(console: ConsoleApp) -> None:
    c = console.client()
    js = c.get("/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript") and "EventSource" in js.text
    assert c.get("/static/console.css").headers["content-type"].startswith("text/css")
    assert c.get("/static/../app.py").status_code == 404 and c.get("/static/session.py").status_code == 404


# ---------------------------------------------------------------------- live updates


def test_the_live_part_and_the_event_stream_follow_a_run(console: ConsoleApp) -> None:
    run_id = console.start("gated")
    c = console.client(TOKENS["oncall"])
    page = c.get(f"/runs/{run_id}").text
    after = re.search(r'data-after="(\d+)"', page)
    assert after and f'data-events-url="/runs/{run_id}/events"' in page
    live = c.get(f"/runs/{run_id}/live").text
    assert live.count("data-live-part") == 2 and "<html" not in live and 'data-run-state="waiting"' in live
    console.post(c, f"/runs/{run_id}/approve")
    assert console.drive(run_id) == "succeeded"
    frames = []
    with c.stream("GET", f"/runs/{run_id}/events", params={"after": after.group(1)}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            frames.append(line)
            if line.startswith("event: end"):
                break
    events = [json.loads(f[6:]) for f in frames if f.startswith("data: {") and '"seq"' in f]
    types = [e["type"] for e in events]
    assert types[0] == "request.approve" and events[0]["actor"] == "oncall" and types[-1] == "run.succeeded"
    assert events[0]["seq"] == int(after.group(1)) + 1, "the stream continues after what the page showed"
    assert 'data-run-state="succeeded"' in c.get(f"/runs/{run_id}/live").text
    assert console.client().get(f"/runs/{run_id}/events").status_code == 401, "the stream needs a login too"


# ---------------------------------------------------------------------- runs list


def test_the_runs_list_filters_by_state_runbook_actor_and_time_and_pages(console: ConsoleApp) -> None:
    failed = console.start("probe", by="alice")
    waiting = console.start("gated", by="alert:alertmanager/web-down")
    time.sleep(0.01)
    middle = time.time()
    time.sleep(0.01)
    queued = [console.start("longout", by=f"bot-{i}", execute=False) for i in range(55)]
    c = console.client(TOKENS["viewer"])

    def ids(**query: str) -> list[str]:
        page = c.get("/runs", params=query)
        assert page.status_code == 200, page.text
        return re.findall(r'<td><a href="/runs/([0-9A-Z]{26})">', page.text)

    assert ids(state="failed") == [failed] and ids(state="waiting") == [waiting]
    assert ids(runbook="gated") == [waiting]
    assert ids(actor="alert:") == [waiting] and ids(actor="ALICE") == [failed]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle)) + f".{int(middle % 1 * 1000):03d}"
    assert ids(until=stamp) == [waiting, failed]
    assert set(ids(since=stamp, state="queued")) <= set(queued) and waiting not in ids(since=stamp)
    newest = sorted(queued, reverse=True)  # ids order runs by creation time (random within one millisecond)
    first = ids()
    assert len(first) == 50 and first == newest[:50]
    page = c.get("/runs").text
    older = re.search(r'href="/runs\?before=([0-9A-Z]{26})" rel="next"', page)
    assert older and older.group(1) == first[-1]
    assert ids(before=older.group(1)) == [*newest[50:], waiting, failed]
    bad = c.get("/runs", params={"since": "yesterday"})
    assert bad.status_code == 400 and "is not a date and time" in bad.text
    assert c.get("/runs", params={"state": "bogus"}).status_code == 400


def test_run_ids_sort_like_their_creation_time() -> None:
    from runbook_server.console.listing import ulid_floor

    from runner.engine.runtime import new_run_id

    before = time.time()
    rid = new_run_id()
    assert ulid_floor(before - 0.002) < rid < ulid_floor(time.time() + 0.002)
    assert len(ulid_floor(before)) == 26


# ---------------------------------------------------------------------- steering


def test_pause_resume_and_cancel_follow_the_run_scope(console: ConsoleApp) -> None:
    run_id = console.start("gated")
    viewer = console.client(TOKENS["viewer"])
    page = viewer.get(f"/runs/{run_id}").text
    assert "/pause" not in page and "/cancel" not in page
    assert console.post(viewer, f"/runs/{run_id}/pause").status_code == 403
    c = console.client(TOKENS["runner"])
    assert f'action="/runs/{run_id}/pause"' in c.get(f"/runs/{run_id}").text
    assert console.post(c, f"/runs/{run_id}/pause", {"reason": "maintenance"}).status_code == 303
    assert console.state.store.get_run(run_id).state == "paused"
    page = c.get(f"/runs/{run_id}").text
    assert "Pause requested by runner" in page and f'action="/runs/{run_id}/resume"' in page
    assert console.post(c, f"/runs/{run_id}/resume", {"mode": "resume"}).status_code == 303
    assert console.state.store.get_run(run_id).state == "queued"
    assert console.post(c, f"/runs/{run_id}/cancel", {"reason": "not needed"}).status_code == 303
    run = console.state.store.get_run(run_id)
    assert run.state == "cancelled" and run.reason == "not needed"
    again = console.post(c, f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and "cannot cancel it" in again.text and "Run <code>" in again.text, "the run page says why"


def test_a_failed_run_is_retried_from_the_console(console: ConsoleApp) -> None:
    run_id = console.start("probe")
    c = console.client(TOKENS["runner"])
    assert console.post(c, f"/runs/{run_id}/resume", {"mode": "retry"}).status_code == 303
    assert console.state.store.get_run(run_id).state == "queued"
    assert [e.data.get("retry") for e in console.events(run_id, "request.resume")] == [True]


# ---------------------------------------------------------------------- storm guard


def test_the_decisions_page_lists_filters_and_resets_breakers(console: ConsoleApp) -> None:
    from runner.alerts import NewDecision

    run_id = console.start("gated", by="alert:alertmanager/web-down")
    console.state.store.record_decisions([
        NewDecision("d1", 0, "alertmanager", "started", route="web-down", run_id=run_id, dedupe_key="web1",
                    alert={"labels": {"alertname": "WebDown", "instance": "<web1>"}}),
        NewDecision("d2", 0, "alertmanager", "over_budget", route="web-down", reason="route already started 5 run(s)",
                    alert={"labels": {"alertname": "WebDown", "instance": "web2"}}),
    ])  # fmt: skip
    c = console.client(TOKENS["viewer"])
    page = c.get("/decisions").text
    assert "over_budget" in page and "route already started 5 run(s)" in page and f'href="/runs/{run_id}"' in page
    assert "instance=&lt;web1&gt;" in page and "Reset the breaker" not in page
    only = c.get("/decisions", params={"decision": "started"}).text
    assert "over_budget</strong>" not in only and "started</strong>" in only
    assert c.get("/decisions", params={"decision": "bogus"}).status_code == 400
    assert console.post(c, "/decisions/reset", {"route": "web-down"}).status_code == 403
    admin = console.client(TOKENS["root"])
    assert "Reset the breaker of web-down" in admin.get("/decisions").text
    assert console.post(admin, "/decisions/reset", {"route": "web-down"}).status_code == 303
    (reset,) = console.state.store.list_decisions(decision="breaker_reset")
    assert reset.route == "web-down" and reset.reason == "reset by root"


# ---------------------------------------------------------------------- overview, forms, switch


def test_the_overview_lists_runs_waiting_for_a_person(console: ConsoleApp) -> None:
    waiting = console.start("gated")
    done = console.start("longout")
    page = console.client(TOKENS["viewer"]).get("/").text
    attention = page.split("Waiting for a person")[1].split("Recent runs")[0]
    assert f'href="/runs/{waiting}"' in attention and "approval" in attention and done not in attention
    assert f'href="/runs/{done}"' in page


def test_the_console_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_app(tmp_path, RUNBOOKS, CONFIG + "console: {enabled: false}\n", ENV, monkeypatch) as app:
        c = app.client()
        assert c.get("/").status_code == 404 and c.get("/login").status_code == 404
        assert c.get("/v1/runbooks", headers={"authorization": f"Bearer {TOKENS['viewer']}"}).status_code == 200


@pytest.mark.parametrize(("schema_type", "text", "value"), [
    ({"type": "integer"}, " 7 ", 7), ({"type": "number"}, "2.5", 2.5), ({"type": "boolean"}, "false", False),
    ({"enum": [1, 2]}, "2", 2), ({"type": "array", "items": {"type": "integer"}}, "1\n2\n", [1, 2]),
    ({"type": "object"}, '{"a": 1}', {"a": 1}), ({"type": "string"}, " keep spaces ", " keep spaces "),
], ids=["integer", "number", "boolean", "int-enum", "int-array", "object", "string"])  # fmt: skip
def test_form_values_are_typed_by_the_schema(schema_type: dict[str, object], text: str, value: object) -> None:
    from runbook_server.console.forms import params_from_form

    params, errors = params_from_form({"properties": {"p": schema_type}, "required": ["p"]}, {"param.p": text})
    assert errors == {} and params == {"p": value}


def test_form_conversion_errors_are_per_field() -> None:
    from runbook_server.console.forms import params_from_form

    schema = {"properties": {"n": {"type": "integer"}, "o": {"type": "object"}, "e": {"enum": ["a"]}, "s": {"type": "string", "default": "d"}},
              "required": ["n", "o", "e"]}  # fmt: skip
    params, errors = params_from_form(schema, {"param.n": "1.5", "param.o": "[1]", "param.e": "b", "param.s": ""})
    assert params == {} and set(errors) == {"n", "o", "e"} and "whole number" in errors["n"] and "JSON object" in errors["o"]


def _luminance(hex_color: str) -> float:
    rgb = [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_colours_have_at_least_aa_contrast() -> None:
    from runbook_server.console.render import HERE

    css = (HERE / "static" / "console.css").read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    pairs = [("fg", "bg"), ("muted", "bg"), ("muted", "panel"), ("link", "bg"), ("fg", "panel")]
    pairs += [(f"{kind}-fg", f"{kind}-bg") for kind in ("ok", "bad", "wait", "run", "idle")]
    for fg, bg in pairs:
        assert contrast(var[fg], var[bg]) >= 7.0, f"{fg} on {bg}"
    buttons = re.findall(r"button(?:\.(?:danger|approve))? \{[^}]*background: (#[0-9a-f]{6})", css)
    assert len(buttons) == 3 and "color: #fff" in css
    for button in buttons:
        assert contrast("#ffffff", button) >= 4.5, f"white on {button}"
    assert contrast("#f5f7fa", "#16202c") >= 7.0, "header text"


def test_a_running_steps_output_so_far_is_on_its_run_page(console: ConsoleApp) -> None:
    """While a long step runs, its run page shows the lines it wrote so far (journaled chunks), then its result."""
    import threading
    import time

    run_id = console.start("ticking", execute=False)
    driver = threading.Thread(target=console.drive, args=(run_id,))
    driver.start()
    c = console.client(TOKENS["alice"])
    seen = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "tick-2" not in seen:
        page = c.get(f"/runs/{run_id}").text
        if "running" in page:
            seen = page
        time.sleep(0.2)
    driver.join(30)
    assert "tick-2" in seen and "tick-6" not in seen, "the page showed the output while the step ran"
    assert "tick-6" in c.get(f"/runs/{run_id}").text
