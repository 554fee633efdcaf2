"""SQLite journal store (WAL mode), the embedded default.

One file holds runs, steps, the event journal and lock keys. Every write is one
``BEGIN IMMEDIATE`` transaction, fenced by the lease token. ``synchronous=NORMAL``
(the default here) survives a killed process without losing a committed write;
``?synchronous=full`` in the URL also survives power loss at about 0.3 ms per commit.

Threads of one process take an in-process lock before the journal's write lock, so they queue on it and
are woken the moment it is free, instead of sleeping in SQLite's busy handler (which backs off by whole
milliseconds); other processes still wait in the busy handler. Workers find claimable runs through a
partial index of live work (:mod:`runbook_sqlite._queue`); :meth:`SQLiteStore.prune` deletes finished
history (:mod:`runbook_sqlite._prune`) and new journals give freed pages back (``auto_vacuum=INCREMENTAL``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, unquote, urlparse

from runbook_sqlite import _queue
from runbook_sqlite._outbox import Outbox
from runbook_sqlite._wake import WakeChannel
from runner.errors import ConfigError, LeaseHeld, LeaseLost, LockHeld, RunNotFound, StoreError
from runner.notify.outbox import run_notifications
from runner.store.base import IsAlive, Store, WorkSignal
from runner.store.groupcommit import GroupCommit
from runner.store.jsontext import compact_encoder
from runner.store.records import (
    ACTIVE_STATES,
    Event,
    Flags,
    Holder,
    JSONText,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunState,
    StepPatch,
    StepProgress,
    StepRecord,
    StepState,
)

if TYPE_CHECKING:  # the alert records are imported where used: a plain `runbook run` never needs them
    from runner.alerts import DecisionRecord, DeliveryRecord, NewDecision, RouteRun
    from runner.notify.outbox import NotificationState
    from runner.notify.records import ChannelStatus, NotificationRecord
    from runner.store.retention import PruneReport, PruneRules

__all__ = ["SQLiteStore"]

log = logging.getLogger("runbook.store")
T = TypeVar("T")

_CACHE_KIB = -512
"""Page cache per connection (negative: KiB), a quarter of SQLite's default. A process has a connection per
thread (a CLI run: its own and its heartbeat's); the operating system's page cache holds the journal's hot pages
anyway, and a long run's writes spill to the WAL instead of growing each cache to 2 MiB (issue 19: memory per run)."""

_MMAP = 1 << 31
"""Bytes of the journal a long-running process reads through a memory map (SQLite caps it at its compile-time
maximum): its many connections share the page cache of the operating system instead of each copying the
same index pages into a small cache of its own."""


def _typed_progress(c: sqlite3.Connection) -> None:
    """Version 2 → 3: rewrite each step row's loose ``data`` keys as its typed progress (same transaction)."""
    rows = c.execute("SELECT run_id, step_id, data FROM steps WHERE data != '{}'").fetchall()
    for run_id, step_id, data in rows:
        typed = json.dumps(StepProgress.from_json(json.loads(data)).to_json(), separators=(",", ":"))
        c.execute("UPDATE steps SET data=? WHERE run_id=? AND step_id=?", (typed, run_id, step_id))


SCHEMA_VERSION = 3
"""2: events are numbered from the events table, not ``runs.last_seq`` (no longer written). A version-1 journal
is upgraded in place (only an early one, whose snapshots are still in ``runs``, has anything to move), and a
version-1 runbook refuses a version-2 journal instead of numbering events from a stale counter.
3: a step row's ``data`` holds its typed :class:`~runner.store.progress.StepProgress`; the loose keys of a
version-2 journal are rewritten in place when it is opened (so a version-2 runbook, which would read a gate or a
wait it no longer recognises as none, refuses the journal rather than run a gated step)."""
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, runbook TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
  params TEXT NOT NULL DEFAULT '{}', started_by TEXT NOT NULL DEFAULT '', trigger TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,
  content_hash TEXT NOT NULL DEFAULT '',
  file TEXT NOT NULL DEFAULT '', cursor TEXT, idempotency_key TEXT UNIQUE, lock_key TEXT,
  parent_run_id TEXT, parent_step_id TEXT, holder TEXT, lease_expires_at REAL, fence INTEGER NOT NULL DEFAULT 0,
  pause_requested INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0, wake_at REAL,
  options TEXT NOT NULL DEFAULT '{}', last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs(state, wake_at);
CREATE INDEX IF NOT EXISTS runs_by_runbook ON runs(runbook, id);
CREATE INDEX IF NOT EXISTS runs_by_parent ON runs(parent_run_id);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL, step_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, output TEXT, reason TEXT NOT NULL DEFAULT '',
  started_at REAL, finished_at REAL, not_before REAL, data TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL, step_id TEXT,
  attempt INTEGER, actor TEXT, data TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (key TEXT PRIMARY KEY, run_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_specs (
  run_id TEXT PRIMARY KEY, step_hashes TEXT NOT NULL DEFAULT '{}', spec TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
"""
    + """
CREATE TABLE IF NOT EXISTS alert_deliveries (
  id TEXT PRIMARY KEY, source TEXT NOT NULL, body_sha256 TEXT NOT NULL, received_at REAL NOT NULL,
  finished_at REAL, state TEXT NOT NULL DEFAULT 'processing', seen INTEGER NOT NULL DEFAULT 1, result TEXT
);
CREATE TABLE IF NOT EXISTS alert_decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, delivery_id TEXT NOT NULL, idx INTEGER NOT NULL,
  source TEXT NOT NULL, decision TEXT NOT NULL, route TEXT, fingerprint TEXT, status TEXT, dedupe_key TEXT,
  run_id TEXT, reason TEXT NOT NULL DEFAULT '', alert TEXT NOT NULL DEFAULT '{}',
  UNIQUE (delivery_id, idx)
);
CREATE INDEX IF NOT EXISTS alert_decisions_by_route ON alert_decisions(route, ts);
CREATE INDEX IF NOT EXISTS alert_decisions_by_key ON alert_decisions(route, dedupe_key, ts);
CREATE INDEX IF NOT EXISTS alert_decisions_by_run ON alert_decisions(run_id);
CREATE INDEX IF NOT EXISTS alert_decisions_resets ON alert_decisions(route, id) WHERE decision = 'breaker_reset';
CREATE INDEX IF NOT EXISTS alert_decisions_without_run ON alert_decisions(ts) WHERE run_id IS NULL;
"""
)
_ALERT_TABLES = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS alert_deliveries") :]
_RUN_JSON = ("params", "trigger", "step_hashes", "spec", "options", "holder")
# The runbook snapshot lives in its own table: SQLite rewrites a whole row on every update, and the runs row is
# updated by every commit, so keeping a large spec there would make each step's commit cost grow with the runbook.
_SPEC_COLUMNS = frozenset({"spec", "step_hashes"})
_RUN_COLUMNS = (
    "id", "runbook", "state", "reason", "params", "started_by", "trigger", "created_at", "content_hash", "file", "cursor",
    "idempotency_key", "lock_key", "parent_run_id", "parent_step_id", "holder", "lease_expires_at", "fence",
    "pause_requested", "cancel_requested", "wake_at", "options", "finished_at",
)  # fmt: skip
# A step's commit writes its step rows and events, not the run row: the latest event gives the run's last sequence
# number and, when it is newer than the row, its last change (both through the events primary key, no scan).
_LAST_EVENT = "FROM events WHERE events.run_id = runs.id ORDER BY seq DESC LIMIT 1"
_RUNS = (
    f"SELECT {', '.join('runs.' + c for c in _RUN_COLUMNS)},"
    f" MAX(runs.updated_at, COALESCE((SELECT ts {_LAST_EVENT}), 0)) AS updated_at,"
    f" COALESCE((SELECT seq {_LAST_EVENT}), 0) AS last_seq"
    " FROM runs"
)
_LAST_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id=?1"
_FENCE = f"SELECT fence, pause_requested, cancel_requested, ({_LAST_SEQ}) FROM runs WHERE id=?1"
_RUN_UPDATABLE = frozenset(
    {"state", "reason", "cursor", "finished_at", "wake_at", "options", "pause_requested", "cancel_requested",
     "params", "content_hash", "step_hashes", "spec"}
)  # fmt: skip


class _Connection(sqlite3.Connection):
    """A connection the store can track weakly (``close()`` reaches every live one)."""


class _Owned:
    """Held only by a thread's ``threading.local``: when the thread ends, the connection is closed at once.

    Threads come and go (a server's thread pool, a CLI's heartbeat); a long-running process must not
    accumulate connections (they sit in reference cycles, so without this only the cyclic GC would close them)."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


_dumps = compact_encoder()


def _insert_spec(c: sqlite3.Connection, run_id: str, step_hashes: dict[str, str], spec: dict[str, Any] | JSONText) -> None:
    """Store a run's runbook snapshot: encoded, or already-encoded text as it is (its UTF-8 bytes, never decoded).

    The statement is run a second time with nothing to insert, so that SQLite lets go of its copy of the text: a
    cached statement keeps its last values bound until it runs again (issue 19: a 5000-step runbook is 1.5 MB).
    """
    text: str | bytes = b"".join(spec.chunks) if isinstance(spec, JSONText) else _dumps(spec)
    c.execute(_INSERT_SPEC, (run_id, _dumps(step_hashes), text, 1))
    if len(text) > _LARGE_SPEC:
        c.execute(_INSERT_SPEC, (None, None, None, 0))


_LARGE_SPEC = 1 << 16
"""A snapshot longer than this is let go of by SQLite once written (a shorter one stays bound until the next)."""
_INSERT_SPEC = "INSERT INTO run_specs (run_id, step_hashes, spec) SELECT ?1, ?2, CAST(?3 AS TEXT) WHERE ?4"


_STEP_COLUMNS = "step_id, idx, state, attempts, output, reason, started_at, finished_at, not_before, data"
_INSERT_EVENT = "INSERT INTO events (run_id, seq, ts, type, step_id, attempt, actor, data) VALUES (?,?,?,?,?,?,?,?)"
_UPSERT_STEP = (
    "INSERT INTO steps (run_id, step_id, idx, state, attempts, output, reason, started_at, finished_at, not_before, data)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (run_id, step_id) DO UPDATE SET idx=excluded.idx,"
    " state=excluded.state, attempts=excluded.attempts, output=excluded.output, reason=excluded.reason,"
    " started_at=excluded.started_at, finished_at=excluded.finished_at, not_before=excluded.not_before, data=excluded.data"
)


@functools.lru_cache(maxsize=64)
def _run_update(columns: tuple[str, ...]) -> str:
    """The commit's statement for updating ``columns`` of the run (one string per column set: one cached statement)."""
    return f"UPDATE runs SET updated_at=?{''.join(f', {c}=?' for c in columns)} WHERE id=?"


def _event_row(run_id: str, seq: int, now: float, ev: NewEvent) -> tuple[Any, ...]:
    return (run_id, seq, now, ev.type, ev.step_id, ev.attempt, ev.actor, _dumps(ev.data))


def _step_row(run_id: str, p: StepPatch) -> tuple[Any, ...]:
    return (run_id, p.step_id, p.idx, str(p.state), p.attempts, _dumps(p.output) if p.output is not None else None,
            p.reason, p.started_at, p.finished_at, p.not_before, _dumps(p.data))  # fmt: skip


@functools.lru_cache(maxsize=256)
def _holder(text: str) -> Holder:
    """A stored holder (the same few executors' JSON over and over: parsed once each)."""
    return Holder.model_validate_json(text)


@functools.lru_cache(maxsize=64)
def _holder_json(holder: Holder) -> str:
    return holder.model_dump_json()


class _Signal(WorkSignal):
    """The work signal of an SQLite journal: local wake-ups, and those of other processes on the same journal."""

    def __init__(self, wake: WakeChannel | None) -> None:
        super().__init__()
        self._wake = wake

    def notify(self, n: int = 1) -> None:
        """Wake ``n`` workers of this process, and the idle workers of the others (see :mod:`runbook_sqlite._wake`)."""
        super().notify(n)
        if self._wake is not None:
            self._wake.send()

    def wait(self, seen: int, timeout: float) -> bool:
        """See :meth:`WorkSignal.wait`; from the first wait on, other processes' writes wake this one too."""
        if self._wake is not None:
            self._wake.listen(lambda: WorkSignal.notify(self))
        return super().wait(seen, timeout)


def _path_from_url(url: str) -> tuple[str, dict[str, str]]:
    """File path and options of ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy style)."""
    parsed = urlparse(url)
    if parsed.scheme != "sqlite" or parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"store URL '{url}': expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = unquote(parsed.path)[1:]
    if not path:
        raise ConfigError(f"store URL '{url}' names no file; expected sqlite:///path/to/journal.db")
    return path, {k: v[-1] for k, v in parse_qs(parsed.query).items()}


def list_filters(since: float | None, until: float | None, started_by: str | None) -> tuple[list[str], list[Any]]:
    """WHERE clauses and arguments of ``list_runs``'s time and actor filters."""
    where: list[str] = []
    args: list[Any] = []
    if since is not None:
        where.append("created_at >= ?")
        args.append(since)
    if until is not None:
        where.append("created_at < ?")
        args.append(until)
    if started_by is not None and started_by.endswith("*"):
        where.append("substr(started_by, 1, ?) = ?")  # a prefix, case-sensitive (LIKE is not, GLOB has its own syntax)
        args += [len(started_by) - 1, started_by[:-1]]
    elif started_by is not None:
        where.append("started_by = ?")
        args.append(started_by)
    return where, args


class SQLiteStore(Store):
    """Store in one SQLite file; safe for several processes and threads on one host."""

    signals_work = True

    def __init__(self, url: str) -> None:
        self.url = url
        path, options = _path_from_url(url)
        self.path = path
        sync = options.get("synchronous", "normal").upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"sqlite store: synchronous={sync.lower()} is not one of off, normal, full, extra")
        self._sync = sync
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._outbox = Outbox(_dumps)
        self._writer = threading.Lock()
        """Held by the thread inside a write transaction (see the module docstring)."""
        self._fresh = path == ":memory:" or not os.path.exists(path) or os.path.getsize(path) == 0
        self._checkpointer: threading.Thread | None = None
        self.group = GroupCommit(self)
        """Group commit of :meth:`grouped` units (executors' commits, alert deliveries)."""
        self._closed = threading.Event()
        self._wake = WakeChannel(path) if path != ":memory:" else None
        self._work_signal = _Signal(self._wake)  # what Store.work returns
        self._init_schema()
        self._fresh = False

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        owned: _Owned | None = getattr(self._local, "owned", None)
        conn = owned.conn if owned is not None else None
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False, factory=_Connection)
                if self._fresh:  # before anything is written (WAL mode writes the header): freed pages can be given back
                    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._sync}")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute(f"PRAGMA cache_size={_CACHE_KIB}")
                if self._checkpointer is not None:
                    conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
                    conn.execute(f"PRAGMA mmap_size={_MMAP}")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the journal {self.path}: {exc}") from exc
            conn.row_factory = sqlite3.Row
            self._local.owned = _Owned(conn)
            with self._lock:
                self._all.add(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; inside one (a :meth:`batch`), a savepoint that undoes only its own writes on error."""
        local = self._local
        depth = getattr(local, "depth", 0)
        conn = self._conn()
        if depth:
            yield from self._savepoint(conn, local, depth)
            return
        with self._writer:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"journal {self.path}: cannot start a transaction: {exc}") from exc
            local.depth, local.notify = 1, 0
            try:
                yield conn
            except BaseException:
                with suppress(sqlite3.Error):  # a full disk or a damaged file can fail the rollback too: the first error counts
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise StoreError(f"journal {self.path}: commit failed: {exc}") from exc
            finally:
                local.depth, pending, local.notify = 0, local.notify, 0
        if pending:  # after the commit: a woken worker must find the work
            self.work.notify(pending)

    @staticmethod
    def _savepoint(conn: sqlite3.Connection, local: threading.local, depth: int) -> Iterator[sqlite3.Connection]:
        name = f"sp{depth}"
        conn.execute(f"SAVEPOINT {name}")
        local.depth = depth + 1
        try:
            yield conn
        except BaseException:
            with suppress(sqlite3.Error):  # a full disk or a damaged file can fail the rollback too: the first error counts
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        else:
            conn.execute(f"RELEASE {name}")
        finally:
            local.depth = depth

    def _write(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """One statement in a transaction of its own (or in the current batch); returns its rows (RETURNING)."""
        if getattr(self._local, "depth", 0):
            return self._conn().execute(sql, args).fetchall()
        with self._writer:
            try:
                return self._conn().execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreError(f"journal {self.path}: write failed: {exc}") from exc

    def _notify(self) -> None:
        """A run became claimable: wake a worker now, or when the current transaction commits."""
        local = self._local
        if getattr(local, "depth", 0):
            local.notify += 1
        else:
            self.work.notify()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """See :meth:`Store.batch`: one ``BEGIN IMMEDIATE`` transaction; inner store calls use savepoints."""
        with self._tx():
            yield

    def _init_schema(self) -> None:
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"journal {self.path} has schema version {version}; this runbook version reads up to {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            self._create_schema(version)
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'runs_ready'").fetchone() is None:
            with self._tx() as c:  # an additive step of its own, keyed by the index (see runbook_sqlite._queue)
                _queue.ensure(c)

    def _create_schema(self, version: int) -> None:
        with self._tx() as c:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    c.execute(statement)
            columns = {row[1] for row in c.execute("PRAGMA table_info(runs)")}
            if "spec" in columns:  # a journal from before the snapshot moved to run_specs (also "version 1")
                c.execute("INSERT OR IGNORE INTO run_specs (run_id, step_hashes, spec) SELECT id, step_hashes, spec FROM runs")
            if version and version < 3:
                _typed_progress(c)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if self.path != ":memory:":
            os.chmod(self.path, 0o600)

    def long_running(self) -> None:
        """See :meth:`Store.long_running`: checkpoint the WAL on a thread of its own from now on.

        By default SQLite checkpoints inside the commit that crosses 1000 pages of WAL, with an ``fsync``, while
        holding the journal's writer: on a busy server every few dozen deliveries one of them waits milliseconds.
        And under steady traffic the WAL is never *restarted*: a writer goes back to its beginning only if the
        last checkpoint copied every frame, and some commit always lands while a checkpoint copies, so the WAL
        grows without end (hundreds of MB in minutes; every read then searches a bigger WAL index). The
        checkpointer thread copies what the WAL holds with a ``PASSIVE`` checkpoint every quarter second, beside
        writers and readers; once the WAL passes 64 MiB it resets it with a ``RESTART`` checkpoint of the few
        frames added since, which holds the writer (this process's writers wait on the in-process lock) for the
        copy and an ``fsync``, usually a few milliseconds, and gives up after 50 ms if a reader still uses the
        old frames (it tries again next round).
        """
        if self._checkpointer is not None or self.path == ":memory:":
            return
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, args=(self._closed,), name="runbook-sqlite-checkpoint",
                                              daemon=True)  # fmt: skip
        with self._lock:
            conns = list(self._all)
        for conn in conns:  # before the process's other threads start (the caller's promise): nobody else uses them
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA mmap_size={_MMAP}")
        self._checkpointer.start()

    def _checkpoints(self, closed: threading.Event, every: float = 0.25, restart_at: int = 64 << 20) -> None:
        """Checkpoint every ``every`` seconds; restart the WAL once it holds more than ``restart_at`` bytes."""
        conn = self._conn()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA journal_size_limit={restart_at}")  # a restarted WAL file is cut back to this
        while not closed.wait(every):
            try:
                _busy, logged, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if logged * page > restart_at:
                    with self._writer:
                        conn.execute("PRAGMA busy_timeout=50")
                        try:
                            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                        finally:
                            conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:  # the next round tries again
                log.debug("checkpointing %s: %s", self.path, exc)

    def close(self) -> None:
        """Close every connection this store opened (and stop the checkpointer: used again, it checkpoints as usual)."""
        self._closed.set()
        if self._wake is not None:
            self._wake.close()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
            self._checkpointer = None
        with self._lock:
            for conn in list(self._all):
                with suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ rows

    @staticmethod
    def _run(row: sqlite3.Row) -> RunRecord:
        data = dict(row)
        for key in _RUN_JSON:
            if data.get(key) is not None:
                data[key] = json.loads(data[key])
        data["pause_requested"] = bool(data["pause_requested"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        return RunRecord.model_validate(data)

    @staticmethod
    def _step(run_id: str, row: tuple[Any, ...]) -> StepRecord:
        # Positional (rows of _STEP_COLUMNS) and without a dict per row: a run's steps are read whole, at
        # every start and for every view, so this runs once per step of the runbook each time. Every record
        # shares the caller's run id string (issue 19: a 5000-step run held 5000 copies of it).
        step_id, idx, state, attempts, output, reason, started_at, finished_at, not_before, data = row
        progress = StepProgress() if data == "{}" else StepProgress.from_json(json.loads(data))
        return StepRecord(run_id, step_id, idx, StepState(state), attempts, None if output is None else json.loads(output),
                          reason, started_at, finished_at, not_before, progress)  # fmt: skip

    @staticmethod
    def _event(row: sqlite3.Row) -> Event:
        data = dict(row)
        data["data"] = json.loads(data["data"])
        return Event.model_validate(data)

    def _append(self, c: sqlite3.Connection, run_id: str, events: Sequence[NewEvent], now: float) -> list[Event]:
        """Number (after the run's latest event) and insert ``events``, inside the caller's write transaction."""
        if not events:
            return []
        last = c.execute(_LAST_SEQ, (run_id,)).fetchone()[0]
        return self._insert_events(c, run_id, events, now, first=last + 1)

    @staticmethod
    def _insert_events(c: sqlite3.Connection, run_id: str, events: Sequence[NewEvent], now: float, *, first: int) -> list[Event]:
        rows = [_event_row(run_id, first + i, now, ev) for i, ev in enumerate(events)]
        if rows:
            c.executemany(_INSERT_EVENT, rows)
        return [Event(run_id=run_id, seq=first + i, ts=now, type=ev.type, step_id=ev.step_id, attempt=ev.attempt, actor=ev.actor,
                      data=ev.data) for i, ev in enumerate(events)]  # fmt: skip

    # ------------------------------------------------------------------ runs

    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """See :meth:`Store.create_run`."""
        now = time.time()
        with self._tx() as c:
            if new.idempotency_key is not None:
                row = c.execute(f"{_RUNS} WHERE idempotency_key=?", (new.idempotency_key,)).fetchone()
                if row is not None:
                    return self._run(row), False
            if new.lock_key is not None:
                self._take_lock(c, new.lock_key, new.id)
            c.execute(
                "INSERT INTO runs (id, runbook, state, params, started_by, trigger, created_at, updated_at, content_hash,"
                " file, idempotency_key, lock_key, parent_run_id, parent_step_id, options, wake_at,"
                " holder, lease_expires_at, fence)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (new.id, new.runbook, str(new.state), _dumps(new.params), new.started_by,
                 _dumps(new.trigger) if new.trigger is not None else None, now, now, new.content_hash,
                 new.file, new.idempotency_key, new.lock_key,
                 new.parent_run_id, new.parent_step_id, _dumps(new.options), now if new.state == RunState.QUEUED else None,
                 new.holder.model_dump_json() if new.holder else None, now + new.lease_ttl if new.holder else None,
                 1 if new.holder else 0),
            )  # fmt: skip
            _insert_spec(c, new.id, new.step_hashes, new.spec)
            c.executemany(
                "INSERT INTO steps (run_id, step_id, idx, state) VALUES (?,?,?,'pending')",
                ((new.id, sid, i) for i, sid in enumerate(new.step_ids)),  # (not a list of 5000 rows)
            )
            self._insert_events(
                c, new.id, [NewEvent("run.created", actor=new.started_by, data=new.created_event)], now, first=1
            )  # a new run
            row = c.execute(f"{_RUNS} WHERE runs.id=?", (new.id,)).fetchone()
            if new.state == RunState.QUEUED and new.holder is None and new.parent_run_id is None:
                self._notify()
        return self._run(row), True

    def _take_lock(self, c: sqlite3.Connection, key: str, run_id: str) -> None:
        row = c.execute("SELECT l.run_id, r.state FROM locks l LEFT JOIN runs r ON r.id = l.run_id WHERE l.key=?", (key,)).fetchone()
        if row is not None and row["run_id"] != run_id and row["state"] in {str(s) for s in ACTIVE_STATES}:
            raise LockHeld(key, row["run_id"])
        c.execute("INSERT OR REPLACE INTO locks (key, run_id) VALUES (?,?)", (key, run_id))

    def get_run(self, run_id: str) -> RunRecord:
        """See :meth:`Store.get_run`."""
        row = self._conn().execute(f"{_RUNS} WHERE runs.id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return self._run(row)

    def get_spec(self, run_id: str) -> dict[str, Any]:
        """See :meth:`Store.get_spec`."""
        spec: dict[str, Any] = self._run_spec(run_id, "spec")
        return spec

    def get_step_hashes(self, run_id: str) -> dict[str, str]:
        """See :meth:`Store.get_step_hashes`."""
        hashes: dict[str, str] = self._run_spec(run_id, "step_hashes")
        return hashes

    def _run_spec(self, run_id: str, column: str) -> Any:
        """One JSON column of the run's ``run_specs`` row, decoded (RunNotFound if there is no such run)."""
        row = self._conn().execute(f"SELECT {column} FROM run_specs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return json.loads(row[0])

    def find_run_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """See :meth:`Store.find_run_ids`."""
        upper = prefix + "\uffff"
        rows = self._conn().execute("SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?", (prefix, upper, limit))
        return [r[0] for r in rows]

    def list_runs(
        self, *, runbook: str | None = None, states: Sequence[RunState] = (), parent: str | None = None,
        limit: int = 50, before: str | None = None, since: float | None = None, until: float | None = None,
        started_by: str | None = None,
    ) -> list[RunRecord]:  # fmt: skip
        """See :meth:`Store.list_runs`."""
        where, args = list_filters(since, until, started_by)
        if runbook is not None:
            where.append("runbook=?")
            args.append(runbook)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(str(s) for s in states)
        if parent is not None:
            where.append("parent_run_id=?")
            args.append(parent)
        if before is not None:
            where.append("runs.id < ?")
            args.append(before)
        sql = _RUNS + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY runs.id DESC LIMIT ?"
        return [self._run(r) for r in self._conn().execute(sql, (*args, limit))]

    def count_runs(self) -> dict[tuple[str, str], int]:
        """See :meth:`Store.count_runs`."""
        rows = self._conn().execute("SELECT runbook, state, COUNT(*) FROM runs GROUP BY runbook, state")
        return {(r[0], r[1]): r[2] for r in rows}

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """See :meth:`Store.get_steps`."""
        cursor = self._conn().cursor()
        cursor.row_factory = None  # plain tuples
        rows = cursor.execute(f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id=? ORDER BY idx", (run_id,))
        return [self._step(run_id, r) for r in rows]  # row by row: the rows are not all held beside the records

    def events(self, run_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()) -> list[Event]:
        """See :meth:`Store.events`."""
        sql, args = "SELECT * FROM events WHERE run_id=? AND seq>?", [run_id, after]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            args.extend(types)
        rows = self._conn().execute(sql + " ORDER BY seq LIMIT ?", (*args, limit))
        return [self._event(r) for r in rows]

    # ------------------------------------------------------------------ leases

    def acquire(self, run_id: str, holder: Holder, ttl: float, *, force: bool, is_alive: IsAlive, take_lock: bool = True) -> Lease:
        """See :meth:`Store.acquire`."""
        now = time.time()
        with self._tx() as c:
            row = c.execute(f"{_RUNS} WHERE runs.id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            return self._lease(c, self._run(row), holder, ttl, now, force=force, is_alive=is_alive, take_lock=take_lock)

    def _lease(self, c: sqlite3.Connection, run: RunRecord, holder: Holder, ttl: float, now: float, *,
               force: bool, is_alive: IsAlive, take_lock: bool = True) -> Lease:  # fmt: skip
        prev, took_over = run.holder, None
        if prev is not None and prev != holder:
            live = run.lease_expires_at is not None and run.lease_expires_at > now
            alive = is_alive(prev)
            if alive is False:
                took_over = f"previous executor ({prev.label()}) is no longer running"
            elif not live:
                took_over = f"lease of {prev.label()} expired"
            elif force:
                took_over = f"forced takeover from {prev.label()}"
            else:
                raise LeaseHeld(run.id, prev.label(), (run.lease_expires_at or now) - now)
        if take_lock and run.lock_key is not None and run.state in ACTIVE_STATES | {RunState.FAILED}:
            self._take_lock(c, run.lock_key, run.id)
        fence = run.fence + 1
        c.execute("UPDATE runs SET holder=?, lease_expires_at=?, fence=? WHERE id=?", (_holder_json(holder), now + ttl, fence, run.id))
        return Lease(run.id, holder, fence, ttl, previous=prev if prev != holder else None, previous_state=run.state, took_over=took_over)

    def renew(self, lease: Lease) -> Flags:
        """See :meth:`Store.renew` (one statement)."""
        rows = self._write("UPDATE runs SET lease_expires_at=? WHERE id=? AND fence=? RETURNING pause_requested, cancel_requested",
                           (time.time() + lease.ttl, lease.run_id, lease.fence))  # fmt: skip
        if not rows:
            raise LeaseLost(lease.run_id)
        return Flags(bool(rows[0][0]), bool(rows[0][1]))

    def flags(self, lease: Lease) -> Flags:
        """Outside requests without extending the lease (cheap read)."""
        row = self._conn().execute("SELECT pause_requested, cancel_requested, fence FROM runs WHERE id=?", (lease.run_id,)).fetchone()
        if row is None or row[2] != lease.fence:
            raise LeaseLost(lease.run_id)
        return Flags(bool(row[0]), bool(row[1]))

    def release(self, lease: Lease) -> None:
        """See :meth:`Store.release` (one statement; a worker is woken if the run is claimable at once)."""
        rows = self._write("UPDATE runs SET holder=NULL, lease_expires_at=NULL WHERE id=? AND fence=? AND holder IS NOT NULL"
                           " RETURNING ready_at", (lease.run_id, lease.fence))  # fmt: skip
        if rows and rows[0][0] is not None and rows[0][0] <= time.time():
            self._notify()

    def commit(
        self, lease: Lease, *, events: Sequence[NewEvent] = (), run: dict[str, Any] | None = None,
        steps: Sequence[StepPatch] = (),
    ) -> tuple[int, Flags]:  # fmt: skip
        """See :meth:`Store.commit`. One read checks the fence, numbers the events and reads the flags.

        The run row is written only when ``run`` changes it: a step's start and outcome touch its step row and
        the events alone (one b-tree page fewer per commit than rewriting the run row).
        """
        now = time.time()
        args: list[Any] = [now]
        columns: list[str] = []
        specs: dict[str, Any] = {}
        for key, value in (run or {}).items():
            if key not in _RUN_UPDATABLE:
                raise StoreError(f"run column '{key}' cannot be updated")
            if key in _SPEC_COLUMNS:
                specs[key] = _dumps(value)
                continue
            columns.append(key)
            args.append(_dumps(value) if key in _RUN_JSON else (str(value) if isinstance(value, RunState) else value))
        step_rows = [_step_row(lease.run_id, p) for p in steps]
        state = (run or {}).get("state")
        finished = state is not None and RunState(state) not in ACTIVE_STATES

        def write() -> tuple[int, Flags]:
            c = self._conn()
            row = c.execute(_FENCE, (lease.run_id,)).fetchone()
            if row is None or row[0] != lease.fence:
                raise LeaseLost(lease.run_id)
            if columns:
                c.execute(_run_update(tuple(columns)), (*args, lease.run_id))
            if specs:
                c.execute(f"UPDATE run_specs SET {', '.join(f'{k}=?' for k in specs)} WHERE run_id=?", (*specs.values(), lease.run_id))
            if step_rows:
                c.executemany(_UPSERT_STEP, step_rows)
            first = row[3] + 1
            if events:
                c.executemany(_INSERT_EVENT, [_event_row(lease.run_id, first + i, now, ev) for i, ev in enumerate(events)])
                if outbox := run_notifications(lease.run_id, first, events):  # notifications: with their event
                    self._outbox.add_for_run(c, outbox, now)
            if finished:
                c.execute("DELETE FROM locks WHERE run_id=?", (lease.run_id,))
            return first, Flags(bool(row[1]), bool(row[2]))

        return self.grouped(write)  # other executors' commits of this moment share its transaction

    def grouped(self, fn: Callable[[], T]) -> T:
        """See :meth:`Store.grouped`: units of concurrent threads share one transaction (:class:`GroupCommit`)."""
        if getattr(self._local, "depth", 0):
            with self._tx():
                return fn()
        result: T = self.group.run(fn)
        return result

    # ------------------------------------------------------------------ outside requests

    def request(self, run_id: str, kind: str, *, actor: str, reason: str, data: dict[str, Any] | None = None) -> Event:
        """See :meth:`Store.request`."""
        now = time.time()
        column = {"pause": "pause_requested=1", "cancel": "cancel_requested=1", "resume": "pause_requested=0"}.get(kind)
        with self._tx() as c:
            if c.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise RunNotFound(run_id)
            if column is not None:
                c.execute(f"UPDATE runs SET {column}, updated_at=? WHERE id=?", (now, run_id))
            if kind in ("approve", "deny", "cancel", "wake", "decide", "retry"):
                c.execute("UPDATE runs SET wake_at=? WHERE id=? AND state='waiting'", (now, run_id))
            payload = {"reason": reason, **(data or {})}
            step_id = payload.pop("step_id", None)
            event = self._append(c, run_id, [NewEvent(f"request.{kind}", step_id=step_id, actor=actor, data=payload)], now)[0]
            if kind in ("approve", "deny", "wake", "resume", "decide", "retry"):  # not "cancel": its requester settles an idle run
                self._notify()
            return event

    # ------------------------------------------------------------------ workers

    def claim(self, holder: Holder, ttl: float, *, is_alive: IsAlive, limit: int = 1) -> list[Lease]:
        """See :meth:`Store.claim`: through the live-work index (:mod:`runbook_sqlite._queue`), one row at a time.

        An empty queue costs one indexed read and no write transaction. Runs under a live lease whose holder
        died are looked for only when the ready queue cannot fill ``limit``.
        """
        now = time.time()
        conn = self._conn()
        ready = conn.execute(_queue.READY_PROBE, (now,)).fetchone() is not None
        orphans = [] if ready and limit == 1 else self._orphans(conn, now, is_alive)
        if not ready and not orphans:
            return []
        leases: list[Lease] = []
        with self._tx() as c:
            if ready:
                for row in c.execute(_queue.CLAIM_CANDIDATES, (now, limit + 8)).fetchall():
                    if len(leases) < limit:
                        self._claim_row(c, row, holder, ttl, now, is_alive, leases)
            for run_id, fence in orphans:
                row = c.execute("SELECT id, state, holder, lock_key, fence FROM runs WHERE id=? AND state='running'", (run_id,)).fetchone()
                if len(leases) < limit and row is not None and row[4] == fence:  # unchanged since it was seen
                    self._claim_row(c, row, holder, ttl, now, is_alive, leases, dead=True)
        return leases

    @staticmethod
    def _orphans(conn: sqlite3.Connection, now: float, is_alive: IsAlive) -> list[tuple[str, int]]:
        """Running runs under a live lease whose holder process is gone (``is_alive`` says so)."""
        return [(r[0], r[2]) for r in conn.execute(_queue.RUNNING_HELD, (now,)) if is_alive(_holder(r[1])) is False]

    def _claim_row(self, c: sqlite3.Connection, row: tuple[Any, ...], holder: Holder, ttl: float, now: float, is_alive: IsAlive,
                   leases: list[Lease], *, dead: bool = False) -> None:  # fmt: skip
        run_id, state, held_by, lock_key, fence = row
        prev = _holder(held_by) if held_by is not None else None
        took_over = None
        if prev is not None and prev != holder:
            gone = dead or is_alive(prev) is False
            took_over = f"previous executor ({prev.label()}) is no longer running" if gone else f"lease of {prev.label()} expired"
        if lock_key is not None and RunState(state) in ACTIVE_STATES | {RunState.FAILED}:
            try:
                self._take_lock(c, lock_key, run_id)
            except LockHeld:
                return
        c.execute("UPDATE runs SET holder=?, lease_expires_at=?, fence=? WHERE id=?", (_holder_json(holder), now + ttl, fence + 1, run_id))
        leases.append(Lease(run_id, holder, fence + 1, ttl, previous=prev if prev != holder else None, previous_state=RunState(state),
                            took_over=took_over))  # fmt: skip

    def queue_depth(self) -> int:
        """See :meth:`Store.queue_depth`."""
        return int(self._conn().execute("SELECT COUNT(*) FROM runs WHERE state='queued'").fetchone()[0])

    # ------------------------------------------------------------------ retention

    def prune(self, rules: PruneRules, *, dry_run: bool = False, batch: int = 500,
              should_stop: Callable[[], bool] | None = None, vacuum: str = "auto") -> PruneReport:  # fmt: skip
        """See :meth:`Store.prune` (and :mod:`runbook_sqlite._prune`)."""
        from runbook_sqlite._prune import prune

        return prune(self, rules, dry_run=dry_run, batch=batch, should_stop=should_stop, vacuum=vacuum)

    # ------------------------------------------------------------------ alert deliveries

    def _alerts(self) -> sqlite3.Connection:
        """The connection, with the alert tables created if this journal predates them (no new format version)."""
        conn = self._conn()
        if not getattr(self, "_alert_tables", False):
            with self._tx() as c:
                for statement in _ALERT_TABLES.strip().split(";"):
                    if statement.strip():
                        c.execute(statement)
            self._alert_tables = True
        return conn

    @staticmethod
    def _delivery(row: sqlite3.Row) -> DeliveryRecord:
        from runner.alerts import DeliveryRecord

        data = dict(row)
        data["result"] = json.loads(data["result"]) if data["result"] is not None else None
        return DeliveryRecord.model_validate(data)

    @staticmethod
    def _decision(row: sqlite3.Row) -> DecisionRecord:
        from runner.alerts import DecisionRecord

        data = dict(row)
        data["alert"] = json.loads(data["alert"])
        return DecisionRecord.model_validate(data)

    def begin_delivery(self, delivery_id: str, source: str, body_sha256: str) -> DeliveryRecord:
        """See :meth:`Store.begin_delivery`."""
        self._alerts()
        rows = self._write("INSERT INTO alert_deliveries (id, source, body_sha256, received_at) VALUES (?,?,?,?)"
                           " ON CONFLICT (id) DO UPDATE SET seen = seen + 1 RETURNING *", (delivery_id, source, body_sha256, time.time()))  # fmt: skip
        return self._delivery(rows[0])

    def finish_delivery(self, delivery_id: str, result: dict[str, Any]) -> None:
        """See :meth:`Store.finish_delivery`."""
        self._alerts()
        self._write(
            "UPDATE alert_deliveries SET state='done', finished_at=?, result=? WHERE id=?", (time.time(), _dumps(result), delivery_id)
        )

    def record_decisions(self, decisions: Sequence[NewDecision]) -> list[DecisionRecord]:
        """See :meth:`Store.record_decisions`."""
        self._alerts()
        now = time.time()
        out = []
        with self._tx() as c:
            for d in decisions:
                c.execute(
                    "INSERT INTO alert_decisions (ts, delivery_id, idx, source, decision, route, fingerprint, status, dedupe_key,"
                    " run_id, reason, alert) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (delivery_id, idx) DO NOTHING",
                    (now, d.delivery_id, d.idx, d.source, d.decision, d.route, d.fingerprint, d.status, d.dedupe_key, d.run_id,
                     d.reason, _dumps(d.alert)),
                )  # fmt: skip
                row = c.execute("SELECT * FROM alert_decisions WHERE delivery_id=? AND idx=?", (d.delivery_id, d.idx)).fetchone()
                out.append(self._decision(row))
                self._outbox.add_for_decision(c, out[-1], now)  # notifications: with their decision
        return out

    def list_decisions(
        self, *, route: str | None = None, source: str | None = None, decision: str | None = None,
        delivery_id: str | None = None, run_id: str | None = None, limit: int = 50, before: int | None = None,
    ) -> list[DecisionRecord]:  # fmt: skip
        """See :meth:`Store.list_decisions`."""
        where: list[str] = []
        args: list[Any] = []
        from runner.alerts import DECISIONS

        if decision in DECISIONS:  # a known name, as a literal: a partial index (breaker resets) can serve it
            where.append(f"decision='{decision}'")
        elif decision is not None:
            where.append("decision=?")
            args.append(decision)
        for column, value in (("route", route), ("source", source), ("delivery_id", delivery_id), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        sql = "SELECT * FROM alert_decisions" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC LIMIT ?"
        return [self._decision(r) for r in self._alerts().execute(sql, (*args, limit))]

    def route_runs(self, route: str, *, since: float | None = None, dedupe_key: str | None = None,
                   active_only: bool = False, limit: int = 1000) -> list[RouteRun]:  # fmt: skip
        """See :meth:`Store.route_runs`."""
        sql = ("SELECT d.run_id, d.dedupe_key, d.ts AS started_at, r.state, r.finished_at FROM alert_decisions d"
               " JOIN runs r ON r.id = d.run_id WHERE d.route=? AND d.decision IN ('started','breaker_open')")  # fmt: skip
        args: list[Any] = [route]
        if since is not None:
            sql += " AND d.ts >= ?"
            args.append(since)
        if dedupe_key is not None:
            sql += " AND d.dedupe_key = ?"
            args.append(dedupe_key)
        if active_only:
            sql += f" AND r.state IN ({','.join('?' * len(ACTIVE_STATES))})"
            args.extend(sorted(str(s) for s in ACTIVE_STATES))
        rows = self._alerts().execute(sql + " ORDER BY d.id DESC LIMIT ?", (*args, limit))
        from runner.alerts import RouteRun

        return [RouteRun.model_validate(dict(r)) for r in rows]

    # ------------------------------------------------------------------ notifications (runbook_sqlite/_outbox.py)

    def claim_notifications(self, holder: str, ttl: float, *, limit: int = 10, run_ids: Sequence[str] = ()) -> list[NotificationRecord]:
        """See :meth:`Store.claim_notifications`."""
        with self._tx() as c:
            return self._outbox.claim(c, holder, ttl, limit, run_ids, time.time())

    def update_notification(
        self, key: str, claim: int, *, channels: dict[str, ChannelStatus], state: NotificationState, attempts: int,
        next_at: float | None = None, last_error: str = "", ttl: float | None = None,
    ) -> bool:  # fmt: skip
        """See :meth:`Store.update_notification`."""
        with self._tx() as c:
            return self._outbox.update(c, key, claim, channels=channels, state=state, attempts=attempts, next_at=next_at,
                                       last_error=last_error, ttl=ttl, now=time.time())  # fmt: skip

    def list_notifications(
        self, *, run_id: str | None = None, states: Sequence[str] = (), limit: int = 50, before: float | None = None,
    ) -> list[NotificationRecord]:  # fmt: skip
        """See :meth:`Store.list_notifications`."""
        return self._outbox.list(self._conn(), run_id, states, limit, before)


def _journal_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Translate a SQLite error in ``method`` into a :class:`StoreError` naming the journal file and what to do."""

    @functools.wraps(method)
    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(_explain(getattr(self, "path", "?"), exc)) from exc

    return wrapper


def _explain(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text:
        return f"journal {path}: {text}: free space on its disk, then resume the run (its state is as last recorded)"
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return f"journal {path}: {text}: the file is damaged; restore it from a backup or move it aside to start a new journal"
    return f"journal {path}: {text}"


for _name, _attr in list(vars(SQLiteStore).items()):  # the store's whole surface: no raw sqlite3 error escapes it
    if inspect.isfunction(_attr) and (_name == "__init__" or not _name.startswith("_")):
        setattr(SQLiteStore, _name, _journal_errors(_attr))
