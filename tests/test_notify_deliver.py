"""The deliverer over a real SQLite journal and real HTTP receivers: per-channel progress, retries, expiry, leases.

The kinds table and the rules are pure functions, tested as tables.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness.httpserver import HTTPTestServer, Reply

from runner.notify.config import NotifySettings, Rule, parse_notify, resolve_channels
from runner.notify.deliver import Deliverer, backoff
from runner.notify.message import commands_for
from runner.notify.outbox import event_kind, run_notifications
from runner.plugin import PluginHost
from runner.store.base import Store
from runner.store.records import NewEvent, RunState
from tests.store_contract import ME, alive, new_run


@pytest.mark.parametrize(
    ("type_", "data", "kind"),
    [("run.failed", {}, "failed"), ("run.succeeded", {}, "succeeded"), ("run.cancelled", {}, "cancelled"),
     ("step.waiting", {"kind": "approval"}, "waiting_approval"), ("step.waiting", {"kind": "wait"}, None),
     ("run.waiting", {"kind": "decision"}, "unknown"), ("run.waiting", {"kind": "approval"}, None),
     ("run.paused", {}, None), ("step.finished", {"state": "failed"}, None), ("request.approve", {}, None)],
)  # fmt: skip
def test_which_events_notify(type_: str, data: dict[str, Any], kind: str | None) -> None:
    assert event_kind(type_, data) == kind
    rows = run_notifications("R", 7, [NewEvent("step.started"), NewEvent(type_, "s", data=data)])
    assert [(r.key, r.kind, r.seq) for r in rows] == ([("R:8", kind, 8)] if kind else [])


@pytest.mark.parametrize(
    ("rule", "args", "matches"),
    [({"events": ["failed"]}, ("failed", "db-migrate", None, {}), True),
     ({"events": ["failed"]}, ("succeeded", "db-migrate", None, {}), False),
     ({"events": ["failed"], "runbooks": ["db-*"]}, ("failed", "web-restart", None, {}), False),
     ({"events": ["storm_refused"], "runbooks": ["db-*"]}, ("storm_refused", None, "disk", {}), False),
     ({"events": ["storm_refused"]}, ("storm_refused", None, "disk", {}), True),
     ({"events": ["failed"], "routes": ["*"]}, ("failed", "x", None, {}), False),
     ({"events": ["failed"], "routes": ["disk-*"]}, ("failed", "x", "disk-full", {}), True),
     ({"events": ["failed"], "labels": {"team": "db*"}}, ("failed", "x", "r", {"team": "dba"}), True),
     ({"events": ["failed"], "labels": {"team": "*"}}, ("failed", "x", "r", {}), False)],
)  # fmt: skip
def test_rules(rule: dict[str, Any], args: tuple[Any, ...], matches: bool) -> None:
    assert Rule.model_validate({**rule, "channels": ["c"]}).matches(*args) is matches


def test_commands_and_backoff() -> None:
    assert commands_for("waiting_approval", "R1", "s", None, "runbook --store 'sqlite:////a b.db'") == {
        "approve": "runbook --store 'sqlite:////a b.db' approve R1 --step s",
        "deny": "runbook --store 'sqlite:////a b.db' deny R1 --step s",
        "status": "runbook --store 'sqlite:////a b.db' status R1",
    }
    assert commands_for("unknown", "R1", "s", None, "runbook") == {
        "retry_step": "runbook decide R1 --retry-step s",
        "skip_step": "runbook decide R1 --skip-step s",
        "status": "runbook status R1",
    }
    assert commands_for("failed", "R1", "s", None, "runbook") == {"retry": "runbook retry R1", "status": "runbook status R1"}
    assert commands_for("storm_refused", None, None, "disk", "runbook") == {"decisions": "runbook alerts decisions --route disk"}
    delays = [backoff(n, 5, 60) for n in range(1, 7)]
    assert [round(d / b, 1) <= 1.1 for d, b in zip(delays, [5, 10, 20, 40, 60, 60], strict=True)] == [True] * 6
    assert all(d >= b for d, b in zip(delays, [5, 10, 20, 40, 60, 60], strict=True))


# ---------------------------------------------------------------------- the deliverer over a real journal


@pytest.fixture
def store(tmp_path: Path) -> Any:
    from runbook_sqlite.store import SQLiteStore

    s = SQLiteStore(f"sqlite:///{tmp_path / 'journal.db'}")
    yield s
    s.close()


def settings(channels: dict[str, str], rules: list[dict[str, Any]], **delivery: Any) -> NotifySettings:
    section = {"channels": {name: {"type": "webhook", "url": url} for name, url in channels.items()}, "rules": rules,
               "delivery": {"retry_initial": 30, **delivery}}  # fmt: skip
    host = PluginHost()
    return resolve_channels(parse_notify(section, None, "test"), "test", None, host.notifiers, host.secret_providers)


def failed_run(store: Store) -> str:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, events=[NewEvent("run.failed", "b", data={"reason": "boom"})], run={"state": RunState.FAILED})
    return run.id


def due_now(store: Any) -> None:
    """Time passes: every pending notification's retry falls due."""
    import sqlite3

    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE notifications SET next_at = 0 WHERE state = 'pending'")


