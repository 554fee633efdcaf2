"""Pruning a PostgreSQL journal (``PostgresStore.prune``): the rules of :mod:`runner.store.retention`.

The same plan as the SQLite store's (:mod:`runbook_sqlite._prune`): top-level runs read in id order (ULIDs sort
by creation time) up to the cutoff, a page at a time; each page's deletable run trees planned with reads on an
autocommit connection, then deleted in one short transaction that checks again, under row locks, that every
run of each tree is still finished. Decisions about no run and deliveries left without a decision go once old
enough, through two small indexes created on first use; so do sent notifications about no run. Freed space is PostgreSQL's autovacuum's to reuse:
``vacuum`` is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from runner.store.records import ACTIVE_STATES
from runner.store.retention import FINISHED_STATES, PruneReport, PruneRules, ulid_floor

if TYPE_CHECKING:
    from runbook_postgres._conn import Conn, Cursor
    from runbook_postgres.store import PostgresStore

__all__ = ["prune"]

_ACTIVE = sorted(str(s) for s in ACTIVE_STATES)
_FINISHED = sorted(str(s) for s in FINISHED_STATES)
_TREE = (
    'WITH RECURSIVE tree(id) AS (SELECT %s::text COLLATE "C" UNION ALL SELECT r.id FROM runs r JOIN tree ON r.parent_run_id = tree.id)'
    " SELECT runs.id, runs.state FROM runs JOIN tree ON runs.id = tree.id"
)
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS alert_decisions_without_run ON alert_decisions (ts) WHERE run_id IS NULL",
    "CREATE INDEX IF NOT EXISTS alert_deliveries_by_time ON alert_deliveries (received_at)",
)


def _chunks(ids: Sequence[str], size: int = 1000) -> Iterable[list[str]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


class _Planner:
    """Decides, run by run, what the rules let go (reads only)."""

    def __init__(self, conn: Conn, rules: PruneRules, report: PruneReport) -> None:
        self.conn, self.rules, self.report = conn, rules, report
        self.states = sorted(str(s) for s in rules.states)
        self._newest: dict[str, set[str]] = {}

    def tree(self, row: dict[str, Any]) -> list[str] | None:
        if row["parent_run_id"] is not None and self.conn.execute("SELECT 1 FROM runs WHERE id = %s", (row["parent_run_id"],)).fetchone():
            return None  # a sub-runbook run goes with its parent
        if row["state"] not in self.states or (row["finished_at"] or row["updated_at"]) >= self.rules.finished_before:
            return None
        rule = self._kept_by(row)
        if rule is None:
            tree = self.conn.execute(_TREE, (row["id"],)).fetchall()
            if any(r["state"] in _ACTIVE for r in tree):
                rule = "active_descendant"
            else:
                return [r["id"] for r in tree]
        self.report.keep(rule)
        return None

    def _kept_by(self, row: dict[str, Any]) -> str | None:
        rules = self.rules
        if rules.keep_last and row["id"] in self._newest_of(row["runbook"]):
            return "keep_last"
        if row["idempotency_key"] is not None and row["created_at"] > rules.now - rules.idempotency_window:
            return "idempotency_window"
        if self._alert_open(row["id"]):
            return "alert_open"
        return None

    def _newest_of(self, runbook: str) -> set[str]:
        if runbook not in self._newest:
            rows = self.conn.execute("SELECT id FROM runs WHERE runbook = %s AND parent_run_id IS NULL AND state = ANY(%s)"
                                     " ORDER BY id DESC LIMIT %s", (runbook, self.states, self.rules.keep_last))  # fmt: skip
            self._newest[runbook] = {r["id"] for r in rows}
        return self._newest[runbook]

    def _alert_open(self, run_id: str) -> bool:
        since = self.rules.now - self.rules.alert_window
        keys = self.conn.execute("SELECT route, dedupe_key FROM alert_decisions WHERE run_id = %s AND decision IN ('started', 'breaker_open')",
                                 (run_id,)).fetchall()  # fmt: skip
        for key in keys:
            newest = self.conn.execute("SELECT status, ts FROM alert_decisions WHERE route = %s AND dedupe_key = %s ORDER BY ts DESC LIMIT 1",
                                       (key["route"], key["dedupe_key"])).fetchone()  # fmt: skip
            if newest is not None and newest["status"] == "firing" and newest["ts"] > since:
                return True
        return False


def _apply(cur: Cursor, dry_run: bool, table: str, where: str, args: Sequence[Any]) -> int:
    if dry_run:
        row = cur.execute(f"SELECT count(*) AS n FROM {table} WHERE {where}", args).fetchone()
        return int(row["n"]) if row else 0
    return cur.execute(f"DELETE FROM {table} WHERE {where}", args).rowcount


def _deliveries(cur: Cursor, ids: Sequence[str], dry_run: bool, going: str, args: Sequence[Any]) -> int:
    """Count (and unless ``dry_run`` delete) the deliveries among ``ids`` left without a decision once the decisions
    matching ``going`` (over ``d``) are gone; called before those decisions are deleted."""
    if not ids:
        return 0
    where = f"id = ANY(%s) AND NOT EXISTS (SELECT 1 FROM alert_decisions d WHERE d.delivery_id = alert_deliveries.id AND NOT ({going}))"
    return _apply(cur, dry_run, "alert_deliveries", where, (list(ids), *args))


def _delete_trees(cur: Cursor, trees: list[list[str]], dry_run: bool, outbox: bool) -> PruneReport:
    report = PruneReport(dry_run=dry_run, batches=1)
    every = [i for tree in trees for i in tree]
    active = {r["id"] for r in cur.execute("SELECT id FROM runs WHERE id = ANY(%s) AND NOT (state = ANY(%s)) FOR UPDATE",
                                           (every, _FINISHED)).fetchall()}  # fmt: skip
    ids = [i for tree in trees if not active.intersection(tree) for i in tree]
    for chunk in _chunks(ids):
        if outbox:  # one still to send stays: its deliverer needs no run (the next prune takes it once sent)
            report.notifications += _apply(cur, dry_run, "notifications", "run_id = ANY(%s) AND state <> 'pending'", (chunk,))
        report.events += _apply(cur, dry_run, "events", "run_id = ANY(%s)", (chunk,))
        report.steps += _apply(cur, dry_run, "steps", "run_id = ANY(%s)", (chunk,))
        _apply(cur, dry_run, "locks", "run_id = ANY(%s)", (chunk,))
        deliveries = [
            r["delivery_id"] for r in cur.execute("SELECT DISTINCT delivery_id FROM alert_decisions WHERE run_id = ANY(%s)", (chunk,))
        ]
        report.deliveries += _deliveries(cur, deliveries, dry_run, "d.run_id = ANY(%s)", (chunk,))
        report.decisions += _apply(cur, dry_run, "alert_decisions", "run_id = ANY(%s)", (chunk,))
        report.runs += _apply(cur, dry_run, "runs", "id = ANY(%s)", (chunk,))
    return report


def _runs(store: PostgresStore, rules: PruneRules, report: PruneReport, batch: int, stop: Callable[[], bool], outbox: bool) -> None:
    upper, last = ulid_floor(rules.finished_before), ""
    while not stop():
        with store._read("planning a prune") as conn:
            rows = conn.execute("SELECT id, runbook, state, finished_at, updated_at, created_at, parent_run_id, idempotency_key FROM runs"
                                " WHERE id > %s AND id < %s ORDER BY id LIMIT %s", (last, upper, batch)).fetchall()  # fmt: skip
            if not rows:
                return
            last = rows[-1]["id"]
            planner = _Planner(conn, rules, report)
            trees = [t for t in map(planner.tree, rows) if t]
        if trees:
            with store._tx("pruning runs") as cur:
                report.add(_delete_trees(cur, trees, report.dry_run, outbox))
    report.stopped = True


def _decisions(store: PostgresStore, rules: PruneRules, report: PruneReport, batch: int, stop: Callable[[], bool]) -> None:
    before, after = rules.decisions_before, (-1.0, 0)
    while not stop():
        with store._read("planning a prune") as conn:
            rows = conn.execute("SELECT ts, id, delivery_id FROM alert_decisions WHERE run_id IS NULL AND ts < %s AND (ts, id) > (%s, %s)"
                                " ORDER BY ts, id LIMIT %s", (before, *after, batch)).fetchall()  # fmt: skip
        if not rows:
            break
        after, ids = (rows[-1]["ts"], rows[-1]["id"]), [r["id"] for r in rows]
        with store._tx("pruning decisions") as cur:
            report.deliveries += _deliveries(cur, sorted({r["delivery_id"] for r in rows}), report.dry_run, "d.id = ANY(%s)", (ids,))
            report.decisions += _apply(cur, report.dry_run, "alert_decisions", "id = ANY(%s)", (ids,))
    if report.dry_run:
        return
    while not stop():  # deliveries that never got a decision (a delivery of no alert)
        with store._tx("pruning deliveries") as cur:
            rows = cur.execute("SELECT id FROM alert_deliveries d WHERE received_at < %s AND NOT EXISTS (SELECT 1 FROM alert_decisions x"
                               " WHERE x.delivery_id = d.id) LIMIT %s", (before, batch)).fetchall()  # fmt: skip
            if not rows:
                return
            report.deliveries += _apply(cur, False, "alert_deliveries", "id = ANY(%s)", ([r["id"] for r in rows],))


def _notifications(store: PostgresStore, rules: PruneRules, report: PruneReport, batch: int, stop: Callable[[], bool]) -> None:
    """Sent (or given up) notifications about no remaining run, once as old as decisions may get."""
    after: tuple[float, str] = (-1.0, "")
    pending_before = min(rules.decisions_before, rules.now - rules.notification_window)
    while not stop():
        with store._read("planning a prune") as conn:
            rows = conn.execute("SELECT created_at, key FROM notifications n WHERE created_at < %s AND (created_at, key) > (%s, %s)"
                                " AND (state <> 'pending' OR created_at < %s)"
                                " AND (run_id IS NULL OR NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = n.run_id))"
                                " ORDER BY created_at, key LIMIT %s", (rules.decisions_before, *after, pending_before, batch)).fetchall()  # fmt: skip
        if not rows:
            return
        after, keys = (rows[-1]["created_at"], rows[-1]["key"]), [r["key"] for r in rows]
        with store._tx("pruning notifications") as cur:
            report.notifications += _apply(cur, report.dry_run, "notifications", "key = ANY(%s) AND (state <> 'pending' OR created_at < %s)",
                                           (keys, pending_before))  # fmt: skip


def prune(store: PostgresStore, rules: PruneRules, *, dry_run: bool, batch: int, should_stop: Callable[[], bool] | None) -> PruneReport:
    """See the module docstring."""
    stop = should_stop or (lambda: False)
    report = PruneReport(dry_run=dry_run)
    with store._read("preparing a prune") as conn:
        for statement in _INDEXES:
            conn.execute(statement)
        row = conn.execute("SELECT to_regclass('notifications') IS NOT NULL AS present").fetchone()
        outbox = bool(row and row["present"])
    _runs(store, rules, report, max(1, batch), stop, outbox)
    if not report.stopped:
        _decisions(store, rules, report, max(1, batch), stop)
    if outbox and not report.stopped:
        _notifications(store, rules, report, max(1, batch), stop)
    report.stopped = report.stopped or stop()
    return report
