"""The server configuration file (``runbook serve --config server.yaml``): models, loading, located errors.

Loaded with :func:`runner.yamlsafe.load_yaml` (no aliases, no duplicate keys) and validated by pydantic
models that forbid unknown keys; every problem names ``file:line:column``. Checks that need the plugins and
the catalog (route runbooks, sources, auth settings) are in :mod:`runbook_server.state`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from runner.durations import Duration
from runner.errors import ConfigError, Problem, ValidationError

__all__ = ["SCOPES", "ConsoleSpec", "RetentionSpec", "RouteSpec", "ScheduleSpec", "ServerConfig", "load_config", "parse_listen",
           "pydantic_problems"]  # fmt: skip

SCOPES = ("read", "run", "approve", "admin", "agent")
Scope = Literal["read", "run", "approve", "admin", "agent"]
_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenSpec(_Model):
    """An API bearer token: ``token`` is a secret reference (``env:NAME``); ``sha256`` its hex digest instead."""

    name: str = Field(pattern=_NAME, description="who the token stands for (recorded as the actor)")
    token: str | None = Field(default=None, description="secret reference, e.g. env:OPS_BOT_TOKEN")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token (tokens file)")
    scopes: list[Scope] = Field(min_length=1)

    @model_validator(mode="after")
    def _one(self) -> TokenSpec:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'token' (a secret reference) or 'sha256'")
        return self


class BudgetSpec(_Model):
    """``budget: {runs: 5, per: 1h}``: at most ``runs`` runs started by the route in any ``per`` window."""

    runs: int = Field(ge=1)
    per: Duration


class BreakerSpec(_Model):
    """``breaker: {failures: 3, within: 1h}``: after that many failed runs, new runs need approval."""

    failures: int = Field(ge=1)
    within: Duration


class RouteSpec(_Model):
    """One routing rule: alerts whose labels match start ``runbook`` with ``params`` rendered from the alert."""

    name: str = Field(pattern=_NAME)
    source: str | None = Field(default=None, description="only alerts from this source (default: any)")
    match: dict[str, str] = Field(default_factory=dict, description="label: value | =~regex | !=value | !~regex")
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict, description="templates over `alert`")
    dedupe: str | None = Field(default=None, description="template; default: source and fingerprint")
    cooldown: Duration = 0.0
    budget: BudgetSpec | None = None
    breaker: BreakerSpec | None = None
    on_resolved: Literal["cancel", "ignore"] = "ignore"
    approval: Literal["required", "none"] = "none"

    @field_validator("match")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            if pattern.startswith(("=~", "!~")):
                try:
                    re.compile(pattern[2:])
                except re.error as exc:
                    raise ValueError(f"label '{label}': invalid regular expression {pattern[2:]!r}: {exc}") from None
        return value


class ScheduleSpec(_Model):
    """One schedule: start ``runbook`` with ``params`` at every slot of ``cron`` in ``timezone`` (docs/server.md, "Schedules")."""

    name: str = Field(pattern=_NAME)
    runbook: str
    cron: str = Field(description="5 fields (minute hour day-of-month month day-of-week) or a macro such as @hourly")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression's times are in")
    params: dict[str, Any] = Field(default_factory=dict, description="templates over `schedule` (name, slot, slot_utc, timestamp)")
    jitter: Duration = Field(default=0.0, description="each slot fires up to this much later (the same delay on every server)")
    misfire: Literal["skip", "run_once"] = Field(default="skip", description="slots missed while no scheduler ran: skip them, or "
                                                 "run the latest of them once (within catch_up)")  # fmt: skip
    catch_up: Duration = Field(default=3600.0, description="run_once: the latest missed slot is run if it is at most this old")
    grace: Duration = Field(default=60.0, ge=1.0, description="a slot fired up to this long after its time is on time, not missed")
    overlap: Literal["skip", "allow"] = Field(default="skip", description="skip: no new run while the schedule's last run is active")
    budget: BudgetSpec | None = None
    breaker: BreakerSpec | None = None
    approval: Literal["required", "none"] = "none"
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from runbook_server.cron import parse_cron

        return parse_cron(value).expr

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from runbook_server.cron import zone

        zone(value)
        return value


class SourceSpec(_Model):
    """``sources.<name>``: the source's auth settings (validated by the source's own model)."""

    auth: dict[str, Any] | None = None


class Limits(_Model):
    """Request limits."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="larger request bodies get 413")
    max_json_depth: int = Field(default=32, ge=4, le=512, description="deeper JSON gets 400")
    max_wait: Duration = Field(default=300.0, description="upper bound of `wait` in POST /v1/runs and /resume")
    max_waiters: int = Field(default=32, ge=1, le=10000, description="requests waiting at once (`wait`); more get 429")
    max_streams: int = Field(default=64, ge=1, le=10000, description="open event streams at once; more get 429")
    header_timeout: Duration = Field(default=10.0, description="a request's headers must arrive within this after it begins; "
                                     "else the connection is closed")  # fmt: skip
    body_timeout: Duration = Field(default=30.0, description="a request's body must arrive within this after its headers")
    max_connections: int = Field(default=4096, ge=16, le=100000, description="open connections at once; more are closed at once")


