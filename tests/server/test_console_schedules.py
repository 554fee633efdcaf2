"""The console's ``/schedules`` page in process: the rows ``GET /v1/schedules`` gives, the run a fired slot started,
the ``read`` scope, the agent policy, escaping, and a server without schedules.

The scheduler is the real one on the server's journal, ticked by the test at chosen times (as in
tests/server/test_scheduler.py), so what the page shows is known exactly.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.server.consolekit import ConsoleApp, console_app
from tests.server.test_scheduler import Clock

pytest.importorskip("fastapi")

RUNBOOKS = {
    "stamp.yaml": """
        name: stamp
        params:
          slot: {type: string}
        steps:
          - id: note
            shell: [sh, -c, 'echo "slot $1"', sh, "{{ params.slot }}"]
    """,
    "sweep.yaml": """
        name: sweep
        steps:
          - id: clean
            shell: ["true"]
    """,
}
TOKENS = {"viewer": "tok-sched-viewer-1", "starter": "tok-sched-starter-2", "bot": "tok-sched-agent-3"}
ENV = {f"S_{name.upper()}": value for name, value in TOKENS.items()}
CONFIG = """
tokens:
  - {name: viewer, token: env:S_VIEWER, scopes: [read]}
  - {name: starter, token: env:S_STARTER, scopes: [run]}
  - {name: bot, token: env:S_BOT, scopes: [agent]}
schedules:
  - name: cert-check
    runbook: stamp
    cron: "0 */6 * * *"
    timezone: Europe/Paris
    params: {slot: "{{ schedule.slot }}"}
    jitter: 90s
    misfire: run_once
  - name: nightly.sweep
    runbook: sweep
    cron: "30 2 * * *"
    overlap: allow
    enabled: false
"""
POLICY = "allow: [stamp]\n"  # agents may start stamp only: they see cert-check, not nightly.sweep
NOON = datetime(2026, 12, 7, 11, 0, tzinfo=UTC).timestamp()  # 12:00 in Paris: a slot of cert-check


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsoleApp]:
    from runbook_server.scheduler import Scheduler
    from runbook_server.schedules import check_schedules

    with console_app(tmp_path, RUNBOOKS, CONFIG, ENV, monkeypatch, policy=POLICY) as app:
        state = app.state
        engine = state.make_engine("scheduler")
        clock = Clock(NOON - 600)
        state.scheduler = Scheduler(check_schedules(state.config, state.catalog, engine.renderer, clock.now()), engine, clock)
        yield app


def row(page: str, name: str) -> str:
    """The table row of schedule ``name``."""
    m = re.search(rf'<tr id="schedule-{re.escape(name)}"[^>]*>(.*?)</tr>', page, re.S)
    assert m, f"no row for schedule {name}:\n{page[:3000]}"
    return m.group(0)


def cells(row_html: str) -> list[str]:
    """The row's cells as text (tags dropped, whitespace collapsed, entities decoded)."""
    found = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row_html, re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", "", c.replace("<br>", " "))).split()) for c in found]


def fire(console: ConsoleApp, name: str, slot: datetime) -> str:
    """Tick the scheduler just after ``slot``'s fire time; drive the run it started to its end; return its id."""
    scheduler = console.state.scheduler
    assert scheduler is not None
    cs = next(s for s in scheduler.schedules if s.name == name)
    assert isinstance(scheduler.clock, Clock)
    scheduler.clock.t = cs.fire_at(slot) + 1
    scheduler.tick(scheduler.clock.now())
    (decision,) = console.state.store.list_decisions(route=f"schedule:{name}", source="schedule", limit=1)
    assert decision.decision == "started" and decision.run_id, decision
    assert console.drive(decision.run_id) == "succeeded"
    return decision.run_id


def test_the_page_lists_each_schedule_as_the_api_does(console: ConsoleApp) -> None:
    c = console.client(TOKENS["viewer"])
    r = c.get("/schedules")
    assert r.status_code == 200, r.text
    page = r.text
    assert '<a href="/schedules" aria-current="page">Schedules</a>' in page
    assert 'href="/schedules"' in c.get("/runs").text, "every page links to the schedules"
    assert "2 schedules" in page and "2026-12-07 10:50:00Z" in page, "the count and the scheduler's clock"

    cert = row(page, "cert-check")
    assert 'data-enabled="true"' in cert
    name, runbook, cron, tz, jitter, misfire, next_slot, last_slot, last_run = cells(cert)
    scheduler = console.state.scheduler
    assert scheduler is not None
    fires = scheduler.schedules[0].fire_at(datetime.fromtimestamp(NOON, UTC))
    assert NOON < fires < NOON + 90, "the jitter delays the slot by less than 90 s"
    assert (name, runbook, cron, tz, jitter, misfire) == (
        "cert-check",
        "stamp",
        "0 */6 * * *",
        "Europe/Paris",
        "90 s",
        "run once no overlap",
    )
    fire_local = datetime.fromtimestamp(fires, UTC).astimezone(scheduler.schedules[0].slots.tz).isoformat(timespec="seconds")
    assert next_slot == f"2026-12-07T12:00:00+01:00 fires at {fire_local}"
    assert (last_slot, last_run) == ("never fired", "no run yet")
    assert 'href="/runbooks/stamp"' in cert

    sweep = row(page, "nightly.sweep")
    assert 'data-enabled="false"' in sweep
    assert cells(sweep) == ["nightly.sweep disabled", "sweep", "30 2 * * *", "UTC", "none", "skip", "none: disabled", "never fired",
                            "no run yet"]  # fmt: skip

    api = c.get("/v1/schedules", headers={"Authorization": f"Bearer {TOKENS['viewer']}"}).json()
    assert [s["name"] for s in api["schedules"]] == ["cert-check", "nightly.sweep"]
    for s in api["schedules"]:
        shown = row(page, s["name"])
        for key in ("name", "runbook", "cron", "timezone", "next_slot", "next_fire_at"):
            assert s[key] is None or html.escape(s[key]) in shown, (key, s[key])


