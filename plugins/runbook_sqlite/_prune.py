"""Pruning an SQLite journal (:meth:`SQLiteStore.prune <runbook_sqlite.store.SQLiteStore.prune>`).

The rules are :mod:`runner.store.retention`'s. The work is linear in what is old, not in the journal:

1. Top-level runs are read in id order (ULIDs sort by creation time) up to the first id created after the
   cutoff, a page at a time; each page's deletable run trees are planned with indexed reads outside any
   write transaction, then deleted in one short transaction that first checks again that every run of
   each tree is still finished (a retried run may have become active meanwhile).
2. Decisions about no run (through a partial index of those), and deliveries left with no decision (in
   arrival order), are deleted the same way once older than the rules allow.
3. Freed pages go back to the file system: ``PRAGMA incremental_vacuum`` in short steps where the journal has
   ``auto_vacuum=INCREMENTAL`` (journals created since it was introduced); with ``vacuum="auto"`` an older
   journal is switched to it once by a full ``VACUUM``, which rewrites the file (it needs as much free disk as
   the journal, and holds the write lock meanwhile).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from runner.store.records import ACTIVE_STATES
from runner.store.retention import FINISHED_STATES, PruneReport, PruneRules, ulid_floor

if TYPE_CHECKING:
    from runbook_sqlite.store import SQLiteStore

__all__ = ["prune"]

_ACTIVE = tuple(sorted(str(s) for s in ACTIVE_STATES))
_FINISHED = tuple(sorted(str(s) for s in FINISHED_STATES))
_TREE = (
    "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL SELECT runs.id FROM runs JOIN tree ON runs.parent_run_id = tree.id)"
    " SELECT runs.id, runs.state FROM runs JOIN tree ON runs.id = tree.id"
)
_VACUUM_STEP = 2000  # pages (8 MiB at 4 KiB) per incremental-vacuum transaction


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(ids: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


class _Planner:
    """Decides, run by run, what the rules let go (reads only)."""

    def __init__(self, conn: sqlite3.Connection, rules: PruneRules, report: PruneReport, alerts: bool, outbox: bool) -> None:
        self.conn, self.rules, self.report, self.alerts = conn, rules, report, alerts
        self.outbox = outbox
        """The journal has the notifications outbox."""
        self.states = {str(s) for s in rules.states}
        self._newest: dict[str, set[str]] = {}

    def tree(self, row: tuple[Any, ...]) -> list[str] | None:
        """The ids of the run tree rooted at ``row`` if the rules let it go, else None (counted in the report)."""
        run_id, runbook, state, finished_at, updated_at, created_at, parent, key = row
        if parent is not None and self.conn.execute("SELECT 1 FROM runs WHERE id=?", (parent,)).fetchone():
            return None  # a sub-runbook run goes with its parent
        if state not in self.states or (finished_at or updated_at) >= self.rules.finished_before:
            return None
        rule = self._kept_by(run_id, runbook, created_at, key)
        if rule is None:
            tree = self.conn.execute(_TREE, (run_id,)).fetchall()
            if any(s in _ACTIVE for _, s in tree):
                rule = "active_descendant"
            else:
                return [i for i, _ in tree]
        self.report.keep(rule)
        return None

    def _kept_by(self, run_id: str, runbook: str, created_at: float, key: str | None) -> str | None:
        rules = self.rules
        if rules.keep_last and run_id in self._newest_of(runbook):
            return "keep_last"
        if key is not None and created_at > rules.now - rules.idempotency_window:
            return "idempotency_window"
        if self.alerts and self._alert_open(run_id):
            return "alert_open"
        return None

    def _newest_of(self, runbook: str) -> set[str]:
        if runbook not in self._newest:
            rows = self.conn.execute(
                f"SELECT id FROM runs INDEXED BY runs_by_runbook WHERE runbook=? AND parent_run_id IS NULL AND state IN ({_marks(len(self.states))})"
                " ORDER BY id DESC LIMIT ?", (runbook, *sorted(self.states), self.rules.keep_last),
            )  # fmt: skip
            self._newest[runbook] = {r[0] for r in rows}
        return self._newest[runbook]

    def _alert_open(self, run_id: str) -> bool:
        """The run was started by an alert that is still open: its key's newest decision is ``firing`` and recent."""
        since = self.rules.now - self.rules.alert_window
        keys = self.conn.execute(
            "SELECT route, dedupe_key FROM alert_decisions WHERE run_id=? AND decision IN ('started', 'breaker_open')", (run_id,)
        ).fetchall()
        for route, dedupe in keys:
            newest = self.conn.execute("SELECT status, ts FROM alert_decisions INDEXED BY alert_decisions_by_key"
                                       " WHERE route=? AND dedupe_key=? ORDER BY ts DESC LIMIT 1", (route, dedupe)).fetchone()  # fmt: skip
            if newest is not None and newest[0] == "firing" and newest[1] > since:
                return True
        return False


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _delete_trees(c: sqlite3.Connection, trees: list[list[str]], planner: _Planner, dry_run: bool) -> PruneReport:
    """Delete (or count) the trees whose runs are all still finished, inside the caller's transaction."""
    report = PruneReport(dry_run=dry_run, batches=1)
    ids = [i for tree in trees for i in tree]
    active = set()
    for chunk in _chunks(ids):
        active |= {r[0] for r in c.execute(f"SELECT id FROM runs WHERE id IN ({_marks(len(chunk))}) AND state NOT IN ({_marks(len(_FINISHED))})",
                                           (*chunk, *_FINISHED))}  # fmt: skip
    ids = [i for tree in trees if not active.intersection(tree) for i in tree]
    for chunk in _chunks(ids):
        marks = _marks(len(chunk))
        if planner.outbox:  # one still to send stays: its deliverer needs no run (the next prune takes it once sent)
            report.notifications += _apply(c, dry_run, "notifications", f"run_id IN ({marks}) AND state != 'pending'", chunk)
        report.events += _apply(c, dry_run, "events", f"run_id IN ({marks})", chunk)
        report.steps += _apply(c, dry_run, "steps", f"run_id IN ({marks})", chunk)
        _apply(c, dry_run, "run_specs", f"run_id IN ({marks})", chunk)
        _apply(c, dry_run, "locks", f"run_id IN ({marks})", chunk)
        if planner.alerts:
            deliveries = [r[0] for r in c.execute(f"SELECT DISTINCT delivery_id FROM alert_decisions WHERE run_id IN ({marks})", chunk)]
            report.deliveries += _deliveries(c, deliveries, dry_run, f"d.run_id IN ({marks})", chunk)
            report.decisions += _apply(c, dry_run, "alert_decisions", f"run_id IN ({marks})", chunk)
        report.runs += _apply(c, dry_run, "runs", f"id IN ({marks})", chunk)
    return report


