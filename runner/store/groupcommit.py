"""Group commit: write units from many threads committed in one store transaction, each in a savepoint of its own.

A *unit* is a callable that makes store calls which must commit together (alert intake's delivery with its
decisions and runs; an executor's fenced :meth:`~runner.store.base.Store.commit`). One transaction per unit
repeats the fixed cost of a commit: on SQLite, every page a commit touches is appended to the write-ahead log
whole (about 90 KiB for a delivery), and the pages at the end of each table and index are the same for
consecutive units. With :class:`GroupCommit`, a thread that arrives while nothing is being written writes its
unit at once. Threads that arrive meanwhile queue; when that write is done, the first of them leads: it takes
every unit queued so far (its own first), runs them one after another inside one
:meth:`Store.batch <runner.store.base.Store.batch>`, each in a nested batch (a savepoint), commits once, hands
each thread its own result or error, and passes the lead to the first thread queued meanwhile.

- **Nothing is reported done before it is durable.** :meth:`GroupCommit.run` returns only after the commit that
  holds its unit. If that commit fails, every unit of the group gets the error.
- **One unit's failure is its own.** A unit that raises is rolled back to its savepoint; the others commit.
- **No wait when idle.** A lone unit is written at once, in a transaction of its own, with no savepoint: groups
  form only while a commit is in progress, so the busier the store, the more each commit carries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.store.base import Store

__all__ = ["GroupCommit"]


class _Unit:
    __slots__ = ("done", "error", "fn", "lead", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.lead = False  # woken to lead the next group rather than with a result
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs units from many threads in shared transactions of ``store`` (see the module docstring)."""

    def __init__(self, store: Store, *, max_group: int = 64) -> None:
        self.store = store
        self.max_group = max_group
        self._lock = threading.Lock()
        self._queue: list[_Unit] = []
        self._leading = False
        self.groups = 0
        """Transactions committed."""
        self.units = 0
        """Units those transactions held."""

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the next group; return its result (or raise its error) once the group is committed."""
        with self._lock:
            alone = not self._leading
            self._leading = True
            if not alone:
                unit = _Unit(fn)
                self._queue.append(unit)
        if alone:  # nothing being written: this thread writes its unit at once, then passes the lead on
            try:
                return self._write_alone(fn)
            finally:
                self._pass_lead()
        try:
            unit.done.wait()
        except BaseException:  # (KeyboardInterrupt in a main thread): never leave the queue without a leader
            self._abandon(unit)
            raise
        if unit.lead:
            self._lead()
        if unit.error is not None:
            raise unit.error
        return unit.result

    def _write_alone(self, fn: Callable[[], Any]) -> Any:
        with self.store.batch():  # its error rolls the transaction back: no savepoint needed
            result = fn()
        self.groups += 1
        self.units += 1
        return result

    def _lead(self) -> None:
        """Write one group (the queue's head, this thread's unit, first), then pass the lead on."""
        with self._lock:
            group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
        try:
            self._write(group)
        finally:
            for unit in group:
                unit.done.set()
            self._pass_lead()

    def _abandon(self, unit: _Unit) -> None:
        """The thread of ``unit`` stopped waiting: drop the unit if no group took it, and pass on a lead it was given."""
        with self._lock:
            queued = unit in self._queue
            if queued:
                self._queue.remove(unit)
        if queued and unit.lead:
            self._pass_lead()

    def _pass_lead(self) -> None:
        """Wake the first waiting thread to lead the next group, or end the lead if none waits."""
        with self._lock:
            following = self._queue[0] if self._queue else None
            if following is None:
                self._leading = False
                return
            following.lead = True
        following.done.set()

    def _write(self, group: list[_Unit]) -> None:
        try:
            with self.store.batch():
                for unit in group:
                    try:
                        with self.store.batch():  # a savepoint: a unit that fails undoes only its own writes
                            unit.result = unit.fn()
                    except Exception as exc:
                        unit.error = exc
        except BaseException as exc:  # the commit failed: nothing of the group is durable
            for unit in group:
                if unit.error is None:
                    unit.error, unit.result = exc, None
            if not isinstance(exc, Exception):
                raise
            return
        self.groups += 1
        self.units += len(group)