class ConsoleSpec(_Model):
    """``console:``: the web console served at ``/`` (see docs/console.md)."""

    enabled: bool = Field(default=True, description="serve the console (false: only the API and webhooks)")
    session_ttl: Duration = Field(default=12 * 3600.0, description="a console login ends this long after it began")
    idle_timeout: Duration = Field(default=2 * 3600.0, description="a console login unused this long ends")
    secure_cookie: Literal["auto", "always"] = Field(default="auto", description="auto: the session cookie is Secure on "
                                                     "HTTPS requests; always: also on HTTP (behind a TLS-terminating proxy)")  # fmt: skip


class RetentionSpec(_Model):
    """``retention:``: prune finished runs in the background (the rules of ``runbook prune``; docs/server.md)."""

    older_than: Duration = Field(description="delete runs that finished longer ago than this (at least the routes' windows)")
    states: list[Literal["succeeded", "failed", "cancelled"]] = Field(default=["succeeded", "failed", "cancelled"], min_length=1)
    keep_last: int = Field(default=0, ge=0, description="keep the newest N finished runs of each runbook")
    idempotency_window: Duration = Field(default=86400.0, description="keep runs created with an idempotency key this recently")
    alert_window: Duration = Field(default=86400.0, description="keep runs of alerts that fired this recently and are not resolved")
    notification_window: Duration = Field(default=7 * 86400.0, description="keep a notification still to send this long")
    every: Duration = Field(default=600.0, description="time between two passes")
    batch: int = Field(default=200, ge=1, le=10000, description="runs examined per transaction")
    pause: Duration = Field(default=0.05, description="rest between two batches (other writers go first)")


