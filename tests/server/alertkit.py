"""Building and signing alert deliveries the way each sender does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

from tests.server.serverkit import DATA, dumps

__all__ = [
    "am_alert",
    "am_body",
    "basic",
    "captures",
    "generic_headers",
    "grafana_headers",
    "hex_hmac",
    "pagerduty_event",
    "pagerduty_headers",
]


def hex_hmac(secret: str, message: bytes) -> str:
    """hex(HMAC-SHA256)."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def basic(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def captures() -> list[dict[str, Any]]:
    """The deliveries a real Alertmanager sent (``tests/data/alertmanager-webhook.json``)."""
    return json.loads(Path(DATA / "alertmanager-webhook.json").read_text())["captures"]  # type: ignore[no-any-return]


def am_alert(labels: dict[str, str], *, status: str = "firing", starts: str = "2026-11-22T01:00:00.123456789Z",
             fingerprint: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One alert as Alertmanager writes it."""
    fp = fingerprint or hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
    return {"status": status, "labels": labels, "annotations": {"summary": "test"}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-22T02:00:00Z", "generatorURL": "", "fingerprint": fp}  # fmt: skip


def am_body(*alerts: dict[str, Any], truncated: int = 0) -> bytes:
    """A group notification (status: firing if any alert fires)."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return dumps({"receiver": "rb", "status": status, "alerts": list(alerts), "groupLabels": {}, "commonLabels": {},
                  "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093", "version": "4", "groupKey": "{}:{}",
                  "truncatedAlerts": truncated})  # fmt: skip


def grafana_headers(secret: str, body: bytes, *, ts: int | None = None) -> dict[str, str]:
    """Grafana's signature over ``ts:body``."""
    stamp = str(int(time.time()) if ts is None else ts)
    return {"X-Grafana-Alerting-Timestamp": stamp, "X-Grafana-Alerting-Signature": hex_hmac(secret, f"{stamp}:".encode() + body),
            "content-type": "application/json"}  # fmt: skip


def generic_headers(secret: str, body: bytes, *, ts: int | None = None, delivery: str | None = None) -> dict[str, str]:
    """The generic scheme: ``sha256=hex(HMAC(timestamp.delivery.body))``."""
    stamp = str(int(time.time()) if ts is None else ts)
    delivery = delivery or str(uuid.uuid4())
    return {"X-Runbook-Timestamp": stamp, "X-Runbook-Signature": "sha256=" + hex_hmac(secret, f"{stamp}.{delivery}.".encode() + body),
            "X-Runbook-Delivery": delivery, "content-type": "application/json"}  # fmt: skip


def pagerduty_headers(secret: str, body: bytes, **extra: str) -> dict[str, str]:
    """PagerDuty's ``X-PagerDuty-Signature: v1=hex(HMAC(body))``."""
    return {"X-PagerDuty-Signature": f"v1={hex_hmac(secret, body)}", "content-type": "application/json; charset=utf-8", **extra}


def pagerduty_event(event_type: str, incident: str, *, service: str = "db", title: str = "Disk full",
                    occurred: str = "2026-11-22T01:00:00Z") -> bytes:  # fmt: skip
    """A V3 webhook body for an incident event."""
    return dumps({"event": {"id": str(uuid.uuid4()), "event_type": event_type, "resource_type": "incident",
                            "occurred_at": occurred, "agent": None, "client": None,
                            "data": {"id": incident, "type": "incident", "title": title, "status": event_type.split(".")[1],
                                     "urgency": "high", "created_at": "2026-11-22T00:59:00Z",
                                     "service": {"id": "PSVC1", "summary": service}, "html_url": "https://pd.example/i/1"}}})  # fmt: skip
