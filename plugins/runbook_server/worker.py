"""The worker pool: threads that claim runnable runs from the store and drive them.

Each thread has its own :class:`~runner.engine.Engine` (the engine keeps per-drive state) with its own
holder identity (``worker-N``, same pid), so two threads of one process never drive one run. A thread
claims one run at a time (queued runs, waiting runs whose ``wake_at`` is due, runs whose executor died),
then drives it under the claim's lease with ``wait_in_process=False``: a wait or approval leaves the run
``waiting`` for a later claim instead of holding a thread. Heartbeats and fencing come from the engine.

An idle thread sleeps on the store's :attr:`~runner.store.base.Store.work` signal: a run queued, decided,
or put back in the queue through this process wakes one thread at once; the ``poll`` interval is only the
fallback for what nobody signals (a ``wait`` step coming due, runs queued by another process).

Stopping (SIGTERM): no new claims; running executions are interrupted once (the current step finishes
and is checkpointed), and runs stopped that way are put back in the queue for the next worker. A second
stop request interrupts the steps themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runbook_server.runs import drive_request, park, requeue
from runner.engine.holder import is_alive
from runner.errors import ConflictError, RunbookError, StoreError
from runner.store.records import RunState

if TYPE_CHECKING:
    from runner.engine import DriveOptions, Engine
    from runner.store.records import Lease, RunRecord

__all__ = ["WorkerPool"]

log = logging.getLogger("runbook.worker")


class WorkerPool:
    """``size`` threads claiming and driving runs until :meth:`stop`."""

    def __init__(self, make_engine: Callable[[str], Engine], size: int, *, poll: float = 0.5) -> None:
        self.size, self.poll = size, poll
        self.engines = [make_engine(f"worker-{i + 1}") for i in range(size)]
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._stores = list({id(e.store): e.store for e in self.engines}.values())
        self._stopping = False
        self.busy = 0
        self.drives = 0
        self._unsubscribe: Callable[[], None] = lambda: None

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start the threads; wake-ups the store hears from other processes (``LISTEN`` on PostgreSQL) wake them too."""
        if self.engines:
            self._unsubscribe = self.engines[0].store.subscribe(self.wake)
        for engine in self.engines:
            t = threading.Thread(target=self._loop, args=(engine,), name=f"runbook-{engine.holder.kind}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """A run was queued or woken (the store signals its own writes; this is for what it cannot see)."""
        for store in self._stores:
            store.work.notify()

    def stop(self) -> None:
        """Stop claiming; interrupt running executions (first call: after the current step; second: now)."""
        with self._cond:
            self._stopping = True
        for store in self._stores:
            store.work.notify_all()
        self._unsubscribe()
        for engine in self.engines:
            engine.interrupt()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to finish; True if all did."""
        end = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ threads

    def _loop(self, engine: Engine) -> None:
        work = engine.store.work
        while not self._stopping:
            seen = work.generation()  # before the claim: a signal between the claim and the wait is not lost
            try:
                leases = engine.store.claim(engine.holder, engine.lease_ttl, is_alive=is_alive, limit=1)
            except StoreError as exc:
                log.warning("%s: claiming failed: %s", engine.holder.kind, exc)
                leases = []
            if leases:
                self._run(engine, leases[0])
                continue
            if not self._stopping:
                work.wait(seen, self.poll)

    def _run(self, engine: Engine, lease: Lease) -> None:
        if self._stopping:  # stopped between the check and the claim: leave the run to the next worker
            engine.store.release(lease)
            return
        with self._cond:
            self.busy += 1
        try:
            self._drive(engine, lease)
        finally:
            with self._cond:
                self.busy -= 1
                self.drives += 1
            engine.notices.clear()

    def _drive(self, engine: Engine, lease: Lease) -> None:
        run_id = lease.run_id
        try:  # the execution releases the lease when it ends; on an error before it began, it is released here
            run = engine.store.get_run(run_id)  # read once, after the claim: for the drive's options and its start
            engine.execute(run_id, self._options(engine, run), lease=lease, run=run)
        except ConflictError as exc:  # a lock key is held
            self._release(engine, lease)
            log.info("run %s: %s", run_id, exc)
            return
        except (RunbookError, Exception) as exc:
            self._release(engine, lease)
            self._park(engine, run_id, exc)
            return
        if self._stopping and engine.store.get_run(run_id).state == RunState.INTERRUPTED:
            try:
                requeue(engine, run_id, actor="worker", reason="worker stopped; the run continues on the next worker")
            except (RunbookError, StoreError) as exc:
                log.warning("run %s: could not re-queue after stopping: %s", run_id, exc)

    def _options(self, engine: Engine, run: RunRecord) -> DriveOptions:
        from runner.engine import DriveOptions

        req = drive_request(engine, run.id, run)
        budget = req.get("budget")
        return DriveOptions(
            deadline=time.monotonic() + float(budget) if budget else None, max_steps=req.get("max_steps"),
            retry_failed=bool(req.get("retry")), retry_step=req.get("retry_step"), skip_step=req.get("skip_step"),
            accept_changes=bool(req.get("accept_changes")), actor=req.get("actor") or "worker", wait_in_process=False,
        )  # fmt: skip

    @staticmethod
    def _release(engine: Engine, lease: Lease) -> None:
        try:
            engine.store.release(lease)  # a no-op if the execution released it already
        except StoreError as exc:
            log.warning("run %s: releasing the claim failed: %s", lease.run_id, exc)

    def _park(self, engine: Engine, run_id: str, exc: BaseException) -> None:
        if not isinstance(exc, RunbookError):
            log.exception("run %s: unexpected error while driving it", run_id, exc_info=exc)
        why = str(exc) if isinstance(exc, RunbookError) else f"internal error: {type(exc).__name__}"
        try:
            park(engine, run_id, why)
        except (RunbookError, StoreError) as err:
            log.warning("run %s: could not park it (%s) after: %s", run_id, err, why)
