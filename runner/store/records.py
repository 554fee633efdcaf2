"""Records the journal store keeps: runs, steps, events, leases, alert deliveries.

Times are epoch seconds (floats) in records and ISO 8601 UTC strings in JSON views.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runner.store.progress import StepProgress

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "Event",
    "Flags",
    "Holder",
    "JSONText",
    "Lease",
    "NewEvent",
    "NewRun",
    "RunRecord",
    "RunState",
    "StepPatch",
    "StepProgress",
    "StepRecord",
    "StepState",
]


class RunState(enum.StrEnum):
    """States of a run."""

    QUEUED = "queued"  # created, waiting for an executor (worker) to pick it up
    RUNNING = "running"
    PAUSED = "paused"  # stopped at a step boundary (pause request, budget, max steps); resumable
    WAITING = "waiting"  # a wait or approval step, or a decision on an unknown step
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # resumable with --retry after a fix
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM; resumable


TERMINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.CANCELLED})
"""States a run never leaves (``failed`` may be retried)."""
ACTIVE_STATES = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.PAUSED, RunState.WAITING, RunState.INTERRUPTED})
"""States in which a run holds its lock key."""


class StepState(enum.StrEnum):
    """States of a step."""

    PENDING = "pending"
    RUNNING = "running"
    SKIPPED = "skipped"
    SATISFIED = "satisfied"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    WAITING = "waiting"
    ROLLED_BACK = "rolled_back"
    UNKNOWN = "unknown"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not_started"  # a fan-out target held back because too many other targets failed


DONE_STEP_STATES = frozenset({StepState.SKIPPED, StepState.SATISFIED, StepState.SUCCEEDED, StepState.ROLLED_BACK})
IN_FLIGHT_STEP_STATES = frozenset({StepState.RUNNING, StepState.INTERRUPTED})
"""A step (or target) whose action had started when its executor last wrote: recovery decides what happens to it."""


class Holder(BaseModel):
    """Identity of an executor: host (and boot), pid and process start time."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str
    boot_id: str = ""
    pid: int
    start_time: int = 0
    kind: str = "cli"
    token: str = ""
    """Distinguishes executors in one process (each engine has its own): one never takes over another's live lease."""

    def label(self) -> str:
        """``cli pid 4242 on web1``."""
        return f"{self.kind} pid {self.pid} on {self.host}"

    def same_host(self, other: Holder) -> bool:
        """True if both run on this host since the same boot."""
        return self.host == other.host and self.boot_id == other.boot_id


class RunRecord(BaseModel):
    """A run as stored."""

    model_config = ConfigDict(extra="ignore")

    id: str
    runbook: str
    state: RunState
    reason: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    started_by: str = ""
    trigger: dict[str, Any] | None = None
    created_at: float
    updated_at: float
    finished_at: float | None = None
    content_hash: str = ""
    file: str = ""
    cursor: str | None = None
    idempotency_key: str | None = None
    lock_key: str | None = None
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    holder: Holder | None = None
    lease_expires_at: float | None = None
    fence: int = 0
    pause_requested: bool = False
    cancel_requested: bool = False
    wake_at: float | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    last_seq: int = 0


@dataclass(slots=True)
class StepRecord:
    """A step of a run as stored (a plain dataclass: the engine updates it several times per step)."""

    run_id: str
    step_id: str
    idx: int
    state: StepState = StepState.PENDING
    attempts: int = 0
    output: Any = None
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None
    progress: StepProgress = field(default_factory=StepProgress)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StepRecord:
        """A record from a store row (columns by name; JSON columns already decoded; other keys ignored).

        The ``data`` column holds the step's :class:`StepProgress` (in today's form or a format-2 journal's)."""
        return cls(run_id=row["run_id"], step_id=row["step_id"], idx=int(row["idx"]), state=StepState(row["state"]),
                   attempts=int(row.get("attempts") or 0), output=row.get("output"), reason=row.get("reason") or "",
                   started_at=row.get("started_at"), finished_at=row.get("finished_at"), not_before=row.get("not_before"),
                   progress=StepProgress.from_json(row.get("data")))  # fmt: skip


class Event(BaseModel):
    """One journal event."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    seq: int
    ts: float
    type: str
    step_id: str | None = None
    attempt: int | None = None
    actor: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass
class NewEvent:
    """An event to append (``seq`` and ``ts`` are assigned by the store)."""

    type: str
    step_id: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None


@dataclass
class StepPatch:
    """The full new state of one step row: written as a whole, inserted if the step is new."""

    step_id: str
    idx: int
    state: StepState
    attempts: int = 0
    output: Any = None
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    """The step's :class:`StepProgress` in its stored JSON form (the row's ``data`` column)."""

    @classmethod
    def of(cls, rec: StepRecord) -> StepPatch:
        """A patch writing ``rec`` as it is now."""
        return cls(rec.step_id, rec.idx, rec.state, rec.attempts, rec.output, rec.reason, rec.started_at,
                   rec.finished_at, rec.not_before, rec.progress.to_json())  # fmt: skip


class JSONText:
    """A JSON document already encoded (a runbook snapshot read from the compile cache), as UTF-8 chunks whose
    concatenation is the document: a store writes it as it is (chunk by chunk where it can) rather than encoding a
    decoded copy or joining a large runbook into one more string (issue 19). ``str()`` gives the document's text."""

    __slots__ = ("chunks", "size")

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks: tuple[bytes, ...] = tuple(chunks)
        self.size = sum(len(c) for c in self.chunks)
        """Bytes of the document."""

    def __str__(self) -> str:
        return b"".join(self.chunks).decode("utf-8")

    def __repr__(self) -> str:
        return f"JSONText({self.size} bytes)"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JSONText):
            return b"".join(self.chunks) == b"".join(other.chunks)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass
class NewRun:
    """What ``Store.create_run`` needs (``spec``: the snapshot, a JSON object or its :class:`JSONText`)."""

    id: str
    runbook: str
    params: dict[str, Any]
    started_by: str
    content_hash: str
    step_hashes: dict[str, str]
    spec: dict[str, Any] | JSONText
    file: str
    step_ids: list[str]
    state: RunState = RunState.QUEUED
    trigger: dict[str, Any] | None = None
    idempotency_key: str | None = None
    lock_key: str | None = None
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    created_event: dict[str, Any] = field(default_factory=dict)
    holder: Holder | None = None
    """Create the run already leased to this executor (so no worker can claim it first)."""
    lease_ttl: float = 30.0


@dataclass(frozen=True)
class Lease:
    """Proof that an executor holds a run: its fencing token is checked on every write."""

    run_id: str
    holder: Holder
    fence: int
    ttl: float
    previous: Holder | None = None
    previous_state: RunState | None = None
    took_over: str | None = None  # why a previous holder's lease was taken over


@dataclass(frozen=True)
class Flags:
    """Requests made from outside, read back with every write and heartbeat."""

    pause_requested: bool = False
    cancel_requested: bool = False
