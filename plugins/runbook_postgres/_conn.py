"""Connections: the store URL, a small thread-safe connection pool, and error translation.

The pool hands one connection to one thread at a time for one short statement or transaction (no
connection is held while a step runs), so a process needs few connections whatever its thread count: the
engine's heartbeat threads come and go, and a thread-local connection per thread would leak them. A thread
gets back the connection it used last whenever that one is idle, so in a steady state each worker thread
has a connection of its own, with its prepared statements ready: a thread that has none takes the idle
connection of a thread that ended, else opens one while the pool has room, else borrows another's.

The one exception is a thread's batch (:meth:`Pool.batch`, behind ``Store.batch``): the thread holds one
connection in one transaction until the block ends, and every call it makes meanwhile runs on that connection
in a savepoint of its own. Other threads are not affected: they borrow other connections as before.
"""

from __future__ import annotations

import contextlib
import re
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

from runner.errors import ConfigError, StoreError

__all__ = ["Batch", "Conn", "Cursor", "Pool", "StoreURL", "mask_url", "parse_url"]

Conn = psycopg.Connection[DictRow]
Cursor = psycopg.Cursor[DictRow]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_OWN_OPTIONS = ("schema", "pool_size", "pool_timeout", "prepare")
_LIBPQ_DEFAULTS = {
    "connect_timeout": "10",
    "application_name": "runbook",
    # notice a peer that vanished (a lost host, a partition) within about a minute, not the OS's two hours
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
_PING_AFTER = 10.0  # seconds idle after which a pooled connection is checked with a round trip before use


def mask_url(url: str) -> str:
    """``url`` with the password (in the authority or a ``password=`` option) replaced by ``***``."""
    url = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


@dataclass(frozen=True)
class StoreURL:
    """A parsed ``postgresql://`` store URL: what libpq gets, and the store's own options."""

    conninfo: str
    safe: str
    schema: str
    pool_size: int
    pool_timeout: float
    password: str | None
    prepare: bool = True
    """Prepare the store's statements on the server (``?prepare=off`` for a pooler that cannot keep them)."""


def _int_option(options: dict[str, str], key: str, default: int, low: int, high: int, safe: str) -> int:
    raw = options.get(key, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"store URL '{safe}': {key}={raw} is not a whole number from {low} to {high}")
    return int(raw)


def parse_url(url: str) -> StoreURL:
    """Split ``postgresql://user@host:port/db?schema=S&pool_size=N&sslmode=...`` (``postgres://`` too).

    ``schema``, ``pool_size``, ``pool_timeout`` and ``prepare`` are the store's; every other query option goes to libpq.
    """
    safe = mask_url(url)
    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ConfigError(f"store URL '{safe}': expected postgresql://user@host:5432/database")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    schema = options.get("schema", "public")
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"store URL '{safe}': schema '{schema}' must be a lowercase SQL name (letters, digits, _)")
    pool_size = _int_option(options, "pool_size", 8, 1, 1000, safe)
    pool_timeout = float(_int_option(options, "pool_timeout", 30, 1, 3600, safe))
    prepare = options.get("prepare", "on").lower()
    if prepare not in ("on", "off"):
        raise ConfigError(f"store URL '{safe}': prepare={prepare} must be on or off")
    rest = {k: v for k, v in options.items() if k not in _OWN_OPTIONS}
    for key, value in _LIBPQ_DEFAULTS.items():
        rest.setdefault(key, value)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    password = parts.password or options.get("password") or None
    return StoreURL(conninfo, safe, schema, pool_size, pool_timeout, password, prepare == "on")