def _apply(c: sqlite3.Connection, dry_run: bool, table: str, where: str, args: Sequence[Any]) -> int:
    if dry_run:
        return int(c.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0])
    return c.execute(f"DELETE FROM {table} WHERE {where}", args).rowcount


def _deliveries(c: sqlite3.Connection, ids: Sequence[str], dry_run: bool, going: str, args: Sequence[Any]) -> int:
    """Count (and unless ``dry_run`` delete) the deliveries among ``ids`` left without a decision once the decisions
    matching ``going`` (over ``d``, with ``args``) are gone; called before those decisions are deleted."""
    if not ids:
        return 0
    where = (f"id IN ({_marks(len(ids))}) AND NOT EXISTS (SELECT 1 FROM alert_decisions d"
             f" WHERE d.delivery_id = alert_deliveries.id AND NOT ({going}))")  # fmt: skip
    return _apply(c, dry_run, "alert_deliveries", where, (*ids, *args))


def _runs(store: SQLiteStore, planner: _Planner, report: PruneReport, batch: int, stop: Callable[[], bool]) -> None:
    conn, upper, last = planner.conn, ulid_floor(planner.rules.finished_before), ""
    while not stop():
        rows = conn.execute(
            "SELECT id, runbook, state, finished_at, updated_at, created_at, parent_run_id, idempotency_key FROM runs"
            " WHERE id > ? AND id < ? ORDER BY id LIMIT ?", (last, upper, batch),
        ).fetchall()  # fmt: skip
        if not rows:
            return
        last = rows[-1][0]
        trees = [t for t in map(planner.tree, rows) if t]
        if trees:
            with store._tx() as c:
                report.add(_delete_trees(c, trees, planner, report.dry_run))
    report.stopped = True


