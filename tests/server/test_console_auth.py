"""The console's login, sessions, CSRF defences and authority (scopes, agent policy, approval rules), in process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.console_cases import CONFIG, ENV, POLICY, RUNBOOKS, TOKENS
from tests.server.consolekit import BASE, ConsoleApp, console_app, csrf_of

pytest.importorskip("fastapi")


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsoleApp]:
    with console_app(tmp_path, RUNBOOKS, CONFIG, ENV, monkeypatch, policy=POLICY) as app:
        yield app


# ---------------------------------------------------------------------- login and sessions


def test_pages_need_a_login_that_trades_a_token_for_a_session(console: ConsoleApp) -> None:
    c = console.client()
    r = c.get("/runs?state=waiting")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fruns%3Fstate%3Dwaiting"
    form = c.get("/login")
    pre_login = c.cookies["runbook_console"]
    assert 'type="password"' in form.text and 'for="token"' in form.text
    r = c.post("/login", data={"csrf_token": csrf_of(form.text), "token": TOKENS["oncall"], "next": "/runs?state=waiting"})
    assert r.status_code == 303 and r.headers["location"] == "/runs?state=waiting"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
    assert c.cookies["runbook_console"] != pre_login, "a login starts a new session id"
    page = c.get("/runs?state=waiting")
    assert page.status_code == 200 and 'data-testid="identity">oncall<' in page.text
    assert TOKENS["oncall"] not in page.text


def test_a_wrong_token_is_refused_and_never_shown(console: ConsoleApp) -> None:
    c = console.client()
    form = c.get("/login")
    r = c.post("/login", data={"csrf_token": csrf_of(form.text), "token": "guess-1234567"})
    assert r.status_code == 401 and "the bearer token is not valid" in r.text and "guess-1234567" not in r.text
    assert c.get("/").status_code == 303, "no session was made"
    r = c.post("/login", data={"csrf_token": csrf_of(r.text), "token": TOKENS["viewer"]})
    assert r.status_code == 303, "the refused form can be submitted again"


def test_the_login_form_needs_its_csrf_token(console: ConsoleApp) -> None:
    c = console.client()
    c.get("/login")
    r = c.post("/login", data={"token": TOKENS["oncall"]})
    assert r.status_code == 403 and "CSRF" in r.text
    assert c.get("/").status_code == 303


def test_logout_ends_the_session(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    old = c.cookies["runbook_console"]
    r = console.post(c, "/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert 'runbook_console=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    other = console.client()
    other.cookies.set("runbook_console", old)
    assert other.get("/").status_code == 303, "the old session id no longer works"


def test_login_never_redirects_to_another_site(console: ConsoleApp) -> None:
    c = console.client()
    form = c.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in form.text
    r = c.post("/login", data={"csrf_token": csrf_of(form.text), "token": TOKENS["viewer"], "next": "https://evil.example/"})
    assert r.headers["location"] == "/"


def test_sessions_end_after_their_lifetime_or_when_idle() -> None:
    from runbook_server.auth import Principal
    from runbook_server.console.session import Sessions

    sessions = Sessions(ttl=3600, idle=600)
    who = Principal("oncall", frozenset({"read"}))
    cookie, session = sessions.new(who)
    assert sessions.get(cookie) is session
    session.seen -= 601
    assert sessions.get(cookie) is None, "idle too long"
    cookie, session = sessions.new(who)
    session.created -= 3601
    assert sessions.get(cookie) is None, "older than the session lifetime"
    assert sessions.get("not-a-session") is None and sessions.get("x" * 500) is None
    assert session.key != cookie and len(session.csrf) >= 40, "only a digest of the id is kept; CSRF tokens are long"


def test_secure_cookie_always(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIG + "console: {secure_cookie: always, session_ttl: 1h}\n"
    with console_app(tmp_path, RUNBOOKS, config, ENV, monkeypatch) as app:
        c = app.client()
        form = c.get("/login")
        r = c.post("/login", data={"csrf_token": csrf_of(form.text), "token": TOKENS["oncall"]})
        assert "Secure" in r.headers["set-cookie"] and "Max-Age=3600" in r.headers["set-cookie"]


# ---------------------------------------------------------------------- CSRF and cross-site requests


@pytest.mark.parametrize("csrf", [None, "", "forged-token", "other-session"], ids=["missing", "empty", "wrong", "other-session"])
def test_form_posts_without_this_sessions_csrf_token_are_refused(console: ConsoleApp, csrf: str | None) -> None:
    run_id = console.start("gated")
    c = console.client(TOKENS["oncall"])
    if csrf == "other-session":
        csrf = csrf_of(console.client(TOKENS["oncall"]).get("/").text)
    data = {"comment": "sneaky"} if csrf is None else {"comment": "sneaky", "csrf_token": csrf}
    r = c.post(f"/runs/{run_id}/approve", data=data)
    assert r.status_code == 403 and "CSRF token" in r.text
    assert console.events(run_id, "request.approve") == []
    assert c.post(f"/runs/{run_id}/cancel", data=data).status_code == 403
    assert console.state.store.get_run(run_id).state == "waiting"


@pytest.mark.parametrize(("headers", "why"), [
    ({"origin": "https://evil.example"}, "ForbiddenOrigin"),
    ({"origin": "http://127.0.0.1:9999"}, "ForbiddenOrigin"),
    ({"origin": "null"}, "ForbiddenOrigin"),
    ({"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site"),
    ({"sec-fetch-site": "same-site"}, "Sec-Fetch-Site"),
], ids=["other-site", "other-port", "null-origin", "cross-site", "same-site"])  # fmt: skip
def test_cross_site_posts_are_refused_even_with_the_token(console: ConsoleApp, headers: dict[str, str], why: str) -> None:
    run_id = console.start("gated")
    c = console.client(TOKENS["oncall"])
    r = console.post(c, f"/runs/{run_id}/approve", {"comment": "x"}, headers=headers)
    assert r.status_code == 403 and why in r.text
    assert console.events(run_id, "request.approve") == []


def test_origins_trusted_for_the_api_cannot_post_console_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIG + 'allowed_origins: ["https://dash.example"]\n'
    with console_app(tmp_path, RUNBOOKS, config, ENV, monkeypatch) as app:
        run_id = app.start("gated")
        c = app.client(TOKENS["oncall"])
        r = app.post(c, f"/runs/{run_id}/approve", headers={"origin": "https://dash.example"})
        assert r.status_code == 403 and "form posts from pages of origin &#39;https://dash.example&#39; are refused" in r.text
        assert app.events(run_id, "request.approve") == []


def test_same_origin_form_posts_are_served(console: ConsoleApp) -> None:
    run_id = console.start("gated")
    c = console.client(TOKENS["oncall"])
    r = console.post(c, f"/runs/{run_id}/approve", {"comment": "ok"}, headers={"origin": BASE, "sec-fetch-site": "same-origin"})
    assert r.status_code == 303, r.text
    assert [e.actor for e in console.events(run_id, "request.approve")] == ["oncall"]


def test_bearer_requests_need_no_session_or_csrf_token(console: ConsoleApp) -> None:
    run_id = console.start("gated")
    c = console.client()
    r = c.post(f"/runs/{run_id}/cancel", data={"reason": "by script"}, headers={"authorization": f"Bearer {TOKENS['runner']}"})
    assert r.status_code == 303
    assert console.state.store.get_run(run_id).state == "cancelled"
    bad = c.get("/", headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_the_api_is_unchanged_by_the_console(console: ConsoleApp) -> None:
    c = console.client()
    auth = {"authorization": f"Bearer {TOKENS['root']}"}
    form = c.post("/v1/runs", data={"runbook": "gated"}, headers=auth)
    assert form.status_code == 415, "the API still takes JSON only"
    own = c.post("/v1/runs", json={"runbook": "gated"}, headers={**auth, "origin": BASE})
    assert own.status_code == 403 and own.json()["error"]["type"] == "ForbiddenOrigin", "same-origin pages still need allowed_origins"
    assert c.get("/", headers={"host": "evil.example"}).status_code == 400, "the Host check covers the console"


# ---------------------------------------------------------------------- authority


def test_approving_records_the_logged_in_identity(console: ConsoleApp) -> None:
    run_id = console.start("gated")
    c = console.client(TOKENS["oncall"])
    page = c.get(f"/runs/{run_id}")
    assert "Approve as oncall" in page.text and "drain &lt;b&gt;web1&lt;/b&gt;?" in page.text
    r = console.post(c, f"/runs/{run_id}/approve", {"comment": "drain it", "step": "ask"}, page=f"/runs/{run_id}")
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{run_id}"
    (vote,) = console.events(run_id, "request.approve")
    assert vote.actor == "oncall" and vote.data["comment"] == "drain it"
    assert "Approved as oncall" in c.get(f"/runs/{run_id}").text
    assert console.drive(run_id) == "succeeded"


def test_a_token_without_approve_sees_no_button_and_a_forged_post_is_refused(console: ConsoleApp) -> None:
    run_id = console.start("gated")
    for name in ("viewer", "runner"):
        c = console.client(TOKENS[name])
        page = c.get(f"/runs/{run_id}")
        assert page.status_code == 200 and "Approve as" not in page.text and f"/runs/{run_id}/approve" not in page.text
        assert f"your token &#39;{name}&#39; has no approve scope" in page.text
        for verb in ("approve", "deny"):
            r = console.post(c, f"/runs/{run_id}/{verb}", {"comment": "forged"})
            assert r.status_code == 403 and "lacks the &#39;approve&#39; scope" in r.text
    assert console.events(run_id, "request.approve", "request.deny") == []


def test_the_approvals_own_rules_hold_for_console_identities(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    page = c.get("/runbooks/gated")
    r = c.post("/runbooks/gated/start", data={"csrf_token": csrf_of(page.text), "request_id": "r1"})
    assert r.status_code == 303
    run_id = r.headers["location"].rsplit("/", 1)[1]
    assert console.state.store.get_run(run_id).started_by == "oncall"
    console.drive(run_id)
    refused = console.post(c, f"/runs/{run_id}/approve")
    assert refused.status_code == 400 and "distinct_from_starter" in refused.text
    assert console.post(console.client(TOKENS["alice"]), f"/runs/{run_id}/approve").status_code == 303
    other = console.start("only-alice")
    refused = console.post(c, f"/runs/{other}/approve")
    assert refused.status_code == 400 and "oncall may not approve this step; allowed: alice" in refused.text
    assert console.post(console.client(TOKENS["alice"]), f"/runs/{other}/deny", {"comment": "no"}).status_code == 303
    assert [e.actor for e in console.events(other, "request.approve", "request.deny")] == ["alice"]


def test_a_token_without_run_has_no_start_button_and_cannot_start(console: ConsoleApp) -> None:
    c = console.client(TOKENS["alice"])
    page = c.get("/runbooks/gated")
    assert page.status_code == 200 and 'data-testid="no-start"' in page.text and "/runbooks/gated/start" not in page.text
    r = console.post(c, "/runbooks/gated/start", {"request_id": "x"})
    assert r.status_code == 403 and console.state.store.list_runs() == []


def test_an_agent_token_sees_what_the_agent_policy_allows(console: ConsoleApp) -> None:
    c = console.client(TOKENS["bot"])
    catalog = c.get("/runbooks").text
    assert "/runbooks/gated" in catalog and "/runbooks/typed" in catalog and "/runbooks/probe" not in catalog
    denied = c.get("/runbooks/probe")
    assert denied.status_code == 403 and "not available to agents" in denied.text
    assert console.post(c, "/runbooks/probe/start").status_code == 403
    r = console.post(c, "/runbooks/gated/start", {"request_id": "a1"})
    assert r.status_code == 303
    run = console.state.store.get_run(r.headers["location"].rsplit("/", 1)[1])
    assert run.started_by == "bot" and run.options.get("agent") is True, "an agent run"
    waiting = console.start("gated")
    hidden = c.get(f"/runs/{waiting}")  # a run the agent did not start: read only where the policy grants it
    assert hidden.status_code == 403 and "agents_may_read" in hidden.text
    policy = console.root / "policy.yaml"
    policy.write_text(policy.read_text() + "  gated: {agents_may_read: true}\n")
    page = c.get(f"/runs/{waiting}").text
    assert "Approve as" not in page and "the agent policy does not let agents approve runs of &#39;gated&#39;" in page
    refused = console.post(c, f"/runs/{waiting}/approve")
    assert refused.status_code == 403 and "agents may not approve" in refused.text


def test_without_tokens_the_console_acts_as_the_server_and_still_needs_csrf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with console_app(tmp_path, RUNBOOKS, "workers: 0\n", {}, monkeypatch) as app:
        run_id = app.start("gated")
        c = app.client()
        page = c.get(f"/runs/{run_id}")
        assert page.status_code == 200 and "acting as <strong>server-user</strong>" in page.text
        assert c.post(f"/runs/{run_id}/approve", data={"comment": "x"}).status_code == 403
        r = c.post(f"/runs/{run_id}/approve", data={"csrf_token": csrf_of(page.text)})
        assert r.status_code == 303
        assert [e.actor for e in app.events(run_id, "request.approve")] == ["server-user"]
        assert c.get("/login").status_code == 303, "nothing to log in with"


def test_an_expired_session_must_log_in_again(console: ConsoleApp) -> None:
    c = console.client(TOKENS["oncall"])
    sessions = console.app.state.console_sessions
    for session in list(sessions._by_key.values()):
        session.seen = time.time() - 10 * 3600
    assert c.get("/").status_code == 303
