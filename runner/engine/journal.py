"""Journaling one drive: every write an executor makes, fenced, redacted and told to observers.

A step's successful outcome may be *deferred* into the next write (the next step's start is
committed in the same transaction), which halves the commits of a run of quick steps while
keeping the rule that a step's outcome is durable before the next step acts. The drive's start
(``run.started`` or ``run.resumed`` and the run's ``running`` state) is deferred the same way when
it has nothing to reconcile: it goes out with the first step's start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from runner.store.records import Event, Flags, NewEvent, RunRecord, StepPatch, StepRecord

if TYPE_CHECKING:
    from runner.plugin import PluginHost
    from runner.secrets import Redactor
    from runner.store.base import Store
    from runner.store.records import Lease

__all__ = ["Journal"]

_RUN_FIELDS = frozenset(RunRecord.model_fields)
FLAGS_STALE = 0.05
"""Outside requests (pause, cancel) are re-read at a step boundary when the last read is older than this."""


class Journal:
    """The writes of one executor on one run under one lease."""

    def __init__(self, store: Store, lease: Lease, run: RunRecord, redactor: Redactor, host: PluginHost, actor: str,
                 observers: list[Callable[[Event, RunRecord], None]]) -> None:  # fmt: skip
        self.store, self.lease, self.run, self.redactor, self.host = store, lease, run, redactor, host
        self.actor, self.observers = actor, observers
        self.flags = Flags()
        self.flags_read = 0.0
        self._lock = threading.RLock()
        self._deferred_events: list[NewEvent] = []
        self._deferred_steps: list[StepRecord] = []
        self._deferred_run: dict[str, Any] = {}

    @property
    def has_deferred(self) -> bool:
        """True if a step outcome (or the drive's start) waits to go out with the next write."""
        return bool(self._deferred_events or self._deferred_steps or self._deferred_run)

    def commit(self, events: list[NewEvent], run: dict[str, Any] | None = None, steps: Iterable[StepRecord] = ()) -> None:
        """One fenced transaction; redacts events, run columns and step rows; applies the run columns locally; tells observers.

        A deferred step outcome goes into the same transaction, ahead of what is committed now.
        """
        recs = list(steps)
        with self._lock:
            if self.has_deferred:
                given = {r.step_id for r in recs}
                recs = [r for r in self._deferred_steps if r.step_id not in given] + recs
                events = [*self._deferred_events, *events]
                if self._deferred_run:
                    run = {**self._deferred_run, **(run or {})}
                self._deferred_events, self._deferred_steps, self._deferred_run = [], [], {}
        for ev in events:
            ev.data = self.redactor.value(ev.data)
            ev.actor = ev.actor or self.actor or None
        run = self.redactor.value(run) if run else run  # a reason may quote what a probe saw (an echoed token)
        patches = [self._patch(r) for r in recs]
        with self._lock:
            sent = time.monotonic()  # the store checked the fence after this: the lease was ours then
            first, flags = self.store.commit(self.lease, events=events, run=run, steps=patches)
            self.flags, self.flags_read = flags, sent
            for key, value in (run or {}).items():
                if key in _RUN_FIELDS:  # the runbook snapshot ("spec") is stored apart from the run record
                    setattr(self.run, key, value)
        if events and (self.observers or self.host.has_observers):
            self._tell(events, first)

    def _patch(self, rec: StepRecord) -> StepPatch:
        patch = StepPatch.of(rec)
        patch.reason, patch.output = self.redactor.text(patch.reason), self.redactor.value(patch.output)
        patch.data = self.redactor.value(patch.data)
        return patch

    def _tell(self, events: list[NewEvent], first: int) -> None:
        now = time.time()
        for i, ev in enumerate(events):
            event = Event(run_id=self.run.id, seq=first + i, ts=now, type=ev.type, step_id=ev.step_id, attempt=ev.attempt,
                          actor=ev.actor, data=ev.data)  # fmt: skip
            self.host.on_event(event, self.run)
            for observer in self.observers:
                observer(event, self.run)

    def defer(self, rec: StepRecord, events: list[NewEvent]) -> None:
        """Record a step's successful outcome with the next commit instead of a commit of its own.

        Call :meth:`flush` before the next step does anything external ahead of its own start's commit
        (probes, targets), so that a crash in that window never hides this step's effect.
        """
        with self._lock:
            self._deferred_events.extend(events)
            self._deferred_steps.append(rec)

    def defer_start(self, events: list[NewEvent], run: dict[str, Any]) -> None:
        """Record the drive's start (its events and run columns) with the next commit instead of a commit of its own.

        The columns apply to the local run record now (the drive goes on as ``running``); the outside requests
        are read again before the first step (:meth:`refresh_flags`), as the start's commit would have read them.
        Nothing external may happen before the next commit; every path of a drive ends with one (:meth:`flush`).
        """
        with self._lock:
            self._deferred_events.extend(events)
            self._deferred_run.update(run)
            for key, value in run.items():
                if key in _RUN_FIELDS:
                    setattr(self.run, key, value)

    def flush(self) -> None:
        """Commit a deferred step outcome now, if there is one."""
        if self.has_deferred:
            self.commit([])

    def refresh_flags(self) -> Flags:
        """The outside requests, re-read when nothing was committed for a while (a run of deferred outcomes)."""
        if self.has_deferred and time.monotonic() - self.flags_read > FLAGS_STALE:
            self.flags = self.store.flags(self.lease)
            self.flags_read = time.monotonic()
        return self.flags
