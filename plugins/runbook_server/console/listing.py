"""The runs list with filters the store does not index (who started a run, a time range), bounded.

State and runbook are filtered by the store. A time range needs no scan either: run ids are ULIDs, ordered by
creation time, so "created before T" is the cursor ``id < ULID(T)`` and the scan stops at the first run older
than "since". Only the actor filter reads runs it does not show; it reads at most :data:`SCAN_LIMIT` runs per
page and then offers to go on from where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from runner.errors import UsageError
from runner.store.records import RunState

if TYPE_CHECKING:
    from runner.store.base import Store
    from runner.store.records import RunRecord

__all__ = ["SCAN_LIMIT", "RunFilter", "RunPage", "parse_time", "ulid_floor"]

SCAN_LIMIT = 5000
_BATCH = 200
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_floor(ts: float) -> str:
    """The smallest run id (ULID) created at ``ts`` (epoch seconds, millisecond precision)."""
    ms = max(0, int(ts * 1000))
    return "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5)) + "0" * 16


def parse_time(value: str, what: str) -> float | None:
    """``2026-12-07T12:30`` (an HTML datetime-local, taken as UTC), with seconds or an offset; empty: None."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{what}: '{value[:40]}' is not a date and time like 2026-12-07T12:30 (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass
class RunFilter:
    """The filters of the runs page (empty strings: no filter)."""

    state: str = ""
    runbook: str = ""
    actor: str = ""
    since: str = ""
    until: str = ""
    before: str = ""

    def check(self) -> tuple[float | None, float | None]:
        """Validate; the time range as epoch seconds."""
        if self.state and self.state not in {str(s) for s in RunState}:
            raise UsageError(f"state '{self.state[:40]}' is not a run state; one of: {', '.join(str(s) for s in RunState)}")
        return parse_time(self.since, "since"), parse_time(self.until, "until")

    def query(self, **change: str) -> dict[str, str]:
        """The non-empty filters as query parameters, with ``change`` applied."""
        values = {"state": self.state, "runbook": self.runbook, "actor": self.actor, "since": self.since, "until": self.until,
                  "before": self.before, **change}  # fmt: skip
        return {k: v for k, v in values.items() if v}


@dataclass
class RunPage:
    """One page of runs, newest first."""

    runs: list[RunRecord] = field(default_factory=list)
    next_before: str | None = None
    scanned_out: bool = False
    """The actor filter read :data:`SCAN_LIMIT` runs without filling the page (``next_before`` goes on)."""


def find_runs(store: Store, flt: RunFilter, limit: int = 50, visible: Callable[[RunRecord], bool] | None = None) -> RunPage:
    """The page of runs ``flt`` selects, of those ``visible`` says the viewer may read (like the actor filter, runs
    it hides count towards :data:`SCAN_LIMIT`)."""
    since, until = flt.check()
    cursor: str | None = flt.before or (ulid_floor(until + 0.001) if until is not None else None)
    states = [RunState(flt.state)] if flt.state else []
    actor = flt.actor.strip().lower()
    out = RunPage()
    scanned = 0
    while len(out.runs) < limit:
        if scanned >= SCAN_LIMIT:
            out.scanned_out, out.next_before = True, cursor
            return out
        batch = store.list_runs(runbook=flt.runbook or None, states=states, limit=_BATCH, before=cursor)
        for run in batch:
            scanned += 1
            cursor = run.id
            if since is not None and run.created_at < since:
                return out  # newest first: everything further is older still
            if actor and actor not in run.started_by.lower():
                continue
            if visible is not None and not visible(run):
                continue
            out.runs.append(run)
            if len(out.runs) == limit:
                out.next_before = run.id
                return out
        if len(batch) < _BATCH:
            return out
    return out
