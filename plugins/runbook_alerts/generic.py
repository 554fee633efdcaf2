"""A generic signed webhook for any sender that can compute an HMAC.

The sender signs ``timestamp + "." + delivery + "." + body`` with HMAC-SHA256 and sends::

    X-Runbook-Timestamp: 1795312345              (unix seconds)
    X-Runbook-Delivery:  3f0c9e5e-...           (unique per delivery; retries repeat it; required)
    X-Runbook-Signature: sha256=<hex>           (several comma-separated during rotation)

The delivery id is signed, so a captured delivery cannot be replayed as a new one under another id: inside
the replay window a replay is the same delivery (the first answer comes back, nothing is started again), and
outside it the timestamp is refused. Payload: ``{"alerts": [ALERT, ...]}`` or one ``ALERT``, where
``ALERT`` is ``{"status": "firing"|"resolved", "labels": {...}, "annotations": {...}, "fingerprint"?,
"starts_at"?, "ends_at"?}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from runbook_alerts._auth import check_timestamp, header, hex_hmac, matches_any
from runner.alerts import Alert, AuthError, label_fingerprint
from runner.durations import Duration
from runner.errors import UsageError

__all__ = ["GenericSource", "sign", "signed_message"]


class GenericAuth(BaseModel):
    """``sources.generic.auth``."""

    model_config = ConfigDict(extra="forbid")

    hmac_secret: str | list[str] = Field(description="secret reference(s); several during rotation")
    signature_header: str = "X-Runbook-Signature"
    timestamp_header: str = "X-Runbook-Timestamp"
    delivery_header: str = "X-Runbook-Delivery"
    max_skew: Duration = Field(default=300.0, description="replay window: how far the signed timestamp may be from now")


class GenericAlert(BaseModel):
    """One alert as a generic sender writes it."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    fingerprint: str | None = Field(default=None, max_length=200)
    starts_at: datetime | None = None
    ends_at: datetime | None = None


def signed_message(timestamp: str, delivery: str, body: bytes) -> bytes:
    """What is signed: ``timestamp.delivery.body``."""
    return f"{timestamp}.{delivery}.".encode() + body


def sign(secret: str, timestamp: str, delivery: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` as ``delivery`` (for senders and tests)."""
    return "sha256=" + hex_hmac(secret, signed_message(timestamp, delivery, body))


class GenericSource:
    """``POST /v1/alerts/generic``."""

    name = "generic"
    Auth: ClassVar[type[BaseModel]] = GenericAuth
    secret_fields: ClassVar[frozenset[str]] = frozenset({"hmac_secret"})
    methods: ClassVar[tuple[str, ...]] = ("POST",)
    delivery_header = "X-Runbook-Delivery"

    def verify(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel) -> None:
        """Check the timestamp is inside the replay window and the signature covers ``timestamp.delivery.body``."""
        assert isinstance(config, GenericAuth)
        what = "generic webhook"
        stamp = header(headers, config.timestamp_header)
        check_timestamp(stamp, config.max_skew, what=what, header_name=config.timestamp_header)
        delivery = header(headers, config.delivery_header)
        if not delivery:
            raise AuthError(f"{what}: missing {config.delivery_header} header (a unique id per delivery, signed with it)", status=401)
        if "." in delivery or len(delivery) > 200:  # a dot would make timestamp.delivery.body ambiguous
            raise AuthError(f"{what}: {config.delivery_header} must be at most 200 characters without '.' (e.g. a UUID)", status=401)
        sig = header(headers, config.signature_header)
        if not sig:
            raise AuthError(f"{what}: missing {config.signature_header} header", status=401)
        offered = [s.strip().removeprefix("sha256=").lower() for s in sig.split(",") if s.strip()]
        secrets = [config.hmac_secret] if isinstance(config.hmac_secret, str) else config.hmac_secret
        expected = [hex_hmac(secret, signed_message(stamp or "", delivery, raw_body)) for secret in secrets]
        if not matches_any(offered, expected):
            raise AuthError(f"{what}: {config.signature_header} does not match timestamp.delivery.body", status=403)

    def normalize(self, body: Any, headers: Mapping[str, str]) -> list[Alert]:
        """``{"alerts": [...]}`` or a single alert object."""
        items = body.get("alerts") if isinstance(body, dict) and "alerts" in body else [body]
        if not isinstance(items, list):
            raise UsageError("generic webhook payload: 'alerts' must be a list")
        out = []
        for i, item in enumerate(items):
            try:
                parsed = GenericAlert.model_validate(item)
            except PydanticValidationError as exc:
                err = exc.errors(include_url=False)[0]
                loc = ".".join(str(p) for p in err["loc"])
                raise UsageError(f"generic webhook payload: alerts[{i}]{'.' + loc if loc else ''}: {err['msg']}") from None
            out.append(Alert(source=self.name, status=parsed.status, labels=parsed.labels, annotations=parsed.annotations,
                             fingerprint=parsed.fingerprint or label_fingerprint(parsed.labels), starts_at=parsed.starts_at,
                             ends_at=parsed.ends_at, raw=item))  # fmt: skip
        return out

    def delivery_id(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel | None) -> str | None:
        """The delivery id header (``delivery_header``; retries repeat it)."""
        name = config.delivery_header if isinstance(config, GenericAuth) else self.delivery_header
        return header(headers, name)

    def group_info(self, body: Any) -> dict[str, Any]:
        """Nothing beyond the alerts."""
        return {}
