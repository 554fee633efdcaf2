"""The "alert deliveries" section of the store (used by ``runbook serve``), as the SQLite store implements it."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from runbook_postgres._conn import Conn, Cursor
from runbook_postgres._notify import add_decision_notification
from runbook_postgres._values import NOW, jsonb, text
from runner.alerts import DecisionRecord, DeliveryRecord, NewDecision, RouteRun
from runner.store.base import Store
from runner.store.records import ACTIVE_STATES

__all__ = ["AlertDeliveries"]

_ACTIVE = sorted(str(s) for s in ACTIVE_STATES)


class AlertDeliveries(Store):
    """Webhook deliveries, the decision taken for each alert, and the runs each route started."""

    @abstractmethod
    def _tx(self, what: str = "a write") -> AbstractContextManager[Cursor]:
        """One transaction."""

    @abstractmethod
    def _read(self, what: str = "a read") -> AbstractContextManager[Conn]:
        """An autocommit connection."""

    def begin_delivery(self, delivery_id: str, source: str, body_sha256: str) -> DeliveryRecord:
        """See :meth:`Store.begin_delivery`."""
        with self._tx("recording a delivery") as cur:
            row = cur.execute(
                f"INSERT INTO alert_deliveries (id, source, body_sha256, received_at) VALUES (%s, %s, %s, {NOW})"
                " ON CONFLICT (id) DO UPDATE SET seen = alert_deliveries.seen + 1 RETURNING *",
                (delivery_id, source, body_sha256),
            ).fetchone()
        assert row is not None  # INSERT ... ON CONFLICT DO UPDATE always returns the row
        return DeliveryRecord.model_validate(row)

    def finish_delivery(self, delivery_id: str, result: dict[str, Any]) -> None:
        """See :meth:`Store.finish_delivery`."""
        with self._read("finishing a delivery") as conn:
            conn.execute(f"UPDATE alert_deliveries SET state = 'done', finished_at = {NOW}, result = %s WHERE id = %s",
                         (jsonb(result), delivery_id))  # fmt: skip

    def record_decisions(self, decisions: Sequence[NewDecision]) -> list[DecisionRecord]:
        """See :meth:`Store.record_decisions`."""
        out = []
        with self._tx("recording alert decisions") as cur:
            for d in decisions:
                cur.execute(
                    "INSERT INTO alert_decisions (ts, delivery_id, idx, source, decision, route, fingerprint, status,"
                    f" dedupe_key, run_id, reason, alert) VALUES ({NOW}, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (delivery_id, idx) DO NOTHING",
                    (d.delivery_id, d.idx, d.source, d.decision, d.route, d.fingerprint, d.status, d.dedupe_key, d.run_id,
                     text(d.reason), jsonb(d.alert)),
                )  # fmt: skip
                row = cur.execute("SELECT * FROM alert_decisions WHERE delivery_id = %s AND idx = %s", (d.delivery_id, d.idx)).fetchone()
                out.append(DecisionRecord.model_validate(row))
                add_decision_notification(cur, out[-1])  # notifications: with their decision
        return out

    def list_decisions(
        self, *, route: str | None = None, source: str | None = None, decision: str | None = None,
        delivery_id: str | None = None, run_id: str | None = None, limit: int = 50, before: int | None = None,
    ) -> list[DecisionRecord]:  # fmt: skip
        """See :meth:`Store.list_decisions`."""
        where: list[str] = ["TRUE"]
        args: list[Any] = []
        filters = (("route", route), ("source", source), ("decision", decision), ("delivery_id", delivery_id), ("run_id", run_id))
        for column, value in filters:
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        if before is not None:
            where.append("id < %s")
            args.append(before)
        with self._read() as conn:
            rows = conn.execute(f"SELECT * FROM alert_decisions WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
                                (*args, limit)).fetchall()  # fmt: skip
        return [DecisionRecord.model_validate(r) for r in rows]

    def route_runs(self, route: str, *, since: float | None = None, dedupe_key: str | None = None,
                   active_only: bool = False, limit: int = 1000) -> list[RouteRun]:  # fmt: skip
        """See :meth:`Store.route_runs`."""
        sql = ("SELECT d.run_id, d.dedupe_key, d.ts AS started_at, r.state, r.finished_at FROM alert_decisions d"
               " JOIN runs r ON r.id = d.run_id WHERE d.route = %s AND d.decision IN ('started', 'breaker_open')")  # fmt: skip
        args: list[Any] = [route]
        if since is not None:
            sql += " AND d.ts >= %s"
            args.append(since)
        if dedupe_key is not None:
            sql += " AND d.dedupe_key = %s"
            args.append(dedupe_key)
        if active_only:
            sql += " AND r.state = ANY(%s)"
            args.append(_ACTIVE)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY d.id DESC LIMIT %s", (*args, limit)).fetchall()
        return [RouteRun.model_validate(r) for r in rows]
