"""The journal store interface.

A store keeps runs, their steps and an append-only event journal, and
arbitrates who may execute a run:

- An executor *acquires a lease* on a run before executing it. The lease names
  the holder (host, boot, pid, process start time) and carries a *fencing
  token* that increases with every acquisition. Every write an executor makes
  (:meth:`Store.commit`) is checked against that token in the same
  transaction, so an executor that lost its lease can never write again.
- A lease is free when it was released, when it expired, or when the engine's
  ``is_alive`` says its same-host holder process is gone (so a resume right
  after ``kill -9`` does not wait). ``force`` takes over a live remote lease.
- Requests from outside (pause, cancel, approvals) are written without a lease
  and read back by the executor with every commit and heartbeat.
- Workers :meth:`claim` runnable runs: queued ones, waiting ones whose
  ``wake_at`` is due, and running ones whose holder is gone. A PostgreSQL store
  implements this with ``FOR UPDATE SKIP LOCKED``; SQLite serialises writers.
  Either finds them through an index of live work only, never by scanning finished
  runs, and an idle worker sleeps on :attr:`Store.work` until a write makes a run
  claimable (polling only as a fallback).
- :meth:`batch` groups one thread's writes into one transaction (alert intake
  records a delivery, its decisions and their runs at once); :meth:`grouped` writes
  such a unit in a transaction it may share with other threads' (group commit); :meth:`prune` deletes
  finished history under :class:`~runner.store.retention.PruneRules`.

``tests/store_contract.py`` is the contract suite every store must pass.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from runner.errors import StoreError
from runner.store.records import Event, Flags, Holder, Lease, NewEvent, NewRun, RunRecord, RunState, StepPatch, StepRecord

if TYPE_CHECKING:
    from runner.alerts import DecisionRecord, DeliveryRecord, NewDecision, RouteRun
    from runner.notify.outbox import NotificationState
    from runner.notify.records import ChannelStatus, NotificationRecord
    from runner.store.retention import PruneReport, PruneRules

__all__ = ["IsAlive", "Store", "WorkSignal"]

T = TypeVar("T")

IsAlive = Callable[[Holder], bool | None]
"""``is_alive(holder)``: True/False when it can tell (same host), None when it cannot (remote)."""

_SIGNAL_LOCK = threading.Lock()


class WorkSignal:
    """Wakes idle workers when a run may have become claimable: a generation counter under a condition variable.

    A worker reads :meth:`generation` *before* it claims; if the claim finds nothing it calls :meth:`wait` with
    that number, which returns at once if anything was signalled since (no wake-up is lost between the claim
    and the wait). A store calls :meth:`notify` after committing a write that leaves a run claimable now
    (created queued, requested, released in a due state); a store that hears other processes (PostgreSQL
    ``LISTEN/NOTIFY``) calls it for their writes too. Polling remains the fallback for what nobody signals
    (a ``wait`` step coming due, a writer in another process of an SQLite journal).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0

    def generation(self) -> int:
        """The number of signals so far (read it before claiming)."""
        return self._generation

    def notify(self, n: int = 1) -> None:
        """Work appeared: wake up to ``n`` waiting workers (cheap when nobody waits)."""
        with self._cond:
            self._generation += 1
            self._cond.notify(n)

    def notify_all(self) -> None:
        """Wake every waiting worker (new work for all of them, or a pool stopping)."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Sleep until a signal newer than ``seen`` or ``timeout`` seconds; True if signalled."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation != seen, timeout=timeout)


def _no_op() -> None:
    """Unsubscribe from a store that never calls its subscribers."""


class Store(ABC):
    """Durable storage of runs, steps, events and leases."""

    url: str
    """The store's URL for display: any password is masked (it is printed in banners and errors)."""

    signals_work: ClassVar[bool] = False
    """True if the store's writes that leave a run claimable signal :attr:`work` (the contract tests it then);
    a store without it leaves idle workers to their polling."""

    @property
    def work(self) -> WorkSignal:
        """The store's :class:`WorkSignal`: idle workers of this process sleep on it (one per store object)."""
        signal: WorkSignal | None = self.__dict__.get("_work_signal")
        if signal is None:
            with _SIGNAL_LOCK:
                signal = self.__dict__.setdefault("_work_signal", WorkSignal())
        return signal

    def long_running(self) -> None:
        """Called once by a long-running process (``runbook serve``, ``runbook worker``) before its threads start.

        A store may start background maintenance here; the SQLite store checkpoints its write-ahead log on a
        thread of its own from then on, so no commit waits for the disk. The default does nothing.
        """
        return

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group every store call this thread makes inside the block into one transaction.

        Reads inside the block see its own writes. The block's writes commit together when it ends, or none of
        them does if it raises (a call that raises inside the block undoes only its own writes: it ran in a
        savepoint, so the caller may catch its error, e.g. :class:`~runner.errors.LockHeld`, and carry on).
        Calls made by other threads are not part of the batch. Nesting is allowed (the outermost commits).
        Keep blocks short: on SQLite the journal's single writer is held for the whole block.

        The default groups nothing (every call commits on its own); stores that can, override it.
        """
        yield

    def grouped(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (it makes store calls) as one unit of writes: they commit together, or none does, before this
        returns; an error of ``fn`` undoes its writes and is raised here.

        A store may commit the units of several threads in one transaction (group commit,
        :mod:`runner.store.groupcommit`), each in a savepoint; the SQLite store does. The default runs each unit
        in a :meth:`batch` of its own. Inside a batch, the unit joins it.
        """
        with self.batch():
            return fn()

    # ------------------------------------------------------------------ lifecycle

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    # ------------------------------------------------------------------ runs

    @abstractmethod
    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Insert a run, its pending steps and a ``run.created`` event.

        Returns ``(run, True)``; or ``(existing, False)`` when ``new.idempotency_key`` was
        used before. Raises :class:`~runner.errors.LockHeld` if ``new.lock_key`` is held by an
        active run. With ``new.holder`` set, the run is created leased to that holder (fence 1),
        in the same transaction, so no worker can claim it before its creator acquires it.
        """

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """The run; :class:`~runner.errors.RunNotFound` if there is none."""

    @abstractmethod
    def get_spec(self, run_id: str) -> dict[str, Any]:
        """The runbook snapshot stored with the run (``NewRun.spec``, or the spec of its latest accepted edit).

        Not part of :class:`~runner.store.records.RunRecord`: it is as large as the runbook, and only an edited
        or deleted runbook needs it. :class:`~runner.errors.RunNotFound` if there is no such run.
        """

    def get_step_hashes(self, run_id: str) -> dict[str, str]:
        """The per-step hashes stored with the run (``NewRun.step_hashes``, or those of its latest accepted edit).

        Not part of :class:`~runner.store.records.RunRecord`: one entry per step, and only a run whose
        ``content_hash`` differs from its runbook's needs them (issue 19: a record of a 5000-step run decoded
        5000 of them on every read). :class:`~runner.errors.RunNotFound` if there is no such run.

        Not abstract, so that a store written for an earlier release still loads; until it implements this, a
        resume of a run whose runbook changed fails with this error.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement Store.get_step_hashes (needed to compare an edited runbook)")

    @abstractmethod
    def find_run_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids starting with ``prefix`` (to accept unambiguous short ids)."""

    @abstractmethod
    def list_runs(
        self, *, runbook: str | None = None, states: Sequence[RunState] = (), parent: str | None = None,
        limit: int = 50, before: str | None = None, since: float | None = None, until: float | None = None,
        started_by: str | None = None,
    ) -> list[RunRecord]:  # fmt: skip
        """Runs, newest first; ``before`` is the id of the last run of the previous page.

        ``since``/``until``: only runs created at or after ``since`` and before ``until`` (epoch seconds, the
        store's clock). ``started_by``: only runs started by exactly this actor, or, when it ends with ``*``, by
        an actor starting with the rest (``alert:*``); case-sensitive.
        """

    @abstractmethod
    def count_runs(self) -> dict[tuple[str, str], int]:
        """Number of runs by (runbook, state), for metrics."""

    @abstractmethod
    def get_steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps in runbook order."""

    @abstractmethod
    def events(self, run_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()) -> list[Event]:
        """Events with ``seq > after`` in order."""

    # ------------------------------------------------------------------ leases and fenced writes

    @abstractmethod
    def acquire(self, run_id: str, holder: Holder, ttl: float, *, force: bool, is_alive: IsAlive, take_lock: bool = True) -> Lease:
        """Take the run's lease (and, with ``take_lock``, its lock key); raises LeaseHeld / LockHeld / RunNotFound.

        ``take_lock=False`` is for settling a run without executing it (cancelling a failed run whose lock key
        another run holds by now must still work).
        """

    @abstractmethod
    def renew(self, lease: Lease) -> Flags:
        """Extend the lease by its ttl and return the outside requests; LeaseLost if fenced off."""

    @abstractmethod
    def flags(self, lease: Lease) -> Flags:
        """Outside requests, without extending the lease (a cheap read); LeaseLost if fenced off."""

    @abstractmethod
    def release(self, lease: Lease) -> None:
        """Give the lease up (no error if it was already taken over)."""

    @abstractmethod
    def commit(
        self, lease: Lease, *, events: Sequence[NewEvent] = (), run: dict[str, Any] | None = None,
        steps: Sequence[StepPatch] = (),
    ) -> tuple[int, Flags]:  # fmt: skip
        """Atomically append events and update the run and steps, if ``lease`` is still current.

        ``run`` maps run columns (state, reason, cursor, finished_at, wake_at, options,
        pause_requested, cancel_requested, params) to new values. A run entering a state
        outside :data:`ACTIVE_STATES` releases its lock key. Raises LeaseLost if fenced off.
        Returns the sequence number given to the first of ``events`` (they are numbered consecutively)
        and the current outside requests. (No event objects are built: on the hot path nobody needs them.)

        In the same transaction, an event that notifies (:func:`runner.notify.outbox.run_notifications`) of a run
        without a parent adds its row to the notifications outbox (see "notifications" below).
        """

    # ------------------------------------------------------------------ requests from outside the lease

    @abstractmethod
    def request(self, run_id: str, kind: str, *, actor: str, reason: str, data: dict[str, Any] | None = None) -> Event:
        """Record an outside request: ``pause`` / ``cancel`` set their flags; ``approve`` / ``deny``
        record a decision for a step (``data`` names it), ``decide`` a decision on an unknown step and ``retry`` a
        retry of a failed run. ``approve``, ``deny``, ``cancel``, ``wake``, ``decide`` and ``retry`` wake a waiting run
        (``wake_at = now``) so a worker acts on them."""

    # ------------------------------------------------------------------ workers

    @abstractmethod
    def claim(self, holder: Holder, ttl: float, *, is_alive: IsAlive, limit: int = 1) -> list[Lease]:
        """Lease up to ``limit`` runnable runs: queued, waiting and due, or running with a dead holder.

        Never a sub-runbook's run (its parent drives it) and never a queued or waiting run someone asked to pause.
        """

    @abstractmethod
    def queue_depth(self) -> int:
        """Number of queued runs."""

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` when a run may have become claimable (for idle workers); returns the unsubscribe function.

        So that idle workers claim at once instead of at their next poll. They still poll: not every change
        notifies (a lease or a wait deadline that runs out sends nothing). ``wake`` may run on a thread of the
        store's and must return quickly. A store that cannot tell keeps this default, which never calls it.
        """
        return _no_op

    # ------------------------------------------------------------------ retention

    def prune(self, rules: PruneRules, *, dry_run: bool = False, batch: int = 500,
              should_stop: Callable[[], bool] | None = None, vacuum: str = "auto") -> PruneReport:  # fmt: skip
        """Delete finished runs that ``rules`` let go, with everything that belongs to them; see
        :mod:`runner.store.retention` for the rules (what is always kept and why).

        A run goes with its sub-runbook runs, steps, events, snapshot, and the alert decisions and deliveries that
        only concern pruned runs. Works in transactions of at most ``batch`` runs read (other writers run
        between them); ``should_stop()`` is asked between batches (a server stopping). ``dry_run`` counts what
        would go and deletes nothing. ``vacuum`` says how freed space goes back to the file system: ``auto``
        (SQLite: incremental vacuum; an older journal is switched to it once by a full ``VACUUM``),
        ``incremental`` (never rewrite the whole file: the server's background retention) or ``none`` (keep it
        for reuse); a store whose database does this on its own (PostgreSQL's autovacuum) ignores it.
        Returns what was (or would be) deleted and kept.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot prune its journal")

    # ------------------------------------------------------------------ alert deliveries
    # Used by ``runbook serve`` (plugins/runbook_server): webhook deliveries, the decision taken for each
    # alert, and the runs each route started. Records live in :mod:`runner.alerts`.

    @abstractmethod
    def begin_delivery(self, delivery_id: str, source: str, body_sha256: str) -> DeliveryRecord:
        """Insert a delivery (state ``processing``) or return the existing one with ``seen`` incremented."""

    @abstractmethod
    def finish_delivery(self, delivery_id: str, result: dict[str, Any]) -> None:
        """Mark a delivery ``done`` and keep ``result`` (returned again for a duplicate delivery)."""

    @abstractmethod
    def record_decisions(self, decisions: Sequence[NewDecision]) -> list[DecisionRecord]:
        """Insert decisions; one whose ``(delivery_id, idx)`` exists is left as it was. Returns the stored rows.

        A decision that notifies (:func:`runner.notify.outbox.decision_notification`) adds its outbox row in the
        same transaction."""

    @abstractmethod
    def list_decisions(
        self, *, route: str | None = None, source: str | None = None, decision: str | None = None,
        delivery_id: str | None = None, run_id: str | None = None, limit: int = 50, before: int | None = None,
    ) -> list[DecisionRecord]:  # fmt: skip
        """Decisions, newest first; ``before`` is the id of the last decision of the previous page."""

    @abstractmethod
    def route_runs(self, route: str, *, since: float | None = None, dedupe_key: str | None = None,
                   active_only: bool = False, limit: int = 1000) -> list[RouteRun]:  # fmt: skip
        """Runs ``route`` started (decisions ``started``/``breaker_open``), newest first, with their current state.

        ``since``: started at or after this time; ``dedupe_key``: only that key; ``active_only``: only runs in
        :data:`~runner.store.records.ACTIVE_STATES`.
        """

    # ------------------------------------------------------------------ notifications (the outbox)
    # Rows are written by ``commit`` and ``record_decisions`` in the event's own transaction; deliverers
    # (runner/notify/deliver.py) claim them with a lease and record each channel's outcome. Records live in
    # :mod:`runner.notify.outbox`. Not abstract, so a third-party store written before them still loads: it
    # keeps no notifications, and these say so.

    def claim_notifications(
        self, holder: str, ttl: float, *, limit: int = 10, run_ids: Sequence[str] = (),
    ) -> list[NotificationRecord]:  # fmt: skip
        """Lease up to ``limit`` due notifications to ``holder`` for ``ttl`` seconds, oldest ``next_at`` first.

        Due: ``pending``, ``next_at`` reached, and no live lease (a dead deliverer's claim is taken when it expires).
        ``run_ids``: only these runs' notifications. Each claim increments the row's ``claim`` (its fencing token).
        Concurrent claimers never get the same row.
        """
        raise StoreError(f"store {self.url} does not keep notifications", hint="use the sqlite or postgresql store")

    def update_notification(
        self, key: str, claim: int, *, channels: dict[str, ChannelStatus], state: NotificationState, attempts: int,
        next_at: float | None = None, last_error: str = "", ttl: float | None = None,
    ) -> bool:  # fmt: skip
        """Record a claimed notification's progress if ``claim`` is still its current claim; False if it is not.

        ``ttl``: keep holding it (the lease is renewed to now + ``ttl``); None: release it. ``next_at``: when a
        ``pending`` row is due again. A state other than ``pending`` is final (``finished_at`` is set).
        """
        raise StoreError(f"store {self.url} does not keep notifications", hint="use the sqlite or postgresql store")

    def list_notifications(
        self, *, run_id: str | None = None, states: Sequence[str] = (), limit: int = 50, before: float | None = None,
    ) -> list[NotificationRecord]:  # fmt: skip
        """Notifications, newest first (by ``created_at``); ``before``: the ``created_at`` of the last one of the previous page."""
        raise StoreError(f"store {self.url} does not keep notifications", hint="use the sqlite or postgresql store")
