"""Retention: which finished runs :meth:`Store.prune <runner.store.base.Store.prune>` may delete, and its report.

A run is deleted only if every rule lets it go:

1. **Finished and old.** Its state is one of ``states`` (by default ``succeeded``, ``failed`` and ``cancelled``:
   a run that is queued, running, paused, waiting or interrupted is never deleted) and it finished more than
   ``older_than`` seconds ago.
2. **Whole trees.** A sub-runbook run goes only with its top-level run, and a top-level run only if none of its
   sub-runbook runs (at any depth) is still active: the parent of an active run is kept, and so are the
   children of a kept parent.
3. **The newest ``keep_last``** finished top-level runs of each runbook (by run id: creation time, to the
   millisecond) are kept, however old.
4. **Idempotency keys inside their window.** A run created with an idempotency key less than
   ``idempotency_window`` seconds ago is kept: a repeated request (an API ``Idempotency-Key``, an alert
   episode, a schedule slot) must still find it rather than start a new run.
5. **Open alerts.** A run an alert route started is kept while its alert is open: while the newest decision for
   the same route and dedupe key says ``firing`` and is less than ``alert_window`` seconds old (Alertmanager
   re-sends a firing alert every ``repeat_interval``, 4 h by default, and sends ``resolved`` when it ends).

The storm guard counts the runs a route started within its ``cooldown``, ``budget.per`` and
``breaker.within``; a run that finished less than ``older_than`` ago is never deleted, so ``older_than`` longer
than those windows keeps everything the guard counts (``runbook serve`` refuses a ``retention.older_than``
shorter than its routes' windows).

Alert decisions and sent notifications go with the runs they are about (a notification still to send stays: it
holds what its message needs, and its deliverer copes with a run that is gone); a decision about no run, and a
sent (or given-up) notification about no run, go once older than both ``older_than`` and ``alert_window``; one
still to send, once older than ``notification_window`` too; a delivery goes once none of its decisions is left.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from runner.errors import UsageError
from runner.store.records import RunState

__all__ = ["FINISHED_STATES", "PruneReport", "PruneRules", "ulid_floor"]

FINISHED_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
"""The states a pruned run may be in."""
DAY = 86400.0
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class PruneRules:
    """What :meth:`Store.prune` may delete (see the module docstring)."""

    older_than: float
    """Seconds: only runs that finished before ``now - older_than``."""
    states: frozenset[RunState] = FINISHED_STATES
    keep_last: int = 0
    """Keep the newest N finished top-level runs of each runbook."""
    idempotency_window: float = DAY
    alert_window: float = DAY
    notification_window: float = 7 * DAY
    """A notification still to send stays this long after its event (deliverers give up after
    ``delivery.expire_after``, 24 h by default; one still pending later had no deliverer)."""
    now: float = field(default_factory=time.time)
    """The time the rules are evaluated at (fixed for one prune, so its batches agree)."""

    def __post_init__(self) -> None:
        bad = sorted(str(s) for s in self.states - FINISHED_STATES)
        if bad:
            raise UsageError(f"prune: state(s) {', '.join(bad)} are not finished states; only "
                             f"{', '.join(sorted(str(s) for s in FINISHED_STATES))} can be pruned")  # fmt: skip
        if not self.states:
            raise UsageError("prune: give at least one state to prune")
        for name in ("older_than", "idempotency_window", "alert_window", "notification_window"):
            if getattr(self, name) < 0:
                raise UsageError(f"prune: {name} must not be negative")
        if self.keep_last < 0:
            raise UsageError("prune: keep_last must not be negative")

    @property
    def finished_before(self) -> float:
        """Runs that finished before this time may go."""
        return self.now - self.older_than

    @property
    def decisions_before(self) -> float:
        """Decisions about no remaining run may go when older than this."""
        return self.now - max(self.older_than, self.alert_window)


@dataclass
class PruneReport:
    """What a prune deleted (or, with ``dry_run``, would delete) and kept."""

    dry_run: bool
    runs: int = 0
    """Runs deleted, sub-runbook runs included."""
    steps: int = 0
    events: int = 0
    decisions: int = 0
    deliveries: int = 0
    notifications: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    """Old enough finished top-level runs kept, by rule: ``active_descendant``, ``keep_last``,
    ``idempotency_window``, ``alert_open``."""
    batches: int = 0
    stopped: bool = False
    """Stopped early (``should_stop``); the next prune continues."""
    bytes_before: int | None = None
    bytes_after: int | None = None
    vacuum: str = "none"
    """How space was given back: ``none``, ``incremental``, ``full`` (a one-time VACUUM that switched an older
    SQLite journal to incremental vacuum) or ``unavailable`` (asked for ``incremental`` on a journal that needs
    that one-time VACUUM first)."""

    def keep(self, rule: str) -> None:
        """Count one run kept by ``rule``."""
        self.kept[rule] = self.kept.get(rule, 0) + 1

    def add(self, other: PruneReport) -> None:
        """Add the counts of ``other`` (another batch)."""
        for name in ("runs", "steps", "events", "decisions", "deliveries", "notifications", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for rule, n in other.kept.items():
            self.kept[rule] = self.kept.get(rule, 0) + n

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape (``runbook prune --json``)."""
        return asdict(self)


def ulid_floor(ts: float) -> str:
    """The smallest ULID of time ``ts``: every run id created before ``ts`` sorts below it."""
    value = int(ts * 1000) << 80
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
