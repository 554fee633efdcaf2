"""The scheduler's clock: the system clock, or a TEST-ONLY clock that a test suite controls.

``RUNBOOK_TEST_CLOCK=/path/clock.json`` (test-only; never set it in production) makes every scheduler of
the process read the time from that file: ``{"start": EPOCH, "at": REAL_EPOCH, "speed": FACTOR}`` means
"at real time ``at`` it was ``start``, and it runs ``speed`` times as fast" (before ``at`` it stays at
``start``: a test can start its servers with the clock stopped, then set it going). The file is read again
whenever it changes (replace it atomically), so a test can stop, move or speed up time for each process —
one file per process — or for all of them at once. Only the schedules' slots and fire times follow this
clock; leases, budgets and the journal keep real time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runner.errors import ConfigError

__all__ = ["TEST_CLOCK_ENV", "Clock", "FileClock", "SystemClock", "clock_from_env"]

TEST_CLOCK_ENV = "RUNBOOK_TEST_CLOCK"
"""TEST-ONLY: a JSON file ``{"start", "at", "speed"}`` the schedulers take the time from."""

_LONGEST_SLEEP = 60.0  # re-read the clock at least this often (the wall clock may have been set meanwhile)
_TEST_POLL = 0.02


class Clock(Protocol):
    """What a scheduler needs of time."""

    def now(self) -> float:
        """The current time (seconds since the epoch)."""

    def sleep_until(self, when: float, stop: threading.Event) -> None:
        """Return at ``when`` (this clock's time), when ``stop`` is set, or after a while: callers check again."""


class SystemClock:
    """The system's wall clock."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def sleep_until(self, when: float, stop: threading.Event) -> None:
        """Wait on ``stop`` until ``when`` (at most a minute at a time)."""
        stop.wait(min(max(0.0, when - time.time()), _LONGEST_SLEEP))


@dataclass
class _Reading:
    start: float
    at: float
    speed: float


class FileClock:
    """TEST-ONLY: the time a file says (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._reading = _Reading(0.0, 0.0, 0.0)
        self._lock = threading.Lock()
        self._read()

    def _read(self) -> _Reading:
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
                if stamp != self._stamp:
                    doc = json.loads(self.path.read_text(encoding="utf-8"))
                    self._reading = _Reading(float(doc["start"]), float(doc.get("at", time.time())), float(doc.get("speed", 1.0)))
                    self._stamp = stamp
            except (OSError, ValueError, KeyError, TypeError) as exc:
                if self._stamp is None:
                    raise ConfigError(f"{TEST_CLOCK_ENV}={self.path}: cannot read the test clock ({type(exc).__name__}: {exc})",
                                      hint='a JSON file {"start": EPOCH, "at": REAL_EPOCH, "speed": N}; unset it outside tests') from None  # fmt: skip
                # a test rewriting the file: keep the last good reading
            return self._reading

    def now(self) -> float:
        """``start + (real - at) * speed`` (``start`` before ``at``)."""
        r = self._read()
        return r.start + max(0.0, time.time() - r.at) * r.speed

    def sleep_until(self, when: float, stop: threading.Event) -> None:
        """Poll the file briefly (the test may move time at any moment)."""
        if self.now() < when:
            stop.wait(_TEST_POLL)


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    """The test clock when ``RUNBOOK_TEST_CLOCK`` is set, else the system clock."""
    env = os.environ if environ is None else environ
    path = env.get(TEST_CLOCK_ENV)
    return FileClock(path) if path else SystemClock()
