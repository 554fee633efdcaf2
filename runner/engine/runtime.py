"""Per-run runtime pieces: params as templates see them, run-scoped resources, the heartbeat."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from runner.errors import LeaseLost, StoreError
from runner.params import ParamSpec
from runner.secrets import SecretResolver
from runner.store.base import Store
from runner.store.records import Flags, Lease

__all__ = ["Heartbeat", "ParamValues", "Resources", "new_run_id", "process_age"]

log = logging.getLogger("runbook.engine")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id() -> str:
    """A ULID: 26 characters, sortable by creation time (ms), 80 random bits."""
    import os
    import time

    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def process_age() -> float:
    """Seconds since this process started (so a ``--budget`` counts interpreter start-up too)."""
    import os
    import time

    try:
        with open(f"/proc/{os.getpid()}/stat", encoding="utf-8") as f:
            text = f.read()
        start_ticks = int(text[text.rfind(")") + 2 :].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class ParamValues(Mapping[str, Any]):
    """``params`` as templates and scripts see them: secret params resolved on first access."""

    def __init__(self, values: Mapping[str, Any], specs: Mapping[str, ParamSpec], resolver: SecretResolver) -> None:
        self._values, self._resolver = dict(values), resolver
        self._secret = {name for name, spec in specs.items() if spec.secret}

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        if key in self._secret and isinstance(value, str):
            return self._resolver.resolve(value, name=f"param '{key}'")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def describe_missing(self, name: str) -> str:
        """What a template that asks for an undeclared param is told."""
        return f"no param '{name}' (params: {', '.join(sorted(self._values)) or 'none'})"


class Resources:
    """Run-scoped resources (SSH connections ...) created once and closed when the run stops."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        """The resource under ``key``, created by ``factory()`` on first use."""
        with self._lock:
            if key not in self._items:
                self._items[key] = factory()
            return self._items[key]

    def close(self) -> None:
        """Close every resource that has a ``close`` method."""
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for item in items:
            with contextlib.suppress(Exception):
                item.close()


class Heartbeat:
    """Renews a lease in the background and reports outside requests (pause, cancel) as they appear.

    Used as a context manager around a drive. Every heartbeat of the process is served by one long-lived
    daemon thread (:class:`_Beats`), started on first use: a server's workers start and join no thread per
    run, and the thread keeps one store connection however many runs it renews. Leaving the context waits
    for a renewal of this lease that is in progress, so no callback runs after it.
    """

    def __init__(self, store: Store, lease: Lease, on_flags: Callable[[Flags], None], on_lost: Callable[[], None],
                 interval: float) -> None:  # fmt: skip
        self.store, self.lease, self.on_flags, self.on_lost = store, lease, on_flags, on_lost
        self.interval = interval

    def __enter__(self) -> Heartbeat:
        _BEATS.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _BEATS.remove(self)

    def beat(self) -> bool:
        """Renew once and report requests; False once the lease is lost (no more beats then)."""
        try:
            flags = self.store.renew(self.lease)
        except LeaseLost:
            self.on_lost()
            return False
        except StoreError as exc:  # a busy or briefly unavailable store: try again next beat
            log.warning("heartbeat for run %s failed: %s", self.lease.run_id, exc)
            return True
        if flags.pause_requested or flags.cancel_requested:
            self.on_flags(flags)
        return True


class _Beats:
    """The process's heartbeat thread: renews every registered :class:`Heartbeat` at its interval."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._due: dict[Heartbeat, float] = {}
        self._busy: Heartbeat | None = None
        self._thread: threading.Thread | None = None
        self._sleeping_until: float | None = None
        """When the beater wakes next on its own (None: not before it is notified)."""

    def add(self, beat: Heartbeat) -> None:
        with self._cond:
            due = self._due[beat] = time.monotonic() + beat.interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="runbook-heartbeats", daemon=True)
                self._thread.start()
            if self._sleeping_until is None or due < self._sleeping_until:  # else it wakes in time anyway: a drive
                self._cond.notify_all()  # of a server's worker costs no wake-up (notify_all: not a remover instead)

    def remove(self, beat: Heartbeat) -> None:
        with self._cond:
            self._due.pop(beat, None)
            while self._busy is beat:
                self._cond.wait()

    def _next(self) -> Heartbeat:
        """Wait (holding the condition) until a heartbeat is due; mark it busy and schedule its next beat."""
        while True:
            if not self._due:
                self._sleeping_until = None
                self._cond.wait()
                continue
            beat, due = min(self._due.items(), key=lambda item: item[1])
            now = time.monotonic()
            if due > now:
                self._sleeping_until = due
                self._cond.wait(due - now)
                continue
            self._sleeping_until = now
            self._due[beat] = max(due + beat.interval, now)
            self._busy = beat
            return beat

    def _run(self) -> None:
        while True:
            with self._cond:
                beat = self._next()
            alive = False
            try:
                alive = beat.beat()
            except Exception:  # a callback's bug must not stop every run's heartbeat
                log.exception("heartbeat for run %s failed", beat.lease.run_id)
                alive = True
            finally:
                with self._cond:
                    self._busy = None
                    if not alive:
                        self._due.pop(beat, None)
                    self._cond.notify_all()


_BEATS = _Beats()