class ServerConfig(_Model):
    """The whole server configuration file."""

    listen: str = "127.0.0.1:8080"
    workers: int = Field(default=2, ge=0, le=64)
    tokens: list[TokenSpec] = Field(default_factory=list)
    tokens_file: str | None = Field(default=None, description="YAML file with a list of tokens (same shape as `tokens`)")
    sources: dict[str, SourceSpec] | None = Field(default=None, description="enabled alert sources (default: all, without auth)")
    routes: list[RouteSpec] = Field(default_factory=list)
    schedules: list[ScheduleSpec] = Field(default_factory=list, description="runbooks started on a cron schedule")
    limits: Limits = Field(default_factory=Limits)
    allowed_hosts: list[str] = Field(default_factory=list, description="Host header names served besides loopback and the "
                                     "listen address ('*.example.com': its subdomains; '*': any, behind a proxy that checks it)")  # fmt: skip
    allowed_origins: list[str] = Field(default_factory=list, description="browser origins (scheme://host[:port]) whose "
                                       "requests are served; a request with any other Origin header gets 403")  # fmt: skip
    agent_policy: str | None = Field(
        default=None, description="agent policy file for `agent`-scoped tokens (default: RUNBOOK_AGENT_POLICY)"
    )
    notify: dict[str, Any] | None = Field(default=None, description="notifications: channels, rules, delivery (docs/notifications.md); "
                                          "checked by runner.notify.config when the server starts")  # fmt: skip
    console: ConsoleSpec = Field(default_factory=ConsoleSpec)
    secret_allow: list[str] | None = Field(
        default=None, description="references callers may choose for secret params that declare no `allow:` "
        "(default: RUNBOOK_SECRET_ALLOW, else only each param's default)",
    )  # fmt: skip
    retention: RetentionSpec | None = Field(default=None, description="prune finished runs in the background (default: never)")
    file: str = Field(default="<defaults>", exclude=True, description="where this configuration came from")
    _located: Any = PrivateAttr(default=None)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if host != "*" and not re.fullmatch(r"(\*\.)?[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+", host):
                raise ValueError(f"{host!r} is not a host name or address (no scheme, port or path)")
        return [h.lower().strip("[]").rstrip(".") for h in value]

    @field_validator("secret_allow")
    @classmethod
    def _secret_allow(cls, value: list[str] | None) -> list[str] | None:
        from runner.secretrefs import check_allow_pattern

        return None if value is None else [check_allow_pattern(p) for p in value]

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.fullmatch(r"https?://[^/\s]+", origin.rstrip("/")):
                raise ValueError(f"{origin!r} is not an origin like https://ops.example.com (scheme://host[:port])")
        return [o.lower().rstrip("/") for o in value]

    def problem(self, path: tuple[str | int, ...], message: str, *, value: bool = False) -> Problem:
        """A problem located at ``path`` (its value with ``value``) in the file, or unlocated for the defaults."""
        where = ".".join(str(p) for p in path)
        if self._located is None:
            return Problem(message, file=self.file, where=where)
        return self._located.problem(path, message, where=where, value=value)  # type: ignore[no-any-return]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) → (host, port); raises ConfigError."""
    m = re.fullmatch(r"\[(?P<h6>[^\]]+)\]:(?P<p6>\d+)|(?P<h>[^:\[\]]+):(?P<p>\d+)", value.strip())
    if not m:
        raise ConfigError(f"listen address {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = m.group("h6") or m.group("h")
    port = int(m.group("p6") or m.group("p"))
    if port > 65535:
        raise ConfigError(f"listen address {value!r}: port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pydantic_problems(located: Any, base: tuple[str | int, ...], exc: PydanticValidationError) -> list[Problem]:
    """Located problems for a pydantic error on the document under ``base`` (unlocated for the defaults)."""
    from runner.yamlsafe import Located

    return (located or Located(data=None, file="<defaults>")).pydantic_problems(base, exc)


def load_config(path: str | Path | None) -> ServerConfig:
    """The configuration in ``path`` (None: the defaults); raises ValidationError naming file:line:column."""
    from runner.yamlsafe import load_yaml

    if path is None:
        return ServerConfig()
    from runner.safeio import read_input

    file = str(path)
    raw = read_input(file, what="the server config", refuse=ConfigError)
    located = load_yaml(raw, file)
    if not isinstance(located.data, dict):
        raise ValidationError([Problem("expected a mapping (listen, tokens, sources, routes, ...)", file=file, line=1)])
    try:
        config = ServerConfig.model_validate(located.data)
    except PydanticValidationError as exc:
        raise ValidationError(pydantic_problems(located, (), exc)) from None
    config.file = file
    config._located = located  # kept for the later, catalog-aware checks
    return config


def load_tokens_file(path: str, relative_to: str) -> list[TokenSpec]:
    """Tokens from a YAML list file (``[{name, sha256|token, scopes}, ...]``)."""
    from runner.yamlsafe import load_yaml

    p = Path(path)
    if not p.is_absolute() and relative_to not in ("<defaults>", ""):
        p = Path(relative_to).parent / p
    from runner.safeio import read_input

    raw = read_input(p, what="the tokens file", refuse=ConfigError)
    located = load_yaml(raw, str(p))
    if not isinstance(located.data, list):
        raise ValidationError([Problem("expected a list of tokens ({name, sha256 | token, scopes})", file=str(p), line=1)])
    out, problems = [], []
    for i, item in enumerate(located.data):
        try:
            out.append(TokenSpec.model_validate(item))
        except PydanticValidationError as exc:
            problems += pydantic_problems(located, (i,), exc)
    if problems:
        raise ValidationError(problems)
    return out
