"""Wake-ups across processes: ``LISTEN`` on the store's channel, ``pg_notify`` when work becomes runnable.

The store's statements that make a run claimable (a queued run created, a lease released on a runnable
run, a request that wakes or cancels an idle run) also call ``pg_notify(channel, '')`` in the same
statement, so the notification is delivered when, and only if, that write commits. A :class:`Listener`
holds one extra connection per process, only once something subscribed (a worker pool), and calls every
subscriber on each notification; subscribers still poll as a fallback (a lease that expires, or a wait
deadline that passes, sends nothing), and are also called after the listener (re)connects, since
notifications sent while it was not listening are lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from runbook_postgres._conn import StoreURL

__all__ = ["Listener", "channel_name"]

log = logging.getLogger("runbook.postgres")

_RETRY = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds between reconnection attempts


def channel_name(schema: str) -> str:
    """The notification channel of the journal in ``schema`` (journals in other schemas do not wake each other)."""
    return f"runbook_work.{schema}"[:63]  # PostgreSQL truncates identifiers to 63 bytes; pg_notify refuses longer


class Listener:
    """A thread that ``LISTEN``s on one channel and calls the subscribers when a notification arrives."""

    def __init__(self, url: StoreURL, channel: str) -> None:
        self.url, self.channel = url, channel
        self._subscribers: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self.listening = threading.Event()
        """Set while the listener's connection is listening (for tests and diagnostics)."""

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` on each notification (from the listener's thread); returns the unsubscribe function."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._subscribers[key] = wake
            if self._thread is None:
                self._stop_r, self._stop_w = os.pipe()  # the thread closes both when it ends
                self._thread = threading.Thread(target=self._loop, args=(self._stop_r, self._stop_w), name="runbook-pg-listen",
                                                daemon=True)  # fmt: skip
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)
                last = not self._subscribers
            if last:
                self.close()

        return unsubscribe

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and close the connection (subscribers are forgotten)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._subscribers.clear()
            stop_w, self._stop_r, self._stop_w = self._stop_w, -1, -1
            if thread is not None:
                os.write(stop_w, b"x")  # the thread has not closed it: it ends only after reading this
        if thread is not None and thread is not threading.current_thread():  # a subscriber may leave from its wake-up
            thread.join(timeout)

    def _wake_all(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers.values())
        for wake in subscribers:
            try:
                wake()
            except Exception:  # a subscriber's failure must not stop the wake-ups of the others
                log.exception("a wake-up subscriber failed")

    def _loop(self, stop: int, stop_w: int) -> None:
        try:
            self._serve(stop)
        finally:
            for fd in (stop, stop_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _serve(self, stop: int) -> None:
        failures = 0
        while True:
            try:
                with psycopg.connect(self.url.conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    failures = 0
                    self._wake_all()  # whatever was notified while we were not listening
                    if self._listen(conn, stop):
                        return
            except psycopg.Error as exc:
                log.warning("listening for wake-ups on %s failed (workers poll meanwhile): %s", self.url.safe,
                            " ".join(str(exc).replace(self.url.password or "\0", "***").split()))  # fmt: skip
            finally:
                self.listening.clear()
            delay = _RETRY[min(failures, len(_RETRY) - 1)]
            failures += 1
            if select.select([stop], [], [], delay)[0]:
                return

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]], stop: int) -> bool:
        """Wait for notifications until the connection fails (False) or :meth:`close` is called (True)."""
        pgconn = conn.pgconn
        while True:
            readable = select.select([pgconn.socket, stop], [], [])[0]
            if stop in readable:
                return True
            pgconn.consume_input()  # raises when the server closed the connection
            got = False
            while pgconn.notifies() is not None:
                got = True
            if got:
                self._wake_all()
