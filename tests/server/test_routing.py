"""Routing matchers, keys and the alert sources' normalisation and signature checks (in process, no server)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from runbook_alerts.alertmanager import AlertmanagerSource
from runbook_alerts.generic import GenericAuth, GenericSource, sign
from runbook_alerts.grafana import GrafanaAuth, GrafanaSource
from runbook_alerts.pagerduty import PagerDutyAuth, PagerDutySource
from runbook_server.limits import json_depth
from runbook_server.routing import compile_matcher, run_key

from runner.alerts import AuthError
from runner.errors import UsageError
from tests.server.alertkit import captures, hex_hmac, pagerduty_event


@pytest.mark.parametrize(
    ("match", "labels", "expected"),
    [
        ({"alertname": "DiskFull"}, {"alertname": "DiskFull"}, True),
        ({"alertname": "=DiskFull"}, {"alertname": "DiskFull"}, True),
        ({"alertname": "DiskFull"}, {"alertname": "DiskFullX"}, False),
        ({"severity": "=~critical|page"}, {"severity": "page"}, True),
        ({"severity": "=~critical|page"}, {"severity": "paged"}, False),
        ({"severity": "!~warn.*"}, {"severity": "critical"}, True),
        ({"severity": "!~warn.*"}, {"severity": "warning"}, False),
        ({"team": "!=db"}, {}, True),
        ({"team": "!=db"}, {"team": "db"}, False),
        ({"team": ""}, {}, True),
        ({"a": "1", "b": "=~x+"}, {"a": "1", "b": "xxx"}, True),
        ({"a": "1", "b": "=~x+"}, {"a": "1", "b": "xy"}, False),
    ],
    ids=[
        "eq",
        "eq-prefix",
        "eq-miss",
        "re",
        "re-anchored",
        "nre",
        "nre-miss",
        "ne-missing",
        "ne-miss",
        "empty-is-missing",
        "all",
        "all-miss",
    ],
)
def test_label_matchers(match: dict[str, str], labels: dict[str, str], expected: bool) -> None:
    assert compile_matcher(match)(labels) is expected


def test_run_key_is_stable_and_separates_episodes() -> None:
    a = run_key("disk", "am:fp", "fp@2026-11-22T01:00:00+00:00")
    assert a == run_key("disk", "am:fp", "fp@2026-11-22T01:00:00+00:00")
    assert a != run_key("disk", "am:fp", "fp@2026-11-22T02:00:00+00:00")
    assert a != run_key("other", "am:fp", "fp@2026-11-22T01:00:00+00:00")
    assert a.startswith("alert:disk:")


def test_captured_groups_normalise_with_each_alerts_own_status() -> None:
    src = AlertmanagerSource()
    mixed = json.loads(captures()[5]["raw_body"])
    assert mixed["status"] == "firing"
    alerts = src.normalize(mixed, {})
    assert [(a.status, a.labels["instance"]) for a in alerts] == [("resolved", "db1:9100"), ("firing", "db2:9100")]
    assert alerts[1].ends_at is None and alerts[0].ends_at is not None
    assert alerts[1].starts_at is not None and alerts[1].starts_at.microsecond == 921349  # amtool's 9 fractional digits
    assert src.group_info(json.loads(captures()[0]["raw_body"]))["truncated"] == 1


@pytest.mark.parametrize(
    ("source", "body", "needle"),
    [
        (AlertmanagerSource(), {"alerts": "no"}, "'alerts' list"),
        (AlertmanagerSource(), {"alerts": [{"status": "pending", "labels": {}}]}, "alerts[0].status"),
        (GenericSource(), {"alerts": [{"labels": {}}]}, "alerts[0].labels"),
        (GenericSource(), {"alerts": [{"labels": {"a": "b"}, "colour": 1}]}, "colour"),
        (PagerDutySource(), {"messages": []}, "PagerDuty V3"),
    ],
    ids=["am-no-list", "am-bad-status", "generic-no-labels", "generic-unknown-key", "pd-v2-shape"],
)
def test_payloads_of_the_wrong_shape_are_refused(source: Any, body: Any, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        source.normalize(body, {})
    assert needle in str(info.value)


def test_pagerduty_events_other_than_incidents_carry_no_alert() -> None:
    src = PagerDutySource()
    body = json.loads(pagerduty_event("incident.triggered", "PX1"))
    body["event"]["resource_type"] = "service"
    assert src.normalize(body, {}) == []
    alert = src.normalize(json.loads(pagerduty_event("incident.resolved", "PX1")), {})[0]
    assert alert.status == "resolved" and alert.fingerprint == "PX1" and alert.labels["service"] == "db"


def test_signature_schemes_match_the_reference_verifiers() -> None:
    body = '{"event":{"id":"5ac64822","event_type":"incident.triggered","data":{"title":"Disk ünïcode"}}}'.encode()
    pd, cfg = PagerDutySource(), PagerDutyAuth(hmac_secrets=["old-secret"])
    pd.verify(body, {"x-pagerduty-signature": f"v1={hex_hmac('new-secret', body)},v1={hex_hmac('old-secret', body)}"}, cfg)
    with pytest.raises(AuthError):
        pd.verify(body + b" ", {"x-pagerduty-signature": f"v1={hex_hmac('old-secret', body)}"}, cfg)
    with pytest.raises(AuthError):
        pd.verify(body, {"x-pagerduty-signature": f"v0={hex_hmac('old-secret', body)}"}, cfg)
    gf = GrafanaSource()
    gf.verify(body, {"x-grafana-alerting-signature": hex_hmac("g", body)}, GrafanaAuth(hmac_secret="g"))
    with pytest.raises(AuthError) as info:
        gf.verify(body, {"x-grafana-alerting-signature": hex_hmac("g", body)}, GrafanaAuth(hmac_secret="g", timestamp_header="X-Ts"))
    assert info.value.status == 401 and "X-Ts" in str(info.value)
    gen, gcfg = GenericSource(), GenericAuth(hmac_secret=["a-secret", "b-secret"])
    ts = str(int(time.time()))

    def signed(stamp: str, delivery: str, signature: str) -> dict[str, str]:
        return {"x-runbook-timestamp": stamp, "x-runbook-delivery": delivery, "x-runbook-signature": signature}

    good = sign("b-secret", ts, "d-1", body)
    assert good == "sha256=" + hex_hmac("b-secret", f"{ts}.d-1.".encode() + body), "the documented string: timestamp.delivery.body"
    gen.verify(body, signed(ts, "d-1", good), gcfg)
    for what, headers, status in [
        ("the timestamp is signed", signed(str(int(ts) - 1), "d-1", good), 403),
        ("the delivery id is signed", signed(ts, "d-2", good), 403),
        ("the delivery id is required", {"x-runbook-timestamp": ts, "x-runbook-signature": good}, 401),
        ("a dot would make the signed string ambiguous", signed(ts, "d.1", sign("b-secret", ts, "d.1", body)), 401),
    ]:
        with pytest.raises(AuthError) as info:
            gen.verify(body, headers, gcfg)
        assert info.value.status == status, what


def test_json_depth_counts_without_recursion() -> None:
    assert json_depth({"a": [1, {"b": 2}]}, 10) == 3
    assert json_depth(1, 10) == 0
    deep: Any = []
    for _ in range(10000):
        deep = [deep]
    assert json_depth(deep, 32) == 33
