"""Prometheus Alertmanager webhook (``webhook_configs``, payload version 4) and its auth (bearer or basic)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runbook_alerts._auth import check_basic, check_bearer
from runner.alerts import Alert, AuthError, label_fingerprint
from runner.errors import UsageError

__all__ = ["AlertmanagerSource", "alerts_from_group"]

_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "not set" (firing alerts carry it as endsAt)


class BasicAuth(BaseModel):
    """``basic: {username, password: env:NAME}``."""

    model_config = ConfigDict(extra="forbid")

    username: str
    password: str = Field(description="secret reference")


class AlertmanagerAuth(BaseModel):
    """``sources.alertmanager.auth``: a bearer token (``http_config.authorization``) and/or basic auth."""

    model_config = ConfigDict(extra="forbid")

    bearer: str | list[str] | None = Field(default=None, description="secret reference(s); several during rotation")
    basic: BasicAuth | None = None

    @model_validator(mode="after")
    def _some(self) -> AlertmanagerAuth:
        if self.bearer is None and self.basic is None:
            raise ValueError("give 'bearer' (a secret reference) and/or 'basic: {username, password}'")
        return self


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def _time(value: Any) -> str | None:
    return value if isinstance(value, str) and value and value != _ZERO_TIME else None


def alerts_from_group(source: str, body: Any) -> list[Alert]:
    """Alerts of an Alertmanager-shaped group payload (also what Grafana sends); each keeps its own status."""
    if not isinstance(body, dict) or not isinstance(body.get("alerts"), list):
        raise UsageError(f"not a {source} webhook payload: expected a JSON object with an 'alerts' list")
    out = []
    for i, item in enumerate(body["alerts"]):
        if not isinstance(item, dict):
            raise UsageError(f"{source} payload: alerts[{i}] is not an object")
        status = item.get("status") or body.get("status")
        if status not in ("firing", "resolved"):
            raise UsageError(f"{source} payload: alerts[{i}].status is {status!r}; expected 'firing' or 'resolved'")
        labels = _text_map(item.get("labels"))
        out.append(Alert(source=source, status=status, labels=labels, annotations=_text_map(item.get("annotations")),
                         fingerprint=str(item.get("fingerprint") or label_fingerprint(labels)),
                         starts_at=_time(item.get("startsAt")), ends_at=_time(item.get("endsAt")), raw=item))  # fmt: skip
    return out


class GroupPayload:
    """Sources whose payload is an Alertmanager-style group (Alertmanager itself, Grafana): how to read it."""

    name: str

    def normalize(self, body: Any, headers: Mapping[str, str]) -> list[Alert]:
        """Every alert of the group, each with its own status (a firing group can hold a resolved alert)."""
        return alerts_from_group(self.name, body)

    def delivery_id(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel | None) -> str | None:
        """No delivery id is sent: retries repeat the identical body, so its hash is the id."""
        return None

    def group_info(self, body: Any) -> dict[str, Any]:
        """``truncated``: alerts left out of the group (``max_alerts``), the group key and the receiver."""
        return {"truncated": int(body.get("truncatedAlerts") or 0), "group_key": body.get("groupKey"), "receiver": body.get("receiver")}


class AlertmanagerSource(GroupPayload):
    """``POST /v1/alerts/alertmanager``."""

    name = "alertmanager"
    Auth: ClassVar[type[BaseModel]] = AlertmanagerAuth
    secret_fields: ClassVar[frozenset[str]] = frozenset({"bearer", "basic.password"})
    methods: ClassVar[tuple[str, ...]] = ("POST",)

    def verify(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel) -> None:
        """Accept the configured bearer token or basic credentials."""
        assert isinstance(config, AlertmanagerAuth)
        what = "alertmanager webhook"
        ok = False
        if config.bearer is not None:
            tokens = [config.bearer] if isinstance(config.bearer, str) else config.bearer
            ok |= check_bearer(headers, tokens, what=what)
        if config.basic is not None:
            ok |= check_basic(headers, config.basic.username, config.basic.password, what=what)
        if not ok:
            raise AuthError(f"{what}: the credentials in the Authorization header are not accepted", status=403)
