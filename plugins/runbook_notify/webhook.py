"""``type: webhook``: the notification as JSON, HMAC-signed the way the generic alert source verifies deliveries.

Headers (names configurable)::

    X-Runbook-Delivery:  01JABC...:7:ops-hook     (notification key and channel; the same on every retry)
    X-Runbook-Timestamp: 1795312345                (unix seconds)
    X-Runbook-Signature: sha256=<hex>              (HMAC-SHA256 of ``timestamp.delivery.body``, with hmac_secret)
    X-Runbook-Event:     waiting_approval

A receiver verifies exactly like ``runbook serve`` verifies ``/v1/alerts/generic`` (``runbook_alerts.generic``):
recompute the HMAC over the raw body, check the timestamp is recent, and de-duplicate on the delivery id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runbook_notify._http import HttpOptions, post
from runner.notify.channel import Message

__all__ = ["WebhookConfig", "WebhookNotifier", "sign"]


class WebhookConfig(HttpOptions):
    """A ``webhook`` channel."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="where to POST (http:// or https://)")
    hmac_secret: str | None = Field(default=None, description="secret reference; signs every delivery")
    bearer_token: str | None = Field(default=None, description="secret reference; sent as Authorization: Bearer")
    headers: dict[str, str] = Field(default_factory=dict, description="more request headers (not secrets)")
    signature_header: str = "X-Runbook-Signature"
    timestamp_header: str = "X-Runbook-Timestamp"
    delivery_header: str = "X-Runbook-Delivery"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


def sign(secret: str, timestamp: str, delivery: str, body: bytes) -> str:
    """The signature header value: ``sha256=hex(HMAC-SHA256(secret, timestamp.delivery.body))``."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.{delivery}.".encode() + body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """POSTs the notification's JSON document (``Message.as_json``)."""

    name = "webhook"
    Config: ClassVar[type[BaseModel]] = WebhookConfig
    secret_fields: ClassVar[frozenset[str]] = frozenset({"hmac_secret", "bearer_token"})

    def send(self, message: Message, config: Any, *, delivery_id: str, timeout: float) -> str:
        """Sign and POST the message; see :func:`runbook_notify._http.post` for what is retried."""
        from runner._version import __version__

        assert isinstance(config, WebhookConfig)
        body = json.dumps(message.as_json(), separators=(",", ":"), ensure_ascii=False).encode()
        stamp = str(int(time.time()))
        headers = {**config.headers, "Content-Type": "application/json", "User-Agent": f"runbook/{__version__}",
                   config.delivery_header: delivery_id, config.timestamp_header: stamp, "X-Runbook-Event": message.kind}  # fmt: skip
        if config.hmac_secret:
            headers[config.signature_header] = sign(config.hmac_secret, stamp, delivery_id, body)
        if config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        return post(config.url, body, headers, config, timeout)
