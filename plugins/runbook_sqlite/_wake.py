"""Wake-ups across processes sharing one SQLite journal (what ``LISTEN/NOTIFY`` is on PostgreSQL).

A process whose workers wait for work (``runbook worker``, ``runbook serve``) listens on a Unix datagram socket
and leaves a marker file naming it in ``.<journal file>.wake/`` next to the journal (mode 0700; hidden, so a
``journal.db*`` glob still means the journal's own files). The socket itself is in Linux's abstract namespace,
so a long journal path cannot exceed the socket path limit. A process that commits a write making a run
claimable (a run queued, decided, resumed, put back in the queue) sends one byte to every other listener there,
without blocking; a listener wakes one of its idle workers. So ``runbook serve --workers 0`` beside
``runbook worker`` processes, or an approval given with the CLI, starts the run at once rather than at the
workers' next poll. A marker whose process is gone is removed by the next sender. Best effort by design: a lost
datagram costs one poll interval, never correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable

__all__ = ["WakeChannel"]


class WakeChannel:
    """The wake-up directory of one journal: :meth:`send` to the other processes, :meth:`listen` for them."""

    def __init__(self, journal: str) -> None:
        head, name = os.path.split(journal)
        self.dir = os.path.join(head, f".{name}.wake")
        self._prefix = "\0runbook-wake/" + hashlib.sha256(os.path.realpath(self.dir).encode()).hexdigest()[:24] + "/"
        self._sock: socket.socket | None = None
        self._own: str | None = None
        self._sender: socket.socket | None = None
        self._lock = threading.Lock()
        self._listed: tuple[int, list[str]] = (-1, [])
        self._listed_at = 0.0

    def listen(self, on_wake: Callable[[], None]) -> None:
        """Start receiving wake-ups (once per process and journal): ``on_wake()`` runs for each."""
        with self._lock:
            if self._sock is not None:
                return
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            name = f"{os.getpid()}-{os.urandom(6).hex()}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(self._prefix + name)
            path = os.path.join(self.dir, name)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._sock, self._own = sock, path
        threading.Thread(target=self._receive, args=(sock, on_wake), name="runbook-sqlite-wake", daemon=True).start()

    @staticmethod
    def _receive(sock: socket.socket, on_wake: Callable[[], None]) -> None:
        while True:
            try:
                data = sock.recv(64)
            except OSError:  # closed
                return
            if not data:  # shut down
                return
            on_wake()

    def send(self) -> None:
        """Wake the other processes' idle workers (no-op when none listens)."""
        try:
            stamp, now = os.stat(self.dir).st_mtime_ns, time.monotonic()
            # a listing when the directory changed (a listener came or went) or a second passed (a change within the
            # file system's timestamp granularity): a stat, not a listing, per send
            if stamp != self._listed[0] or now - self._listed_at > 1.0:
                self._listed, self._listed_at = (stamp, os.listdir(self.dir)), now
        except FileNotFoundError:
            return
        own = os.path.basename(self._own) if self._own else None
        targets = [n for n in self._listed[1] if n != own]
        if not targets:
            return
        with self._lock:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            for name in targets:
                try:
                    self._sender.sendto(b"w", self._prefix + name)
                except (ConnectionRefusedError, FileNotFoundError):  # nobody listens there: its process is gone
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.dir, name))
                except OSError:  # its queue is full: it has wake-ups pending already
                    continue

    def close(self) -> None:
        """Stop listening and remove this process's marker."""
        with self._lock:
            sock, own, self._sock, self._own = self._sock, self._own, None, None
            sender, self._sender = self._sender, None
        for s in (sock, sender):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        if own is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(own)
