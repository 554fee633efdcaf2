"""PostgreSQL journal store: many workers on many hosts share one journal.

Same semantics as the SQLite store, with row locks instead of a single writer:

- Every executor write is one transaction that starts with ``UPDATE runs ... WHERE id=%s AND fence=%s``:
  no row means the lease was taken over (:class:`~runner.errors.LeaseLost`). That update also takes the
  run's row lock and advances ``last_seq``, so event sequence numbers are assigned without gaps or
  duplicates however many writers (executor, outside requests) race.
- :meth:`PostgresStore.claim` selects runnable runs ``FOR UPDATE SKIP LOCKED``: concurrent claimers on
  any host skip each other's rows instead of waiting or sharing them.
- Lease expiry and every stored time come from the database's clock (``now()``), one clock for all hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from psycopg.rows import DictRow

from runbook_postgres._alerts import AlertDeliveries
from runbook_postgres._conn import Conn, Cursor, Pool, parse_url
from runbook_postgres._notify import NotificationOutbox, add_run_notifications, ensure_outbox
from runbook_postgres._schema import ensure_schema
from runbook_postgres._values import NOW, jsonb, text
from runner.errors import LeaseHeld, LeaseLost, LockHeld, RunNotFound, StoreError
from runner.store.base import IsAlive
from runner.store.records import (
    ACTIVE_STATES,
    Event,
    Flags,
    Holder,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunState,
    StepPatch,
    StepRecord,
)

if TYPE_CHECKING:
    from runner.store.retention import PruneReport, PruneRules

__all__ = ["PostgresStore"]

_ACTIVE = sorted(str(s) for s in ACTIVE_STATES)
_ACTIVE_SQL = ", ".join(f"'{s}'" for s in _ACTIVE)  # literal, so the planner can use the partial index runs_claimable
_RUN_JSON = frozenset({"params", "trigger", "step_hashes", "spec", "options"})
_RUN_BOOL = frozenset({"pause_requested", "cancel_requested"})
_RUN_UPDATABLE = frozenset(
    {"state", "reason", "cursor", "finished_at", "wake_at", "options", "pause_requested", "cancel_requested",
     "params", "content_hash", "step_hashes", "spec"}
)  # fmt: skip
_RUN = (
    "id, runbook, state, reason, params, started_by, trigger, created_at, updated_at, finished_at, content_hash,"
    " step_hashes, file, cursor, idempotency_key, lock_key, parent_run_id, parent_step_id, holder, lease_expires_at,"
    " fence, pause_requested, cancel_requested, wake_at, options, last_seq"
)
"""Every column of ``runs`` but the runbook snapshot (``spec``, as large as the runbook: see ``get_spec``)."""
_INSERT_RUN = (
    "INSERT INTO runs (id, runbook, state, params, started_by, trigger, created_at, updated_at, content_hash, step_hashes,"
    " spec, file, idempotency_key, lock_key, parent_run_id, parent_step_id, options, wake_at, holder, lease_expires_at,"
    f" fence, last_seq) VALUES (%s, %s, %s, %s, %s, %s, {NOW}, {NOW}, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    f" CASE WHEN %s THEN {NOW} END, %s, {NOW} + %s, %s, 1) ON CONFLICT (idempotency_key) DO NOTHING RETURNING " + _RUN
)
_INSERT_EVENT = "INSERT INTO events (run_id, seq, ts, type, step_id, attempt, actor, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
_UPSERT_STEP = (
    "INSERT INTO steps (run_id, step_id, idx, state, attempts, output, reason, started_at, finished_at, not_before, data)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, step_id) DO UPDATE SET idx = excluded.idx,"
    " state = excluded.state, attempts = excluded.attempts, output = excluded.output, reason = excluded.reason,"
    " started_at = excluded.started_at, finished_at = excluded.finished_at, not_before = excluded.not_before,"
    " data = excluded.data"
)
_CLAIMABLE = (
    f"SELECT {_RUN}, {NOW} AS db_now FROM runs WHERE state IN ({_ACTIVE_SQL}) AND (holder IS NULL OR lease_expires_at < {NOW})"
    " AND parent_run_id IS NULL"  # sub-runbook runs are driven by their parent's executor
    f" AND (state = 'running' OR (state = 'queued' AND NOT pause_requested)"
    f" OR (state = 'waiting' AND wake_at <= {NOW} AND NOT pause_requested)"
    " OR (state IN ('paused', 'waiting', 'interrupted') AND cancel_requested))"
    " AND id <> ALL(%s) ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED"
)


class PostgresStore(NotificationOutbox, AlertDeliveries):
    """Store in a PostgreSQL database (one schema); safe for many processes on many hosts."""

    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        self.url = parsed.safe  # printed by `runbook worker`/`serve`: never the password
        self._pool = Pool(parsed)
        try:
            with self._pool.errors("opening the journal"), self._pool.connection() as conn:
                ensure_schema(conn, parsed.schema, f"PostgreSQL store {parsed.safe}")
                ensure_outbox(conn, parsed.schema)
        except BaseException:
            self._pool.close()
            raise

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _tx(self, what: str = "a write") -> Iterator[Cursor]:
        """One transaction on a pooled connection; committed on success, rolled back on any exception."""
        with self._pool.errors(what), self._pool.connection() as conn, conn.transaction():
            yield conn.cursor()

    @contextmanager
    def _read(self, what: str = "a read") -> Iterator[Conn]:
        """A pooled connection in autocommit mode (each statement sees the latest committed data)."""
        with self._pool.errors(what), self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        """Close the pooled connections (the store reconnects if it is used again)."""
        self._pool.close()

    # ------------------------------------------------------------------ rows

    @staticmethod
    def _insert_events(cur: Cursor, run_id: str, events: Sequence[NewEvent], first: int, ts: float) -> list[Event]:
        out = [Event(run_id=run_id, seq=first + i, ts=ts, type=ev.type, step_id=ev.step_id, attempt=ev.attempt,
                     actor=ev.actor, data=ev.data) for i, ev in enumerate(events)]  # fmt: skip
        if out:
            cur.executemany(_INSERT_EVENT, [(e.run_id, e.seq, e.ts, e.type, e.step_id, e.attempt, e.actor, jsonb(e.data)) for e in out])
        return out

    # ------------------------------------------------------------------ runs

    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """See :meth:`Store.create_run`. A concurrent insert with the same idempotency key returns that run.

        With ``new.holder`` the run is inserted already leased (fence 1), so no claim can take it first.
        """
        with self._tx("creating a run") as cur:
            row = cur.execute(_INSERT_RUN, (
                new.id, new.runbook, str(new.state), jsonb(new.params), new.started_by, jsonb(new.trigger), new.content_hash,
                jsonb(new.step_hashes), jsonb(new.spec), new.file, new.idempotency_key, new.lock_key, new.parent_run_id,
                new.parent_step_id, jsonb(new.options), new.state == RunState.QUEUED, self._holder(new.holder),
                float(new.lease_ttl) if new.holder else None, 1 if new.holder else 0,
            )).fetchone()  # fmt: skip
            if row is None:  # the key was used before (or by a transaction that committed while we waited on it)
                existing = cur.execute(f"SELECT {_RUN} FROM runs WHERE idempotency_key = %s", (new.idempotency_key,)).fetchone()
                if existing is None:
                    raise StoreError(f"run {new.id}: insert conflicted on idempotency key '{new.idempotency_key}' but no run has it")
                return RunRecord.model_validate(existing), False
            if new.lock_key is not None:
                self._take_lock(cur, new.lock_key, new.id)
            cur.executemany("INSERT INTO steps (run_id, step_id, idx, state) VALUES (%s, %s, %s, 'pending')",
                            [(new.id, sid, i) for i, sid in enumerate(new.step_ids)])  # fmt: skip
            created = NewEvent("run.created", actor=new.started_by, data=new.created_event)
            self._insert_events(cur, new.id, [created], 1, row["created_at"])
        return RunRecord.model_validate(row), True

    @staticmethod
    def _holder(holder: Holder | None) -> Any:
        return None if holder is None else jsonb(holder.model_dump(mode="json"))

    @staticmethod
    def _take_lock(cur: Cursor, key: str, run_id: str) -> None:
        """Point lock ``key`` at ``run_id`` unless another active run holds it (LockHeld)."""
        for _ in range(10):  # a holder may release the key between our two statements: try again
            if cur.execute("INSERT INTO locks (key, run_id) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
                           (key, run_id)).fetchone() is not None:  # fmt: skip
                return
            row = cur.execute("SELECT run_id FROM locks WHERE key = %s FOR UPDATE", (key,)).fetchone()
            if row is None:
                continue
            if row["run_id"] != run_id:
                holder = cur.execute("SELECT state FROM runs WHERE id = %s", (row["run_id"],)).fetchone()
                if holder is not None and holder["state"] in _ACTIVE:
                    raise LockHeld(key, row["run_id"])
                cur.execute("UPDATE locks SET run_id = %s WHERE key = %s", (run_id, key))
            return
        raise StoreError(f"lock '{key}' kept changing hands while run {run_id} tried to take it; try again")

    def get_run(self, run_id: str) -> RunRecord:
        """See :meth:`Store.get_run`."""
        with self._read() as conn:
            row = conn.execute(f"SELECT {_RUN} FROM runs WHERE id = %s", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return RunRecord.model_validate(row)

    def get_spec(self, run_id: str) -> dict[str, Any]:
        """See :meth:`Store.get_spec`."""
        with self._read() as conn:
            row = conn.execute("SELECT spec FROM runs WHERE id = %s", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        spec: dict[str, Any] = row["spec"]
        return spec

    def find_run_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """See :meth:`Store.find_run_ids`."""
        with self._read() as conn:
            rows = conn.execute("SELECT id FROM runs WHERE id >= %s AND id < %s ORDER BY id LIMIT %s",
                                (prefix, prefix + "\uffff", limit)).fetchall()  # fmt: skip
        return [r["id"] for r in rows]

    def list_runs(
        self, *, runbook: str | None = None, states: Sequence[RunState] = (), parent: str | None = None,
        limit: int = 50, before: str | None = None,
    ) -> list[RunRecord]:  # fmt: skip
        """See :meth:`Store.list_runs`."""
        where: list[str] = ["TRUE"]
        args: list[Any] = []
        for clause, value in (("runbook = %s", runbook), ("parent_run_id = %s", parent), ("id < %s", before)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if states:
            where.append("state = ANY(%s)")
            args.append([str(s) for s in states])
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_RUN} FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s", (*args, limit)).fetchall()
        return [RunRecord.model_validate(r) for r in rows]

    def count_runs(self) -> dict[tuple[str, str], int]:
        """See :meth:`Store.count_runs`."""
        with self._read() as conn:
            rows = conn.execute("SELECT runbook, state, count(*) AS n FROM runs GROUP BY runbook, state").fetchall()
        return {(r["runbook"], r["state"]): int(r["n"]) for r in rows}

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """See :meth:`Store.get_steps`."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM steps WHERE run_id = %s ORDER BY idx", (run_id,)).fetchall()
        return [StepRecord.from_row(r) for r in rows]

    def events(self, run_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()) -> list[Event]:
        """See :meth:`Store.events`."""
        sql, args = "SELECT * FROM events WHERE run_id = %s AND seq > %s", [run_id, after]
        if types:
            sql += " AND type = ANY(%s)"
            args.append(list(types))
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY seq LIMIT %s", (*args, limit)).fetchall()
        return [Event.model_validate(r) for r in rows]

    # ------------------------------------------------------------------ leases

    def acquire(self, run_id: str, holder: Holder, ttl: float, *, force: bool, is_alive: IsAlive, take_lock: bool = True) -> Lease:
        """See :meth:`Store.acquire`."""
        with self._tx("acquiring a lease") as cur:
            row = cur.execute(f"SELECT {_RUN}, {NOW} AS db_now FROM runs WHERE id = %s FOR UPDATE", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            return self._lease(cur, row, holder, ttl, force=force, is_alive=is_alive, take_lock=take_lock)

    def _lease(self, cur: Cursor, row: DictRow, holder: Holder, ttl: float, *, force: bool, is_alive: IsAlive,
               take_lock: bool = True) -> Lease:  # fmt: skip
        """Take the lease of a run whose row this transaction has locked."""
        run, now = RunRecord.model_validate(row), float(row["db_now"])
        prev, took_over = run.holder, None
        if prev is not None and prev != holder:
            live = run.lease_expires_at is not None and run.lease_expires_at > now
            if is_alive(prev) is False:
                took_over = f"previous executor ({prev.label()}) is no longer running"
            elif not live:
                took_over = f"lease of {prev.label()} expired"
            elif force:
                took_over = f"forced takeover from {prev.label()}"
            else:
                raise LeaseHeld(run.id, prev.label(), (run.lease_expires_at or now) - now)
        if take_lock and run.lock_key is not None and run.state in ACTIVE_STATES | {RunState.FAILED}:
            self._take_lock(cur, run.lock_key, run.id)
        cur.execute(f"UPDATE runs SET holder = %s, lease_expires_at = {NOW} + %s, fence = %s WHERE id = %s",
                    (self._holder(holder), float(ttl), run.fence + 1, run.id))  # fmt: skip
        return Lease(run.id, holder, run.fence + 1, ttl, previous=prev if prev != holder else None, previous_state=run.state,
                     took_over=took_over)  # fmt: skip

    def renew(self, lease: Lease) -> Flags:
        """See :meth:`Store.renew`."""
        with self._read("renewing a lease") as conn:
            row = conn.execute(f"UPDATE runs SET lease_expires_at = {NOW} + %s WHERE id = %s AND fence = %s"
                               " RETURNING pause_requested, cancel_requested", (float(lease.ttl), lease.run_id, lease.fence)).fetchone()  # fmt: skip
        if row is None:
            raise LeaseLost(lease.run_id)
        return Flags(row["pause_requested"], row["cancel_requested"])

    def flags(self, lease: Lease) -> Flags:
        """Outside requests without extending the lease (cheap read)."""
        with self._read() as conn:
            row = conn.execute("SELECT pause_requested, cancel_requested, fence FROM runs WHERE id = %s", (lease.run_id,)).fetchone()
        if row is None or row["fence"] != lease.fence:
            raise LeaseLost(lease.run_id)
        return Flags(row["pause_requested"], row["cancel_requested"])

    def release(self, lease: Lease) -> None:
        """See :meth:`Store.release`."""
        with self._read("releasing a lease") as conn:
            conn.execute("UPDATE runs SET holder = NULL, lease_expires_at = NULL WHERE id = %s AND fence = %s", (lease.run_id, lease.fence))

    def commit(
        self, lease: Lease, *, events: Sequence[NewEvent] = (), run: dict[str, Any] | None = None,
        steps: Sequence[StepPatch] = (),
    ) -> tuple[int, Flags]:  # fmt: skip
        """See :meth:`Store.commit`."""
        sets, args = [f"updated_at = {NOW}", "last_seq = last_seq + %s"], [len(events)]
        for key, value in (run or {}).items():
            sets.append(f"{key} = %s")
            args.append(self._run_value(key, value))
        with self._tx("committing") as cur:
            row = cur.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = %s AND fence = %s"
                              " RETURNING last_seq, updated_at, pause_requested, cancel_requested",
                              (*args, lease.run_id, lease.fence)).fetchone()  # fmt: skip
            if row is None:
                raise LeaseLost(lease.run_id)
            if steps:
                cur.executemany(_UPSERT_STEP, [self._step_values(lease.run_id, p) for p in steps])
            first = row["last_seq"] - len(events) + 1
            self._insert_events(cur, lease.run_id, events, first, row["updated_at"])
            add_run_notifications(cur, lease.run_id, first, events, row["updated_at"])  # notifications: with their event
            state = (run or {}).get("state")
            if state is not None and RunState(state) not in ACTIVE_STATES:
                cur.execute("DELETE FROM locks WHERE run_id = %s", (lease.run_id,))
        return first, Flags(row["pause_requested"], row["cancel_requested"])

    @staticmethod
    def _run_value(key: str, value: Any) -> Any:
        if key not in _RUN_UPDATABLE:
            raise StoreError(f"run column '{key}' cannot be updated")
        if key in _RUN_JSON:
            return jsonb(value)
        if key in _RUN_BOOL:
            return bool(value)
        if key == "reason":
            return text(value)
        return str(value) if isinstance(value, RunState) else value

    @staticmethod
    def _step_values(run_id: str, p: StepPatch) -> tuple[Any, ...]:
        return (run_id, p.step_id, p.idx, str(p.state), p.attempts, jsonb(p.output), text(p.reason), p.started_at,
                p.finished_at, p.not_before, jsonb(p.data))  # fmt: skip

    # ------------------------------------------------------------------ outside requests

    def request(self, run_id: str, kind: str, *, actor: str, reason: str, data: dict[str, Any] | None = None) -> Event:
        """See :meth:`Store.request`."""
        column = {"pause": "pause_requested = true", "cancel": "cancel_requested = true", "resume": "pause_requested = false"}.get(kind)
        sets = ["last_seq = last_seq + 1"] + ([column, f"updated_at = {NOW}"] if column else [])
        if kind in ("approve", "deny", "cancel", "wake", "decide", "retry"):  # a decision (or a cancel) wakes a waiting run for the workers
            sets.append(f"wake_at = CASE WHEN state = 'waiting' THEN {NOW} ELSE wake_at END")
        payload = {"reason": text(reason), **(data or {})}
        step_id = payload.pop("step_id", None)
        with self._tx("recording a request") as cur:
            row = cur.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = %s RETURNING last_seq, {NOW} AS ts", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            event = NewEvent(f"request.{kind}", step_id=step_id, actor=actor, data=payload)
            return self._insert_events(cur, run_id, [event], row["last_seq"], row["ts"])[0]

    # ------------------------------------------------------------------ workers

    def claim(self, holder: Holder, ttl: float, *, is_alive: IsAlive, limit: int = 1) -> list[Lease]:
        """See :meth:`Store.claim`: rows other claimers have locked are skipped, never shared or waited for."""
        leases: list[Lease] = []
        tried: list[str] = []
        with self._tx("claiming runs") as cur:
            while len(leases) < limit:  # lock only as many rows as are still wanted: other workers get the rest
                rows = cur.execute(_CLAIMABLE, (tried, limit - len(leases))).fetchall()
                if not rows:
                    break
                for row in rows:
                    tried.append(row["id"])
                    self._try_lease(cur, row, holder, ttl, is_alive, leases)
            if len(leases) < limit:
                for row in self._orphans(cur, is_alive, limit - len(leases)):
                    self._try_lease(cur, row, holder, ttl, is_alive, leases)
        return leases

    def _try_lease(self, cur: Cursor, row: DictRow, holder: Holder, ttl: float, is_alive: IsAlive, leases: list[Lease]) -> None:
        with suppress(LeaseHeld, LockHeld):  # taken meanwhile, or its lock key is held: the next candidate
            leases.append(self._lease(cur, row, holder, ttl, force=False, is_alive=is_alive))

    @staticmethod
    def _orphans(cur: Cursor, is_alive: IsAlive, limit: int) -> list[DictRow]:
        """Running runs with an unexpired lease whose same-host holder process is gone, locked for this claim."""
        rows = cur.execute(
            f"SELECT id, holder FROM runs WHERE state = 'running' AND holder IS NOT NULL AND lease_expires_at >= {NOW}"
            " AND parent_run_id IS NULL"
        ).fetchall()
        dead = [r["id"] for r in rows if is_alive(Holder.model_validate(r["holder"])) is False][:limit]
        if not dead:
            return []
        return cur.execute(f"SELECT {_RUN}, {NOW} AS db_now FROM runs WHERE id = ANY(%s) AND state = 'running'"
                           " ORDER BY created_at FOR UPDATE SKIP LOCKED", (dead,)).fetchall()  # fmt: skip

    def queue_depth(self) -> int:
        """See :meth:`Store.queue_depth`."""
        with self._read() as conn:
            row = conn.execute("SELECT count(*) AS n FROM runs WHERE state = 'queued'").fetchone()
        return int(row["n"]) if row else 0

    def prune(self, rules: PruneRules, *, dry_run: bool = False, batch: int = 500,
              should_stop: Callable[[], bool] | None = None, vacuum: str = "auto") -> PruneReport:  # fmt: skip
        """See :meth:`Store.prune` and :mod:`runbook_postgres._prune` (``vacuum`` is autovacuum's business here)."""
        from runbook_postgres._prune import prune

        return prune(self, rules, dry_run=dry_run, batch=batch, should_stop=should_stop)
