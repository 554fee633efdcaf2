"""Grafana alerting webhook contact point: Alertmanager-shaped payload, HMAC-SHA256 signature.

Grafana signs ``hex(HMAC-SHA256(secret, body))``, or ``hex(HMAC-SHA256(secret, timestamp ":" body))`` when a
timestamp header is configured (grafana/alerting ``http/hmac.go``). Both header names are configurable in the
contact point; the defaults here follow Grafana's UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runbook_alerts._auth import check_bearer, check_timestamp, header, hex_hmac, matches_any
from runbook_alerts.alertmanager import GroupPayload
from runner.alerts import AuthError
from runner.durations import Duration

__all__ = ["GrafanaSource"]


class GrafanaAuth(BaseModel):
    """``sources.grafana.auth``: HMAC (recommended) and/or a bearer token (``authorization_credentials``)."""

    model_config = ConfigDict(extra="forbid")

    hmac_secret: str | list[str] | None = Field(default=None, description="secret reference(s)")
    signature_header: str = "X-Grafana-Alerting-Signature"
    timestamp_header: str | None = Field(default=None, description="set it when the contact point sends one: the timestamp is signed too")
    max_skew: Duration = Field(default=300.0, description="replay window for the signed timestamp")
    bearer: str | list[str] | None = Field(default=None, description="secret reference(s)")

    @model_validator(mode="after")
    def _some(self) -> GrafanaAuth:
        if self.hmac_secret is None and self.bearer is None:
            raise ValueError("give 'hmac_secret' and/or 'bearer' (secret references)")
        return self


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


class GrafanaSource(GroupPayload):
    """``POST|PUT /v1/alerts/grafana``."""

    name = "grafana"
    Auth: ClassVar[type[BaseModel]] = GrafanaAuth
    secret_fields: ClassVar[frozenset[str]] = frozenset({"hmac_secret", "bearer"})
    methods: ClassVar[tuple[str, ...]] = ("POST", "PUT")

    def verify(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel) -> None:
        """Check the signature (and the timestamp's age) and/or the bearer token."""
        assert isinstance(config, GrafanaAuth)
        what = "grafana webhook"
        if config.bearer is not None and not check_bearer(headers, _as_list(config.bearer), what=what):
            raise AuthError(f"{what}: the bearer token is not accepted", status=403)
        if config.hmac_secret is None:
            return
        signature = header(headers, config.signature_header)
        if not signature:
            raise AuthError(f"{what}: missing {config.signature_header} header", status=401)
        message = raw_body
        if config.timestamp_header:
            stamp = header(headers, config.timestamp_header)
            check_timestamp(stamp, config.max_skew, what=what, header_name=config.timestamp_header)
            message = f"{stamp}:".encode() + raw_body
        expected = [hex_hmac(secret, message) for secret in _as_list(config.hmac_secret)]
        if not matches_any([signature.lower()], expected):
            raise AuthError(f"{what}: {config.signature_header} does not match the body", status=403)
