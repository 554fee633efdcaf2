"""PagerDuty V3 webhook subscriptions: incident events, ``X-PagerDuty-Signature`` (``v1=`` HMAC-SHA256).

PagerDuty signs the raw body with each of the subscription's secrets and sends every signature
(``v1=<hex>,v1=<hex>`` during rotation). No timestamp is signed: replays are caught by the delivery id,
which is the event's ``event.id`` from the signed body (never the unsigned ``X-Webhook-Id`` header, which a
replay could change), and which the server de-duplicates.

Episodes: an incident's firing episode starts when it is triggered (``created_at``) or reopened (the reopen
event's ``occurred_at``); every other incident event belongs to the first episode, so it starts a run only if
that episode has none yet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from runbook_alerts._auth import header, hex_hmac, matches_any
from runner.alerts import Alert, AuthError
from runner.errors import UsageError

__all__ = ["PagerDutySource"]

_RESOLVED = {"incident.resolved"}
_REOPENED = {"incident.reopened"}


class PagerDutyAuth(BaseModel):
    """``sources.pagerduty.auth``: the subscription's signing secrets."""

    model_config = ConfigDict(extra="forbid")

    hmac_secrets: list[str] = Field(min_length=1, description="secret references; any one matching signature is accepted")


def _name(obj: Any) -> str:
    return str(obj.get("summary") or obj.get("name") or obj.get("id") or "") if isinstance(obj, dict) else ""


class PagerDutySource:
    """``POST /v1/alerts/pagerduty``."""

    name = "pagerduty"
    Auth: ClassVar[type[BaseModel]] = PagerDutyAuth
    secret_fields: ClassVar[frozenset[str]] = frozenset({"hmac_secrets"})
    methods: ClassVar[tuple[str, ...]] = ("POST",)

    def verify(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel) -> None:
        """Accept if any ``v1=`` signature matches any configured secret."""
        assert isinstance(config, PagerDutyAuth)
        sig = header(headers, "x-pagerduty-signature")
        if not sig:
            raise AuthError("pagerduty webhook: missing X-PagerDuty-Signature header", status=401)
        offered = [s.strip()[3:].lower() for s in sig.split(",") if s.strip().startswith("v1=")]
        expected = [hex_hmac(secret, raw_body) for secret in config.hmac_secrets]
        if not offered or not matches_any(offered, expected):
            raise AuthError("pagerduty webhook: X-PagerDuty-Signature does not match the body", status=403)

    def normalize(self, body: Any, headers: Mapping[str, str]) -> list[Alert]:
        """An incident event becomes one alert (fingerprint: the incident id); other events none."""
        event = body.get("event") if isinstance(body, dict) else None
        if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
            raise UsageError('not a PagerDuty V3 webhook payload: expected {"event": {"event_type": ..., "data": ...}}')
        data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
        if event.get("resource_type", "incident") != "incident" or not event["event_type"].startswith("incident."):
            return []
        labels = {"event_type": event["event_type"], "incident_id": str(data.get("id", "")), "service": _name(data.get("service")),
                  "urgency": str(data.get("urgency") or ""), "priority": _name(data.get("priority")),
                  "incident_status": str(data.get("status") or ""), "incident_key": str(data.get("incident_key") or "")}  # fmt: skip
        labels = {k: v for k, v in labels.items() if v}
        annotations = {k: str(data[k]) for k in ("title", "html_url", "summary") if data.get(k)}
        status = "resolved" if event["event_type"] in _RESOLVED or data.get("status") == "resolved" else "firing"
        reopened = event["event_type"] in _REOPENED and event.get("occurred_at")
        return [Alert(source=self.name, status=status, labels=labels, annotations=annotations,
                      fingerprint=str(data.get("id") or event.get("id")), starts_at=event["occurred_at"] if reopened else data.get("created_at"),
                      ends_at=event.get("occurred_at") if status == "resolved" else None, raw=event)]  # fmt: skip

    def delivery_id(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel | None) -> str | None:
        """``event.id`` from the signed body (retries repeat it; a replay cannot change it); None: the body hash."""
        try:
            event = json.loads(raw_body).get("event")
        except (ValueError, AttributeError, RecursionError):
            return None
        event_id = event.get("id") if isinstance(event, dict) else None
        return f"event:{event_id}" if isinstance(event_id, str) and 0 < len(event_id) <= 200 else None

    def group_info(self, body: Any) -> dict[str, Any]:
        """The event id and type."""
        event = body.get("event") if isinstance(body, dict) else {}
        return {"event_id": (event or {}).get("id"), "event_type": (event or {}).get("event_type")}
