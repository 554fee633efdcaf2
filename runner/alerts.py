"""Alerts from monitoring systems, and the contract an alert source implements.

An :class:`AlertSource` turns one webhook delivery (raw bytes and headers) into
normalised :class:`Alert` objects. ``runbook serve`` exposes every registered
source at ``/v1/alerts/<name>``, authenticates each delivery with the source's
:meth:`AlertSource.verify` over the *raw* body, then routes each alert on its own
``status`` (an Alertmanager group that is firing can carry a resolved alert).

Sources are contributed through the ``runbook_register_alert_sources`` hook::

    @hookimpl
    def runbook_register_alert_sources(registry):
        registry.add(MySource())

The records of the "alert deliveries" section of the store
(:class:`NewDecision`, :class:`DecisionRecord`, :class:`DeliveryRecord`,
:class:`RouteRun`) live here too: they are what the server writes and lists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from runner.errors import AuthError

__all__ = [
    "DECISIONS",
    "Alert",
    "AlertSource",
    "AuthError",
    "DecisionRecord",
    "DeliveryRecord",
    "NewDecision",
    "NoAuth",
    "RouteRun",
    "label_fingerprint",
]

DECISIONS = (
    "started", "deduped", "cooled_down", "over_budget", "breaker_open", "no_route", "invalid_params", "locked",
    "resolved", "resolved_cancelled", "resolved_ignored", "truncated", "ignored", "breaker_reset", "conflict", "missed",
)  # fmt: skip
"""What intake decided for one alert (or group, for ``truncated``), or a scheduler for one slot (``missed``: no scheduler
ran in time); see ``docs/server.md``."""


class Alert(BaseModel):
    """One alert, normalised from any source."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="the alert source that delivered it (alertmanager, grafana, ...)")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict, description="identifying labels (routing matches on these)")
    annotations: dict[str, str] = Field(default_factory=dict, description="descriptive text; never used for routing")
    fingerprint: str = Field(description="stable identity of the alert (same labels, same fingerprint)")
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    raw: dict[str, Any] = Field(default_factory=dict, description="the alert as the source sent it")

    def episode(self) -> str | None:
        """Identity of this firing episode (the fingerprint plus when it started); None if the source gave no start.

        Repeated notifications of one episode (Alertmanager's ``repeat_interval``) start at most one run. An
        alert without a start time has no episode: each firing is new once the route's last run for its dedupe
        key has ended and its cooldown has passed.
        """
        return f"{self.fingerprint}@{self.starts_at.isoformat()}" if self.starts_at else None


class NoAuth(BaseModel):
    """Auth settings of a source that takes none (only allowed on a loopback bind)."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class AlertSource(Protocol):
    """What an alert source plugin provides.

    - ``name``: the path segment under ``/v1/alerts/`` and the key under ``sources:`` in the server config.
    - ``Auth``: a pydantic model (``extra="forbid"``) validating ``sources.<name>.auth``.
    - ``secret_fields``: names of ``Auth`` fields that hold secret *references* (``env:NAME``); the server
      resolves them through the secret providers before :meth:`verify` sees the model.
    - ``methods``: HTTP methods the source accepts (Grafana may PUT).
    """

    name: str
    Auth: ClassVar[type[BaseModel]]
    secret_fields: ClassVar[frozenset[str]]
    methods: ClassVar[tuple[str, ...]]

    def verify(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel) -> None:
        """Authenticate a delivery over its raw bytes; raise :class:`AuthError` (401 missing, 403 wrong)."""

    def normalize(self, body: Any, headers: Mapping[str, str]) -> list[Alert]:
        """The alerts in a parsed JSON body; raise :class:`~runner.errors.UsageError` if it is not this source's shape."""

    def delivery_id(self, raw_body: bytes, headers: Mapping[str, str], config: BaseModel | None) -> str | None:
        """The sender's id of this delivery, if it sends one (retries repeat it); None: the body hash is used."""

    def group_info(self, body: Any) -> dict[str, Any]:
        """Facts about the delivery as a whole (``truncated``: alerts the sender left out)."""


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex fingerprint of a label set (for sources that send none)."""
    raw = json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


# ---------------------------------------------------------------------- what the store keeps


@dataclass
class NewDecision:
    """A decision to record: ``(delivery_id, idx)`` is unique, so re-processing a delivery adds nothing."""

    delivery_id: str
    idx: int
    source: str
    decision: str
    route: str | None = None
    fingerprint: str | None = None
    status: str | None = None
    dedupe_key: str | None = None
    run_id: str | None = None
    reason: str = ""
    alert: dict[str, Any] = field(default_factory=dict)


class DecisionRecord(BaseModel):
    """A recorded decision (``GET /v1/alerts/decisions``, ``runbook alerts decisions --json``)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    ts: float
    delivery_id: str
    idx: int
    source: str
    decision: str
    route: str | None = None
    fingerprint: str | None = None
    status: str | None = None
    dedupe_key: str | None = None
    run_id: str | None = None
    reason: str = ""
    alert: dict[str, Any] = Field(default_factory=dict)


class DeliveryRecord(BaseModel):
    """One webhook delivery as stored: ``state`` is ``processing`` until its decisions are all recorded."""

    model_config = ConfigDict(extra="ignore")

    id: str
    source: str
    body_sha256: str
    received_at: float
    finished_at: float | None = None
    state: Literal["processing", "done"] = "processing"
    seen: int = 1
    result: dict[str, Any] | None = None


class RouteRun(BaseModel):
    """A run a route started, with its current state (for cooldown, budget, breaker and ``on_resolved``)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    dedupe_key: str | None
    started_at: float
    state: str
    finished_at: float | None = None