def _has_input(conn: Conn) -> bool:
    """True if the server sent something to an idle connection: it is usually a notice that it is closing it."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class Batch:
    """One thread's batch on one pool: the connection it holds in a transaction, and the in-process wake-ups
    its writes owe the workers once it commits (see ``PostgresStore.batch``)."""

    __slots__ = ("conn", "wakes")

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.wakes = 0


class Pool:
    """Up to ``size`` autocommit connections with ``search_path`` set to the store's schema."""

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._idle: list[tuple[Conn, float]] = []
        self._user: dict[int, int] = {}  # id(conn) -> the thread that used it last
        self._cursors: dict[int, Cursor] = {}  # id(conn) -> its cursor for one()
        self._open = 0
        self._generation: dict[int, int] = {}  # id(conn) -> generation it was opened in
        self._current = 0  # bumped by close(): older connections are closed when they come back
        self._cond = threading.Condition()
        self._batches = threading.local()  # .batch: this thread's Batch while it is inside batch()

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate psycopg errors into :class:`StoreError` naming the store (never its password)."""
        try:
            yield
        except psycopg.Error as exc:
            raise self.failure(what, exc) from exc

    def failure(self, what: str, exc: psycopg.Error) -> StoreError:
        """The :class:`StoreError` for ``exc``, naming the store (never its password)."""
        return StoreError(f"PostgreSQL store {self.url.safe}: {what} failed: {self._describe(exc)}",
                          hint="check that the server is up and the URL's user, database and ?schema= are right")  # fmt: skip

    def one(self, what: str, query: str, params: dict[str, Any]) -> DictRow | None:
        """Run one statement on a connection of this thread's and return its first row (the store's hot path:
        no context managers around it)."""
        rows = self.run(what, query, params, first=True)
        return rows[0] if rows else None

    def run(self, what: str, query: str, params: dict[str, Any], *, first: bool = False) -> list[DictRow]:
        """Run one statement and return its rows (only the first with ``first``); in this thread's batch, on the
        batch's connection in a savepoint."""
        try:
            batch: Batch | None = getattr(self._batches, "batch", None)
            if batch is not None:
                with self._savepoint(batch):
                    return self._execute(batch.conn, query, params, first)
            conn = self._get()
            try:
                return self._execute(conn, query, params, first)
            finally:
                self._put(conn)
        except psycopg.Error as exc:
            raise self.failure(what, exc) from exc

    def _execute(self, conn: Conn, query: str, params: dict[str, Any], first: bool) -> list[DictRow]:
        cursor = self._cursors.get(id(conn))
        if cursor is None:  # one per connection, used again and again (making one costs as much as a send)
            cursor = self._cursors[id(conn)] = conn.cursor()
        cursor.execute(query, params)
        if first:
            row = cursor.fetchone()
            return [] if row is None else [row]
        return cursor.fetchall()

    def _describe(self, exc: psycopg.Error) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self.url.password:
            text = text.replace(self.url.password, "***")
        return text

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A connection for one unit of work; a broken one, or one left in a transaction, is discarded.

        In this thread's batch: the batch's connection, with the unit of work in a savepoint (so a statement that
        fails undoes only this unit's writes and leaves the batch usable).
        """
        batch: Batch | None = getattr(self._batches, "batch", None)
        if batch is not None:
            with self._savepoint(batch):
                yield batch.conn
            return
        conn = self._get()
        try:
            yield conn
        finally:
            self._put(conn)

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """A connection in a transaction, committed when the block ends and rolled back if it raises; in this
        thread's batch, a savepoint of the batch's transaction instead (committed with the batch)."""
        in_batch = getattr(self._batches, "batch", None) is not None
        with self.connection() as conn:  # in a batch: already in a savepoint of it
            if in_batch:
                yield conn
            else:
                with conn.transaction():
                    yield conn

    def current_batch(self) -> Batch | None:
        """This thread's batch, if it is inside :meth:`batch`."""
        batch: Batch | None = getattr(self._batches, "batch", None)
        return batch

    @contextmanager
    def batch(self, what: str) -> Iterator[Batch]:
        """Hold one connection in one transaction for every call this thread makes in the block.

        The outermost block commits when it ends and rolls everything back if it raises; then the connection goes
        back to the pool idle (one that cannot be rolled back, e.g. broken, is discarded, never reused in a
        transaction). A nested block joins the batch in a savepoint: if it raises, only its writes are undone.
        Errors of the database are :class:`StoreError` naming ``what``.
        """
        batch: Batch | None = getattr(self._batches, "batch", None)
        if batch is not None:
            with self.errors(what), self._savepoint(batch):
                yield batch
            return
        with self.errors(what):
            conn = self._get()
        batch = self._batches.batch = Batch(conn)
        try:
            with self.errors(what), conn.transaction():
                yield batch
        finally:
            self._batches.batch = None
            self._put(conn)  # idle after COMMIT or ROLLBACK; in any other state it is closed

    @staticmethod
    @contextmanager
    def _savepoint(batch: Batch) -> Iterator[None]:
        """A savepoint in ``batch`` (psycopg nests ``transaction()`` blocks as savepoints): released when the block
        ends, rolled back to if it raises, so the batch's transaction stays usable after a failed call."""
        wakes = batch.wakes
        try:
            with batch.conn.transaction():
                yield
        except BaseException:
            batch.wakes = wakes  # the writes that owed these wake-ups were undone
            raise

    def _get(self) -> Conn:
        deadline = time.monotonic() + self.url.pool_timeout
        with self._cond:
            while not self._idle and self._open >= self.url.pool_size:
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise StoreError(f"PostgreSQL store {self.url.safe}: all {self.url.pool_size} connections stayed busy "
                                     f"for {self.url.pool_timeout:g}s", hint="raise ?pool_size= in the store URL")  # fmt: skip
            pick = self._affine()
            if pick is None and self._open >= self.url.pool_size:
                pick = len(self._idle) - 1  # full: another thread's idle connection, the most recently returned
            if pick is not None:
                conn, since = self._idle.pop(pick)
                self._user[id(conn)] = threading.get_ident()
            else:
                conn, since = None, 0.0
                self._open += 1
        if conn is not None and ((time.monotonic() - since < _PING_AFTER and not _has_input(conn)) or self._alive(conn)):
            return conn
        if conn is not None:
            conn.close()  # dropped by the server while idle; its slot is reused by the new connection
            with self._cond:
                self._generation.pop(id(conn), None)
                self._user.pop(id(conn), None)
                self._cursors.pop(id(conn), None)
        try:
            return self._connect()
        except BaseException:
            self._release_slot()
            raise

    def _affine(self) -> int | None:
        """Index in ``_idle`` of the connection this thread used last, else of one whose thread has ended, else None
        (the caller opens a connection of this thread's own while the pool has room)."""
        me = threading.get_ident()
        for i in range(len(self._idle) - 1, -1, -1):
            if self._user.get(id(self._idle[i][0])) == me:
                return i
        if self._idle:
            live = {t.ident for t in threading.enumerate()}
            for i in range(len(self._idle) - 1, -1, -1):
                if self._user.get(id(self._idle[i][0])) not in live:
                    return i
        return None

    @staticmethod
    def _alive(conn: Conn) -> bool:
        """A cheap round trip, so a connection the server dropped while idle is replaced, not used."""
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def _connect(self) -> Conn:
        conn = psycopg.connect(self.url.conninfo, autocommit=True, row_factory=dict_row)
        if not self.url.prepare:
            conn.prepare_threshold = None
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.url.schema)))
        except BaseException:
            conn.close()
            raise
        with self._cond:
            self._generation[id(conn)] = self._current
            self._user[id(conn)] = threading.get_ident()
        return conn

    def _put(self, conn: Conn) -> None:
        healthy = not conn.closed and not conn.broken and conn.pgconn.transaction_status == TransactionStatus.IDLE
        with self._cond:
            if healthy and self._generation.get(id(conn)) == self._current:
                self._idle.append((conn, time.monotonic()))
                self._cond.notify()
                return
        self._discard(conn)

    def _discard(self, conn: Conn) -> None:
        conn.close()
        with self._cond:
            self._generation.pop(id(conn), None)
            self._user.pop(id(conn), None)
            self._cursors.pop(id(conn), None)
        self._release_slot()

    def _release_slot(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def close(self) -> None:
        """Close the idle connections now and the ones in use when they come back (the pool stays usable)."""
        with self._cond:
            self._current += 1
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._discard(conn)

    def __del__(self) -> None:
        # a store dropped without close(): close what is idle instead of leaving it to the connections' finalisers
        for conn, _ in getattr(self, "_idle", ()):
            with contextlib.suppress(Exception):  # at interpreter exit psycopg may be half torn down
                conn.close()

    def stats(self) -> dict[str, Any]:
        """Open and idle connection counts (for tests and diagnostics)."""
        with self._cond:
            return {"open": self._open, "idle": len(self._idle), "size": self.url.pool_size}