def test_a_retry_sends_only_to_the_channels_still_pending(store: Store, http_server: HTTPTestServer) -> None:
    http_server.route("/a", Reply(200))
    http_server.route("/b", Reply(503), Reply(200))
    notify = settings({"a": http_server.url("/a"), "b": http_server.url("/b")}, [{"events": ["failed"], "channels": ["a", "b"]}])
    failed_run(store)
    deliverer = Deliverer(store, notify, holder="d1")
    (first,) = deliverer.deliver_due()
    assert first.state == "pending" and first.channels["a"].state == "sent" and first.channels["b"].state == "pending"
    assert deliverer.deliver_due() == [], "b's retry is not due yet"
    due_now(store)
    (second,) = deliverer.deliver_due()
    assert second.state == "delivered" and second.channels["b"].attempts == 2 and second.channels["a"].attempts == 1
    assert len(http_server.requests_to("/a")) == 1 and len(http_server.requests_to("/b")) == 2


def test_a_final_refusal_and_an_expiry_fail_a_notification(store: Store, http_server: HTTPTestServer) -> None:
    http_server.route("/gone", Reply(410, body="gone"))
    http_server.route("/busy", Reply(503))
    notify = settings({"gone": http_server.url("/gone"), "busy": http_server.url("/busy")},
                      [{"events": ["failed"], "channels": ["gone", "busy"]}], expire_after=0.5)  # fmt: skip
    failed_run(store)
    deliverer = Deliverer(store, notify, holder="d1")
    (first,) = deliverer.deliver_due()
    assert first.state == "pending" and first.channels["gone"].state == "failed" and first.channels["gone"].detail == "HTTP 410: gone"
    time.sleep(0.6)
    due_now(store)
    (last,) = deliverer.deliver_due()
    assert last.state == "failed" and last.channels["busy"].detail.startswith("expired after 0.5s without delivery (last: HTTP 503")
    assert len(http_server.requests_to("/gone")) == 1 and len(http_server.requests_to("/busy")) == 1, "an expired one is not sent"
    (row,) = store.list_notifications()
    assert row.state == "failed" and row.finished_at is not None and "gone: HTTP 410: gone" in row.last_error


def test_a_slow_receiver_keeps_its_claim_and_no_one_else_sends(store: Store, http_server: HTTPTestServer) -> None:
    http_server.route("/slow", Reply(200, delay=6))
    notify = settings({"slow": http_server.url("/slow")}, [{"events": ["failed"], "channels": ["slow"]}])
    failed_run(store)
    first = Deliverer(store, notify, holder="d1", ttl=2)  # renewed every 0.7 s while the 6 s send runs
    other = Deliverer(store, notify, holder="d2", ttl=2)
    (claimed,) = store.claim_notifications("d1", 2)
    reports: list[Any] = []
    t = threading.Thread(target=lambda: reports.append(first.process(claimed)))
    t.start()
    stolen = []
    while t.is_alive():
        stolen += other.deliver_due()
        time.sleep(0.1)
    t.join()
    assert stolen == [] and [r.state for r in reports] == ["delivered"]
    assert len(http_server.requests_to("/slow")) == 1


def test_a_deliverer_that_lost_its_claim_saves_nothing(store: Store, http_server: HTTPTestServer) -> None:
    http_server.route("/a", Reply(200))
    notify = settings({"a": http_server.url("/a")}, [{"events": ["failed"], "channels": ["a"]}])
    failed_run(store)
    (stale,) = store.claim_notifications("dead", 0.1)
    time.sleep(0.2)
    (report,) = Deliverer(store, notify, holder="alive").deliver_due()
    assert report.state == "delivered"
    assert Deliverer(store, notify, holder="dead").process(stale).state == "lost"
    assert len(http_server.requests_to("/a")) == 1, "the stale claim sent nothing"


def test_storm_notifications_of_one_route_are_one_message_per_window(store: Store, http_server: HTTPTestServer) -> None:
    from runner.alerts import NewDecision

    http_server.route("/a", Reply(200))
    notify = settings({"a": http_server.url("/a")}, [{"events": ["storm_refused"], "channels": ["a"]}])
    store.record_decisions([NewDecision("d", i, "generic", "over_budget", route="disk" if i < 3 else "cpu") for i in range(4)])
    reports = Deliverer(store, notify, holder="d1").deliver_due(limit=10)
    assert sorted(r.state for r in reports) == ["delivered", "delivered", "skipped", "skipped"]
    assert sorted(r.json()["route"] for r in http_server.requests_to("/a")) == ["cpu", "disk"]
    assert all("within delivery.route_quiet" in r.note for r in reports if r.state == "skipped")
