"""The notifications outbox of the SQLite store (see :mod:`runner.notify.outbox`).

Its own table, created in the first write transaction that needs it (``CREATE TABLE IF NOT EXISTS``, no new
journal format version), so opening a journal stays read-only and an older journal gains it on first use.
Claims are serialised like every write (``BEGIN IMMEDIATE``); the lease and the ``claim`` counter make a second
deliverer skip a row until the first one's lease ends.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runner.notify.outbox import decision_notification

if TYPE_CHECKING:
    from runner.alerts import DecisionRecord
    from runner.notify.outbox import NewNotification
    from runner.notify.records import ChannelStatus, NotificationRecord

__all__ = ["Outbox"]

_DDL = """
CREATE TABLE IF NOT EXISTS notifications (
  key TEXT PRIMARY KEY, kind TEXT NOT NULL, run_id TEXT, seq INTEGER, step_id TEXT, runbook TEXT,
  created_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending', next_at REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, claim INTEGER NOT NULL DEFAULT 0, holder TEXT, lease_expires_at REAL,
  channels TEXT NOT NULL DEFAULT '{}', data TEXT NOT NULL DEFAULT '{}', last_error TEXT NOT NULL DEFAULT '',
  finished_at REAL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_by_run ON notifications(run_id);
CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications(created_at)
"""
# Only a run without a parent notifies (its sub-runbook runs reach it); the run's row gives the runbook name.
_ADD_FOR_RUN = (
    "INSERT OR IGNORE INTO notifications (key, kind, run_id, seq, step_id, runbook, created_at, next_at, data)"
    " SELECT ?, ?, ?, ?, ?, runbook, ?, ?, ? FROM runs WHERE id = ? AND parent_run_id IS NULL"
)
_ADD = "INSERT OR IGNORE INTO notifications (key, kind, run_id, seq, step_id, created_at, next_at, data) VALUES (?,?,?,?,?,?,?,?)"
_JSON = ("channels", "data")


def _record(row: sqlite3.Row) -> NotificationRecord:
    from runner.notify.records import NotificationRecord

    data = dict(row)
    for key in _JSON:
        data[key] = json.loads(data[key])
    return NotificationRecord.model_validate(data)


class Outbox:
    """The outbox statements, run on the store's connection inside its transactions."""

    def __init__(self, dumps: Callable[[Any], str]) -> None:
        self._dumps = dumps
        self._ready = False

    def ensure(self, c: sqlite3.Connection) -> None:
        """Create the table (inside the caller's write transaction) unless this store did already."""
        if not self._ready:
            for statement in _DDL.split(";"):
                c.execute(statement)
            self._ready = True

    def exists(self, c: sqlite3.Connection) -> bool:
        """True if the journal has the table (reads never create it)."""
        return self._ready or c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='notifications'").fetchone() is not None

    def add_for_run(self, c: sqlite3.Connection, rows: Sequence[NewNotification], now: float) -> None:
        """Write a commit's outbox rows (``rows`` is not empty: most commits never get here)."""
        self.ensure(c)
        c.executemany(_ADD_FOR_RUN, [(r.key, r.kind, r.run_id, r.seq, r.step_id, now, now, self._dumps(r.data), r.run_id) for r in rows])

    def add_for_decision(self, c: sqlite3.Connection, decision: DecisionRecord, now: float) -> None:
        """Write the outbox row of an alert decision that notifies."""
        row = decision_notification(decision)
        if row is not None:
            self.ensure(c)
            c.execute(_ADD, (row.key, row.kind, row.run_id, None, None, now, now, self._dumps(row.data)))

    def claim(
        self, c: sqlite3.Connection, holder: str, ttl: float, limit: int, run_ids: Sequence[str], now: float
    ) -> list[NotificationRecord]:
        """See :meth:`Store.claim_notifications` (inside a write transaction)."""
        self.ensure(c)
        sql = (
            "SELECT key FROM notifications WHERE state = 'pending' AND next_at <= ? AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
        )
        args: list[Any] = [now, now]
        if run_ids:
            sql += f" AND run_id IN ({','.join('?' * len(run_ids))})"
            args.extend(run_ids)
        keys = [r[0] for r in c.execute(sql + " ORDER BY next_at LIMIT ?", (*args, limit))]
        if not keys:
            return []
        rows = c.execute(
            f"UPDATE notifications SET holder = ?, lease_expires_at = ?, claim = claim + 1 WHERE key IN ({','.join('?' * len(keys))})"
            " RETURNING *",
            (holder, now + ttl, *keys),
        ).fetchall()
        return sorted((_record(r) for r in rows), key=lambda r: r.next_at)

    def update(self, c: sqlite3.Connection, key: str, claim: int, *, channels: dict[str, ChannelStatus], state: str, attempts: int,
               next_at: float | None, last_error: str, ttl: float | None, now: float) -> bool:  # fmt: skip
        """See :meth:`Store.update_notification` (inside a write transaction)."""
        self.ensure(c)
        status = self._dumps({name: s.model_dump(mode="json") for name, s in channels.items()})
        cur = c.execute(
            "UPDATE notifications SET channels = ?, state = ?, attempts = ?, next_at = COALESCE(?, next_at), last_error = ?,"
            " holder = CASE WHEN ? THEN holder END, lease_expires_at = ?, finished_at = ? WHERE key = ? AND claim = ?",
            (status, state, attempts, next_at, last_error, ttl is not None, None if ttl is None else now + ttl,
             None if state == "pending" else now, key, claim),
        )  # fmt: skip
        return cur.rowcount == 1

    def list(
        self, c: sqlite3.Connection, run_id: str | None, states: Sequence[str], limit: int, before: float | None
    ) -> list[NotificationRecord]:
        """See :meth:`Store.list_notifications`."""
        if not self.exists(c):
            return []
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if before is not None:
            where.append("created_at < ?")
            args.append(before)
        rows = c.execute(
            f"SELECT * FROM notifications WHERE {' AND '.join(where)} ORDER BY created_at DESC, key DESC LIMIT ?", (*args, limit)
        )
        return [_record(r) for r in rows]
