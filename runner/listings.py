"""The JSON shapes of lists: runs (``runs --json``), events (``events --json``) and runbooks (``list``/``show --json``).

Shared by the CLI, the Python API, the HTTP API and MCP, like the run views of :mod:`runner.views`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from runner.store.records import RunRecord
from runner.views import iso

__all__ = ["EventList", "EventView", "RunList", "RunSummary", "RunbookDetail", "RunbookInfo", "RunbookList", "event_view", "run_summary"]


class RunSummary(BaseModel):
    """One row of ``runs --json``."""

    run_id: str
    runbook: str
    state: str
    reason: str
    started_by: str
    created_at: str | None
    updated_at: str | None
    parent_run_id: str | None


class RunList(BaseModel):
    """``runs --json``: newest first; ``next_before`` pages on (None: no more)."""

    runs: list[RunSummary]
    next_before: str | None


def run_summary(r: RunRecord) -> RunSummary:
    """The list row of a run."""
    return RunSummary(run_id=r.id, runbook=r.runbook, state=str(r.state), reason=r.reason, started_by=r.started_by,
                      created_at=iso(r.created_at), updated_at=iso(r.updated_at), parent_run_id=r.parent_run_id)  # fmt: skip


class EventView(BaseModel):
    """One journal event (``events --json``)."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    ts: str | None
    type: str
    step_id: str | None
    attempt: int | None
    actor: str | None
    data: dict[str, Any]


def event_view(ev: Any) -> EventView:
    """The view of a stored :class:`~runner.store.records.Event`."""
    return EventView(seq=ev.seq, ts=iso(ev.ts), type=ev.type, step_id=ev.step_id, attempt=ev.attempt, actor=ev.actor, data=ev.data)


class EventList(BaseModel):
    """``events --json``: a run's events after a sequence number."""

    run_id: str
    events: list[EventView]


# ---------------------------------------------------------------------- runbooks


class RunbookInfo(BaseModel):
    """One catalog entry (``list --json``)."""

    name: str
    description: str
    version: Any
    tags: list[str]
    file: str
    steps: int
    params_schema: dict[str, Any]


class RunbookList(BaseModel):
    """``list --json``: the runbooks and the problems found loading them."""

    runbooks: list[RunbookInfo]
    problems: list[dict[str, Any]]


class RunbookDetail(RunbookInfo):
    """``show --json``: a catalog entry with its compiled runbook and content hash."""

    runbook: dict[str, Any]
    content_hash: str
