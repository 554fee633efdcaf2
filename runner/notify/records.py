"""The records of the store's ``notifications`` table (pydantic; imported only where notifications are read)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runner.notify.outbox import NotificationState

__all__ = ["ChannelStatus", "NotificationRecord"]


class ChannelStatus(BaseModel):
    """What happened with one channel of a notification."""

    model_config = ConfigDict(extra="ignore")

    state: Literal["pending", "sent", "failed"] = "pending"
    attempts: int = 0
    detail: str = Field(default="", description="the receiver's answer (sent) or the last error")
    at: float | None = Field(default=None, description="when it was sent or last tried")


class NotificationRecord(BaseModel):
    """An outbox row as stored (``runbook notify list --json`` shows these)."""

    model_config = ConfigDict(extra="ignore")

    key: str
    kind: str
    run_id: str | None = None
    seq: int | None = None
    step_id: str | None = None
    runbook: str | None = None
    created_at: float
    state: NotificationState = "pending"
    next_at: float
    attempts: int = 0
    claim: int = Field(default=0, description="fencing token: incremented by every claim")
    holder: str | None = None
    lease_expires_at: float | None = None
    channels: dict[str, ChannelStatus] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    last_error: str = ""
    finished_at: float | None = None
