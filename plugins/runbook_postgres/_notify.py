"""The notifications outbox of the PostgreSQL store (see :mod:`runner.notify.outbox`), as the SQLite store keeps it.

Its own table, added to an existing journal by :func:`ensure_outbox` when the store opens (``IF NOT EXISTS``
under the schema's advisory lock; no new journal version). Claims lock rows ``FOR UPDATE SKIP LOCKED`` and
lease them, so concurrent deliverers on any host skip each other's rows; lease times come from the database's
clock, one clock for every host.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from runbook_postgres._conn import Conn, Cursor
from runbook_postgres._values import NOW, jsonb, text
from runner.notify.outbox import decision_notification, run_notifications
from runner.store.base import Store

if TYPE_CHECKING:
    from runner.alerts import DecisionRecord
    from runner.notify.outbox import NotificationState
    from runner.notify.records import ChannelStatus, NotificationRecord
    from runner.store.records import NewEvent

__all__ = ["NotificationOutbox", "add_decision_notification", "add_run_notifications", "ensure_outbox"]

_DDL = """
CREATE TABLE IF NOT EXISTS notifications (
  key text PRIMARY KEY, kind text NOT NULL, run_id text COLLATE "C", seq bigint, step_id text, runbook text,
  created_at double precision NOT NULL, state text NOT NULL DEFAULT 'pending', next_at double precision NOT NULL,
  attempts integer NOT NULL DEFAULT 0, claim bigint NOT NULL DEFAULT 0, holder text, lease_expires_at double precision,
  channels jsonb NOT NULL DEFAULT '{}', data jsonb NOT NULL DEFAULT '{}', last_error text NOT NULL DEFAULT '',
  finished_at double precision
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_by_run ON notifications (run_id);
CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications (created_at)
"""
# Only a run without a parent notifies (its sub-runbook runs reach it); the run's row gives the runbook name.
_ADD_FOR_RUN = (
    "INSERT INTO notifications (key, kind, run_id, seq, step_id, runbook, created_at, next_at, data)"
    " SELECT %s, %s, id, %s, %s, runbook, %s, %s, %s FROM runs WHERE id = %s AND parent_run_id IS NULL ON CONFLICT (key) DO NOTHING"
)
_COLUMNS = (
    "key, kind, run_id, seq, step_id, runbook, created_at, state, next_at, attempts, claim, holder, lease_expires_at, channels,"
    " data, last_error, finished_at"
)


def ensure_outbox(conn: Conn, schema: str) -> None:
    """Create the outbox table in a journal that predates it (a no-op read when it is there)."""
    if conn.execute("SELECT to_regclass('notifications') AS t").fetchone()["t"] is not None:  # type: ignore[index]
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook schema {schema}",))
        for statement in _DDL.split(";"):
            conn.execute(statement)


def add_run_notifications(cur: Cursor, run_id: str, first_seq: int, events: Sequence[NewEvent], ts: float) -> None:
    """Inside a commit's transaction: the outbox rows of ``events`` (numbered from ``first_seq``), if any notify."""
    rows = run_notifications(run_id, first_seq, events)
    if rows:
        cur.executemany(_ADD_FOR_RUN, [(r.key, r.kind, r.seq, r.step_id, ts, ts, jsonb(r.data), run_id) for r in rows])


def add_decision_notification(cur: Cursor, decision: DecisionRecord) -> None:
    """Inside ``record_decisions``' transaction: the outbox row of a decision that notifies."""
    row = decision_notification(decision)
    if row is not None:
        cur.execute(f"INSERT INTO notifications (key, kind, run_id, created_at, next_at, data) VALUES (%s, %s, %s, {NOW}, {NOW}, %s)"
                    " ON CONFLICT (key) DO NOTHING", (row.key, row.kind, row.run_id, jsonb(row.data)))  # fmt: skip


class NotificationOutbox(Store):
    """Claiming, updating and listing notifications."""

    @abstractmethod
    def _tx(self, what: str = "a write") -> AbstractContextManager[Cursor]:
        """One transaction."""

    @abstractmethod
    def _read(self, what: str = "a read") -> AbstractContextManager[Conn]:
        """An autocommit connection."""

    def claim_notifications(self, holder: str, ttl: float, *, limit: int = 10, run_ids: Sequence[str] = ()) -> list[NotificationRecord]:
        """See :meth:`Store.claim_notifications`: rows other claimers have locked are skipped, never shared or waited for."""
        where = f"state = 'pending' AND next_at <= {NOW} AND (lease_expires_at IS NULL OR lease_expires_at < {NOW})"
        args: list[Any] = []
        if run_ids:
            where += " AND run_id = ANY(%s)"
            args.append(list(run_ids))
        with self._tx("claiming notifications") as cur:
            rows = cur.execute(
                f"UPDATE notifications SET holder = %s, lease_expires_at = {NOW} + %s, claim = claim + 1 WHERE key IN"
                f" (SELECT key FROM notifications WHERE {where} ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                (holder, float(ttl), *args, limit),
            ).fetchall()
        from runner.notify.records import NotificationRecord

        return sorted((NotificationRecord.model_validate(r) for r in rows), key=lambda r: r.next_at)

    def update_notification(
        self, key: str, claim: int, *, channels: dict[str, ChannelStatus], state: NotificationState, attempts: int,
        next_at: float | None = None, last_error: str = "", ttl: float | None = None,
    ) -> bool:  # fmt: skip
        """See :meth:`Store.update_notification`."""
        status = {name: s.model_dump(mode="json") for name, s in channels.items()}
        with self._read("recording a notification") as conn:
            row = conn.execute(
                "UPDATE notifications SET channels = %s, state = %s, attempts = %s, next_at = COALESCE(%s, next_at), last_error = %s,"
                f" holder = CASE WHEN %s THEN holder END, lease_expires_at = {NOW} + %s,"
                f" finished_at = CASE WHEN %s THEN NULL ELSE {NOW} END WHERE key = %s AND claim = %s RETURNING key",
                (jsonb(status), state, attempts, next_at, text(last_error), ttl is not None, ttl, state == "pending", key, claim),
            ).fetchone()
        return row is not None

    def list_notifications(
        self, *, run_id: str | None = None, states: Sequence[str] = (), limit: int = 50, before: float | None = None,
    ) -> list[NotificationRecord]:  # fmt: skip
        """See :meth:`Store.list_notifications`."""
        where: list[str] = ["TRUE"]
        args: list[Any] = []
        if run_id is not None:
            where.append("run_id = %s")
            args.append(run_id)
        if states:
            where.append("state = ANY(%s)")
            args.append(list(states))
        if before is not None:
            where.append("created_at < %s")
            args.append(before)
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM notifications WHERE {' AND '.join(where)}"
                                " ORDER BY created_at DESC, key DESC LIMIT %s", (*args, limit)).fetchall()  # fmt: skip
        from runner.notify.records import NotificationRecord

        return [NotificationRecord.model_validate(r) for r in rows]
