"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright), against a real
``runbook serve`` whose runs are started by a real Prometheus Alertmanager.

A person logs in with their token, finds the run an alert started waiting for their approval, approves it,
watches its steps complete without reloading the page, and opens the failed step's output. A person whose
token lacks the ``approve`` scope sees no approve button and a POST forged from their session is refused, and
finds the schedules from the navigation;
a page of another origin posting the approve form with the approver's session is refused too. Screenshots go
to ``$RUNBOOK_TEST_ARTIFACTS/console`` (else the test's tmp dir) and their paths are printed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.httpserver import HTTPTestServer, Reply

from tests.conftest import Project, require
from tests.server.amkit import Alertmanager, have_alertmanager
from tests.server.serverkit import ServerProcess, poll

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip
AM_TOKEN = "am-console-bearer-8841"
TOKENS = {"oncall": "oncall-token-5f0e2b", "viewer": "viewer-token-9d41aa", "bot": "bot-token-77c3e1"}
CONFIG = """
tokens:
  - {name: oncall, token: env:T_ONCALL, scopes: [read, run, approve]}
  - {name: viewer, token: env:T_VIEWER, scopes: [read, run]}
  - {name: bot, token: env:T_BOT, scopes: [read]}
sources:
  alertmanager: {auth: {bearer: env:AM_WEBHOOK_TOKEN}}
allowed_origins: ["DASHBOARD"]       # a page trusted to call the API (not the console's forms)
routes:
  - name: web-down
    source: alertmanager
    match: {alertname: WebDown}
    runbook: remediate
    params: {host: "{{ alert.labels.instance }}"}
schedules:
  - {name: weekly-drain, runbook: remediate, cron: "0 4 * * 1", timezone: Europe/Paris, params: {host: web9}, enabled: false}
"""
RUNBOOK = """
name: remediate
description: Drain a web node and restart its service
params:
  host: {type: string, pattern: '^[a-z0-9.-]+$', description: the node to work on}
steps:
  - id: approve-drain
    approval: {message: "Drain {{ params.host }} and restart it?", approvers: 1, distinct_from_starter: true, expires: 1h}
  - id: drain
    check:
      - shell: [test, -f, "ROOT/drained-{{ params.host }}"]
    shell: [sh, -c, 'echo "draining $1"; while [ ! -f "$2" ]; do sleep 0.1; done; echo "drained $1"', sh, "{{ params.host }}", "ROOT/go"]
    timeout: 120s
  - id: restart
    shell: [sh, -c, 'echo "restarting $1"; echo "$1: connection refused on :8080" >&2; exit 3', sh, "{{ params.host }}"]
"""


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$RUNBOOK_TEST_ARTIFACTS/console``, else the test's tmp dir."""
    base = os.environ.get("RUNBOOK_TEST_ARTIFACTS")
    out = Path(base) / "console" if base else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """``browser(name)``: a new Chromium (its own fresh profile directory: one person) with one page."""
    require(importlib.util.find_spec("playwright") is not None, "the Python package playwright (pip install playwright)")
    require(Path(CHROMIUM).exists(), "Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        contexts: list[Any] = []

        def open_browser(name: str) -> Any:
            context = pw.chromium.launch_persistent_context(str(tmp_path / f"profile-{name}"), executable_path=CHROMIUM, headless=True,
                                                            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})  # fmt: skip
            context.set_default_timeout(30_000)
            contexts.append(context)
            return context.pages[0] if context.pages else context.new_page()

        yield open_browser
        for context in contexts:
            context.close()


def shot(page: Any, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def alert_run(server: ServerProcess, am: Alertmanager, instance: str) -> str:
    """Fire ``WebDown`` for ``instance`` through Alertmanager; the id of the run its delivery started."""
    am.add("alertname=WebDown", f"instance={instance}", start=datetime.now(UTC) - timedelta(seconds=2))
    c = server.client(TOKENS["bot"])

    def started() -> str | None:
        rows = c.get("/v1/alerts/decisions", params={"decision": "started"}).json()["decisions"]
        return next((d["run_id"] for d in rows if d["alert"]["labels"].get("instance") == instance), None)

    run_id: str = poll(started, timeout=60, what=f"Alertmanager's delivery to start a run for {instance}\n{am.log()[-2000:]}")
    server.wait_state(run_id, "waiting")
    return run_id


def approvals(server: ServerProcess, run_id: str) -> list[tuple[str, str]]:
    events = server.client(TOKENS["bot"]).get(f"/v1/runs/{run_id}/events").json()["events"]
    return [(e["type"], e["actor"]) for e in events if e["type"] in ("request.approve", "request.deny")]


def log_in(page: Any, server: ServerProcess, path: str, who: str) -> None:
    """Log in with the keyboard only: the token field has the focus, Enter submits."""
    page.goto(server.url + path)
    page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")  # autofocus
    assert page.get_by_label("API token").count() == 1
    page.keyboard.type(TOKENS[who])
    page.keyboard.press("Enter")
    page.wait_for_url(server.url + path)
    assert page.get_by_test_id("identity").inner_text() == who


def test_an_on_call_person_approves_an_alert_run_and_watches_it_live(
    project: Project,
    serve: Callable[..., ServerProcess],
    browser: Callable[[str], Any],
    artifacts: Path,
    http_server: HTTPTestServer,
    other_http_server: HTTPTestServer,
) -> None:
    require(have_alertmanager(), "Prometheus Alertmanager (apt-get install prometheus-alertmanager)")
    project.write("remediate.yaml", RUNBOOK.replace("ROOT", str(project.root)))
    env = {"T_ONCALL": TOKENS["oncall"], "T_VIEWER": TOKENS["viewer"], "T_BOT": TOKENS["bot"], "AM_WEBHOOK_TOKEN": AM_TOKEN}
    dashboard = other_http_server.url("/").rstrip("/")
    server = serve(CONFIG.replace("DASHBOARD", dashboard), env=env, token=TOKENS["bot"])
    am = Alertmanager.start(project.root / "am", f"{server.url}/v1/alerts/alertmanager", AM_TOKEN)
    try:
        run_id = alert_run(server, am, "web1")

        # The on-call person logs in (the run's link brings them to the login form first) and finds the run waiting.
        page = browser("oncall")
        log_in(page, server, f"/runs/{run_id}", "oncall")
        assert page.get_by_test_id("run-state").inner_text() == "waiting"
        assert "alertmanager, route web-down" in page.get_by_test_id("trigger").inner_text()
        assert page.get_by_test_id("started-by").inner_text() == "alert:alertmanager/web-down"
        assert "Drain web1 and restart it?" in page.get_by_test_id("approval").inner_text()
        shot(page, artifacts, "01-waiting-for-approval")

        # Approve as the logged-in person, with the keyboard: the first Tab reaches the skip link, the button
        # follows the comment.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.get_by_label("Comment").fill("web1 is out of the pool already")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Approve as oncall"
        page.keyboard.press("Enter")
        page.wait_for_url(server.url + f"/runs/{run_id}")
        assert "Approved as oncall" in page.locator(".flash.ok").inner_text()
        assert approvals(server, run_id) == [("request.approve", "oncall")]

        # From here on the page is never reloaded: the steps change as the run's events arrive.
        page.evaluate("window.__sameDocument = 'yes'")
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.locator('#step-drain[data-state="running"]').wait_for()
        shot(page, artifacts, "02-step-running")
        (project.root / "go").write_text("go")
        page.locator('#step-restart[data-state="failed"]').wait_for()
        page.locator('[data-testid="run-state"] .state-failed').wait_for()
        assert page.locator('#step-drain[data-state="succeeded"]').count() == 1
        assert page.evaluate("window.__sameDocument") == "yes" and navigations == [], "the page was not reloaded"
        page.locator("#events-body td", has_text="run.failed").wait_for()
        assert page.locator("#probes-drain").count() == 1, "the drain step's check is shown"

        # Open the failed step's output.
        stderr = page.locator("#output-restart pre.stderr")
        assert not stderr.is_visible()
        page.locator("#output-restart summary").click()
        assert stderr.is_visible() and "web1: connection refused on :8080" in stderr.inner_text()
        assert "exit code 3" in page.locator("#output-restart").inner_text()
        shot(page, artifacts, "03-failed-step-output")

        # A second alert: a person whose token lacks `approve` sees no approve button, and a forged POST is refused.
        second = alert_run(server, am, "web2")
        viewer = browser("viewer")
        log_in(viewer, server, f"/runs/{second}", "viewer")
        assert viewer.get_by_role("button", name="Approve as viewer").count() == 0
        assert viewer.locator(f'form[action="/runs/{second}/approve"]').count() == 0
        assert "has no approve scope" in viewer.get_by_test_id("cannot-approve").inner_text()
        shot(viewer, artifacts, "04-no-approve-scope")
        forged = viewer.evaluate("""async (path) => {
            const csrf = document.querySelector('input[name=csrf_token]').value;  // the viewer's own valid token
            const r = await fetch(path, {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                body: new URLSearchParams({csrf_token: csrf, comment: 'forged'})});
            return {status: r.status, text: await r.text()};
        }""", f"/runs/{second}/approve")  # fmt: skip
        assert forged["status"] == 403 and "lacks the &#39;approve&#39; scope" in forged["text"]

        # The schedules, reached from the navigation.
        viewer.get_by_role("link", name="Schedules", exact=True).click()
        viewer.wait_for_url(server.url + "/schedules")
        schedule = viewer.locator("#schedule-weekly-drain").inner_text()
        assert "remediate" in schedule and "0 4 * * 1" in schedule and "Europe/Paris" in schedule and "disabled" in schedule
        shot(viewer, artifacts, "04b-schedules")

        # The approver's own page, posting without the form's CSRF token: refused.
        no_token = page.evaluate("""async (path) => {
            const r = await fetch(path, {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'comment=no+token'});
            return r.status;
        }""", f"/runs/{second}/approve")  # fmt: skip
        assert no_token == 403

        # Pages of other origins auto-submit the approve form (no CSRF token) with the approver's session cookie
        # (another port of the same host is the same site, so SameSite lets the cookie through): refused, both
        # by the Origin check of every request and, for an origin trusted to call the API, by the console's own.
        for n, (attacker, why) in enumerate([(http_server, "ForbiddenOrigin"), (other_http_server, "form posts not made by this console")]):
            attacker.route("/attack", Reply(200, headers={"Content-Type": "text/html"}, body=f"""<!doctype html>
                <form id="f" method="post" action="{server.url}/runs/{second}/approve">
                  <input name="comment" value="approved by a cross-site page"></form>
                <script>document.getElementById('f').submit()</script>"""))  # fmt: skip
            with page.expect_response(lambda r: r.url.endswith(f"/runs/{second}/approve")) as answer:
                page.goto(attacker.url("/attack"), wait_until="commit")  # its script navigates away at once
            assert answer.value.status == 403 and why in answer.value.text()
            page.wait_for_load_state()
            shot(page, artifacts, f"0{5 + n}-cross-site-post-refused")
        assert approvals(server, second) == [], "no approval was recorded for the second run"
        assert server.run_state(second) == "waiting"
    finally:
        am.stop()
