"""Config models of the ``http`` step type (no httpx here: loading a runbook must stay cheap)."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from runner.durations import Duration
from runner.steptypes import StepConfig, Templated, is_template

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "DEFAULT_TIMEOUT", "BasicAuth", "HttpAuth", "HttpConfig", "HttpRetry", "HttpTimeout"]

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
_METHOD = re.compile(r"^[A-Z]{1,20}$")
_NonNegInt = Annotated[int, Field(ge=0)]


def _rendered(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("rendered"))


class HttpTimeout(StepConfig):
    """Separate connect and read timeouts (``timeout: {connect: 2s, read: 30s}``)."""

    connect: Templated[Duration] = Field(default=DEFAULT_TIMEOUT, description="seconds to establish the connection")
    read: Templated[Duration] = Field(default=DEFAULT_TIMEOUT, description="seconds to wait for each chunk of the response")


class BasicAuth(StepConfig):
    """HTTP basic credentials; the password is normally ``{{ secrets.x }}``."""

    username: str
    password: str


class HttpAuth(StepConfig):
    """``auth: {bearer: TOKEN}`` or ``auth: {basic: {username, password}}``."""

    bearer: str | None = Field(default=None, description="sent as `Authorization: Bearer TOKEN`")
    basic: BasicAuth | None = Field(default=None, description="sent as `Authorization: Basic ...`")

    @model_validator(mode="after")
    def _one(self) -> HttpAuth:
        if (self.bearer is None) == (self.basic is None):
            raise ValueError("give exactly one of 'bearer' or 'basic'")
        return self


class HttpRetry(StepConfig):
    """Retries inside one action on connection errors and retryable statuses (opt-in)."""

    attempts: Templated[Annotated[int, Field(ge=1, le=20)]] = Field(default=3, description="tries in all, the first included")
    delay: Templated[Duration] = Field(default=1.0, description="wait before the first retry")
    backoff: Templated[Annotated[float, Field(ge=1.0, le=10.0)]] = Field(default=2.0, description="delay multiplier per retry")
    max_delay: Templated[Duration] = Field(default=30.0, description="cap on any wait, a server's Retry-After included")
    statuses: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504], description="statuses that are retried")


class HttpConfig(StepConfig):
    """Config of an ``http`` step (``http: URL`` is short for ``http: {url: URL}``)."""

    method: str = Field(default="GET", description="HTTP method")
    url: str = Field(description="http:// or https:// URL; never put a secret in it")
    headers: dict[str, str] = Field(default_factory=dict, description="request headers")
    query: dict[str, Any] = Field(default_factory=dict, description="query parameters added to the URL")
    json_: Any = Field(default=None, alias="json", description="JSON request body")
    form: dict[str, str] | None = Field(default=None, description="form-encoded request body")
    body: str | None = Field(default=None, description="text request body")
    auth: HttpAuth | None = Field(default=None, description="bearer or basic credentials")
    timeout: Templated[Duration] | HttpTimeout = Field(default=DEFAULT_TIMEOUT, description="seconds, or {connect, read}")
    follow_redirects: Templated[bool] = Field(default=False, description="follow 3xx responses")
    max_response_bytes: Templated[_NonNegInt] = Field(default=DEFAULT_MAX_RESPONSE_BYTES, description="bytes of body kept")
    allowed_hosts: list[str] | None = Field(default=None, description="hosts this step may reach ('*.example.com' allowed)")
    retry_on: HttpRetry | None = Field(default=None, description="retry connection errors, 5xx and 429 inside the action")
    verify_tls: Templated[bool] = Field(default=True, description="verify the server's TLS certificate")
    ca_bundle: str | None = Field(default=None, description="PEM file of CA certificates to trust")

    @field_validator("method")
    @classmethod
    def _method(cls, value: str, info: ValidationInfo) -> str:
        if is_template(value) and not _rendered(info):
            return value
        upper = value.strip().upper()
        if not _METHOD.match(upper):
            raise ValueError(f"expected an HTTP method such as GET or POST, got {value!r}")
        return upper

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        if is_template(value) and not _rendered(info):
            if not value.lstrip().startswith(("{{", "http://", "https://")):
                raise ValueError("expected a URL starting with http:// or https://")
            return value
        if not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(f"expected a URL starting with http:// or https://, got {value[:80]!r}")
        try:
            host = urlsplit(value.strip()).hostname
        except ValueError as exc:
            raise ValueError(f"invalid URL: {exc}") from None
        if not host:
            raise ValueError(f"expected a URL with a host name, got {value[:80]!r}")
        return value.strip()

    @model_validator(mode="after")
    def _one_body(self) -> HttpConfig:
        given = [name for name, value in (("json", self.json_), ("form", self.form), ("body", self.body)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one request body: 'json', 'form' or 'body' (got {', '.join(given)})")
        return self

    @model_validator(mode="after")
    def _positive_timeout(self) -> HttpConfig:
        values = (self.timeout.connect, self.timeout.read) if isinstance(self.timeout, HttpTimeout) else (self.timeout,)
        if any(isinstance(v, float) and v <= 0 for v in values):
            raise ValueError("timeouts must be more than 0 seconds: an HTTP step never waits forever")
        return self

    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds."""
        if isinstance(self.timeout, HttpTimeout):
            return float(self.timeout.connect), float(self.timeout.read)
        return float(self.timeout), float(self.timeout)