def test_a_fired_slot_links_its_run_and_decision(console: ConsoleApp) -> None:
    run_id = fire(console, "cert-check", datetime.fromtimestamp(NOON, UTC))
    c = console.client(TOKENS["viewer"])
    cert = row(c.get("/schedules").text, "cert-check")
    *_, next_slot, last_slot, last_run = cells(cert)
    assert next_slot.startswith("2026-12-07T18:00:00+01:00 fires at 2026-12-07T18:0")
    assert last_slot == f"2026-12-07T12:00:00+01:00: started started run {run_id}"
    assert last_run == f"{run_id} succeeded slot 2026-12-07T12:00:00+01:00"
    assert f'<a href="/runs/{run_id}"><code>{run_id}</code></a>' in cert
    assert '<span class="state state-succeeded">succeeded</span>' in cert
    assert 'href="/decisions?route=schedule%3Acert-check"' in cert
    decisions = c.get("/decisions", params={"route": "schedule:cert-check"}).text
    assert "started run " + run_id in decisions, "the decision link shows the schedule's decisions"
    run_page = c.get(f"/runs/{run_id}")
    assert run_page.status_code == 200 and "schedule:cert-check" in run_page.text
    assert cells(row(c.get("/schedules").text, "nightly.sweep"))[-2:] == ["never fired", "no run yet"]


def test_reasons_from_the_journal_are_escaped(console: ConsoleApp) -> None:
    from runner.alerts import NewDecision

    run_id = fire(console, "cert-check", datetime.fromtimestamp(NOON, UTC))
    evil = "<img src=x onerror=alert(1)> params for <b>stamp</b> & co"
    key = "schedule:cert-check:2026-12-07T17:00:00Z"
    console.state.store.record_decisions([NewDecision(key, 0, "schedule", "invalid_params", route="schedule:cert-check",
                                                      fingerprint="2026-12-07T17:00:00Z", reason=evil)])  # fmt: skip
    page = console.client(TOKENS["viewer"]).get("/schedules").text
    cert = row(page, "cert-check")
    assert "<img" not in page and "<b>stamp" not in page
    assert "&lt;img src=x onerror=alert(1)&gt; params for &lt;b&gt;stamp&lt;/b&gt; &amp; co" in cert
    assert cells(cert)[7].startswith("2026-12-07T18:00:00+01:00: invalid_params")
    assert f'href="/runs/{run_id}"' in cert, "the last run is still the one the schedule started"
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and ' style="' not in page and not re.search(r'\son[a-z]+="', page)


def test_the_page_needs_the_read_scope_and_follows_the_agent_policy(console: ConsoleApp) -> None:
    anonymous = console.client().get("/schedules")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=%2Fschedules"
    starter = console.client(TOKENS["starter"])
    refused = starter.get("/schedules")
    assert refused.status_code == 403 and "token &#39;starter&#39; lacks the &#39;read&#39; scope" in refused.text
    assert "cert-check" not in refused.text
    bearer = console.client().get("/schedules", headers={"Authorization": f"Bearer {TOKENS['starter']}"})
    assert bearer.status_code == 403

    fire(console, "cert-check", datetime.fromtimestamp(NOON, UTC))
    bot = console.client(TOKENS["bot"]).get("/schedules").text
    assert "1 schedule of runbooks that the agent policy lets this token start" in bot
    assert 'id="schedule-cert-check"' in bot and "nightly.sweep" not in bot
    api = console.client().get("/v1/schedules", headers={"Authorization": f"Bearer {TOKENS['bot']}"}).json()
    assert [s["name"] for s in api["schedules"]] == ["cert-check"]
    assert api["schedules"][0]["last_run_id"] is None, "an agent may not read a run the schedule started"
    assert cells(row(bot, "cert-check"))[-1] == "no run yet" and 'href="/runs/' not in row(bot, "cert-check"), "nor does the page show it"


def test_a_server_without_schedules_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_app(tmp_path, RUNBOOKS, "", {}, monkeypatch) as app:
        assert app.state.scheduler is None
        page = app.client().get("/schedules")
        assert page.status_code == 200
        assert "No schedules are configured: this server's config has no <code>schedules:</code>." in page.text
        assert "<table" not in page.text