def _decisions(store: SQLiteStore, rules: PruneRules, report: PruneReport, batch: int, stop: Callable[[], bool]) -> None:
    """Decisions about no run, and deliveries no decision refers to, once old enough (decisions about a run went
    with it)."""
    conn, before = store._conn(), rules.decisions_before
    after: tuple[float, int] = (-1.0, 0)
    while not stop():
        rows = conn.execute("SELECT ts, id, delivery_id FROM alert_decisions INDEXED BY alert_decisions_without_run"
                            " WHERE run_id IS NULL AND ts < ? AND (ts, id) > (?, ?) ORDER BY ts, id LIMIT ?",
                            (before, *after, batch)).fetchall()  # fmt: skip
        if not rows:
            break
        after, ids = (rows[-1][0], rows[-1][1]), [r[1] for r in rows]
        with store._tx() as c:
            report.deliveries += _deliveries(c, sorted({r[2] for r in rows}), report.dry_run, f"d.id IN ({_marks(len(ids))})", ids)
            report.decisions += _apply(c, report.dry_run, "alert_decisions", f"id IN ({_marks(len(ids))})", ids)
    if report.dry_run:
        return
    last = 0
    while not stop():  # deliveries that never got a decision (a delivery of no alert): in rowid (arrival) order
        rows = conn.execute("SELECT rowid, id, received_at, EXISTS (SELECT 1 FROM alert_decisions d WHERE d.delivery_id = alert_deliveries.id)"
                            " FROM alert_deliveries WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch)).fetchall()  # fmt: skip
        old = [r for r in rows if r[2] < before]
        orphans = [r[1] for r in old if not r[3]]
        if orphans:
            with store._tx() as c:
                report.deliveries += _deliveries(c, orphans, False, "0", ())
        if len(old) < len(rows) or len(rows) < batch:
            return
        last = rows[-1][0]


def _notifications(store: SQLiteStore, rules: PruneRules, report: PruneReport, batch: int, stop: Callable[[], bool]) -> None:
    """Notifications about no remaining run, once as old as decisions may get: sent ones then, ones still to send
    once older than ``notification_window`` too (nothing delivers them any more)."""
    conn, after = store._conn(), (-1.0, "")
    pending_before = min(rules.decisions_before, rules.now - rules.notification_window)
    while not stop():
        rows = conn.execute("SELECT created_at, key FROM notifications INDEXED BY notifications_by_time WHERE created_at < ?"
                            " AND (created_at, key) > (?, ?) AND (state != 'pending' OR created_at < ?) AND (run_id IS NULL OR NOT EXISTS"
                            " (SELECT 1 FROM runs WHERE runs.id = notifications.run_id)) ORDER BY created_at, key LIMIT ?",
                            (rules.decisions_before, *after, pending_before, batch)).fetchall()  # fmt: skip
        if not rows:
            return
        after, keys = (rows[-1][0], rows[-1][1]), [r[1] for r in rows]
        with store._tx() as c:
            report.notifications += _apply(c, report.dry_run, "notifications", f"key IN ({_marks(len(keys))})"
                                           " AND (state != 'pending' OR created_at < ?)", (*keys, pending_before))  # fmt: skip


def _size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))


def _vacuum(store: SQLiteStore, report: PruneReport, vacuum: str, stop: Callable[[], bool]) -> None:
    conn = store._conn()
    mode = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
    if mode == 2 and vacuum in ("auto", "incremental"):
        while not stop() and conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            store._write(f"PRAGMA incremental_vacuum({_VACUUM_STEP})", ())
        report.vacuum = "incremental"
    elif mode == 0 and vacuum == "incremental":
        report.vacuum = "unavailable"  # only a full VACUUM can switch this journal to incremental vacuum
        return
    elif mode == 0 and vacuum == "auto" and (report.runs or conn.execute("PRAGMA freelist_count").fetchone()[0]):
        with store._writer:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
        report.vacuum = "full"
    else:
        return
    with store._writer:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def prune(store: SQLiteStore, rules: PruneRules, *, dry_run: bool, batch: int, should_stop: Callable[[], bool] | None,
          vacuum: str) -> PruneReport:  # fmt: skip
    """See the module docstring."""
    if vacuum not in ("auto", "incremental", "none"):
        raise ValueError(f"vacuum must be auto, incremental or none, not {vacuum!r}")
    stop = should_stop or (lambda: False)
    report = PruneReport(dry_run=dry_run)
    memory = store.path == ":memory:"
    report.bytes_before = None if memory else _size(store.path)
    conn = store._conn()
    alerts, outbox = _has_table(conn, "alert_decisions"), _has_table(conn, "notifications")
    if alerts:
        store._alerts()  # a journal from before the breaker-reset index gets it now
    _runs(store, _Planner(conn, rules, report, alerts, outbox), report, max(1, batch), stop)
    if alerts and not report.stopped:
        _decisions(store, rules, report, max(1, batch), stop)
    if outbox and not report.stopped:
        _notifications(store, rules, report, max(1, batch), stop)
    if not dry_run and not memory:
        _vacuum(store, report, vacuum, stop)
    report.bytes_after = None if memory else _size(store.path)
    report.stopped = report.stopped or stop()
    return report
