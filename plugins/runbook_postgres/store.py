"""PostgreSQL journal store: many workers on many hosts share one journal.

Same semantics as the SQLite store, with row locks instead of a single writer:

- Every executor write is one statement (:mod:`runbook_postgres._sql`) built around
  ``UPDATE runs ... WHERE id = $run AND fence = $token``: no row means the lease was taken over
  (:class:`~runner.errors.LeaseLost`) and nothing else in the statement writes. That update also takes the
  run's row lock and advances ``last_seq``, so event sequence numbers are assigned without gaps or
  duplicates however many writers (executor, outside requests) race. One round trip per step's commit.
- :meth:`PostgresStore.claim` takes runnable runs ``FOR UPDATE SKIP LOCKED`` from live-work partial indexes
  (never finished history): concurrent claimers on any host skip each other's rows instead of waiting or
  sharing them.
- Writes that make a run claimable notify the store's channel; :meth:`PostgresStore.subscribe` hears them
  (``LISTEN``), so idle workers claim at once instead of at their next poll.
- Lease expiry and every stored time come from the database's clock (``now()``), one clock for all hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from psycopg.rows import DictRow

from runbook_postgres import _sql
from runbook_postgres._alerts import AlertDeliveries
from runbook_postgres._conn import Conn, Cursor, Pool, parse_url
from runbook_postgres._notify import NotificationOutbox
from runbook_postgres._schema import ensure_schema
from runbook_postgres._values import NOW, json_text, jsonb, text
from runbook_postgres._wake import Listener, channel_name
from runner.errors import LeaseHeld, LeaseLost, LockHeld, RunNotFound, StoreError
from runner.notify.outbox import run_notifications
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
_RUN = _sql.RUN
_RUN_JSON = frozenset({"params", "trigger", "step_hashes", "spec", "options"})
_RUN_BOOL = frozenset({"pause_requested", "cancel_requested"})
_RUN_UPDATABLE = frozenset(
    {"state", "reason", "cursor", "finished_at", "wake_at", "options", "pause_requested", "cancel_requested",
     "params", "content_hash", "step_hashes", "spec"}
)  # fmt: skip


class PostgresStore(NotificationOutbox, AlertDeliveries):
    """Store in a PostgreSQL database (one schema); safe for many processes on many hosts."""

    signals_work = True

    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        self.url = parsed.safe  # printed by `runbook worker`/`serve`: never the password
        self._pool = Pool(parsed)
        self._channel = channel_name(parsed.schema)
        self._listener = Listener(parsed, self._channel)
        try:
            with self._pool.errors("opening the journal"), self._pool.connection() as conn:
                ensure_schema(conn, parsed.schema, f"PostgreSQL store {parsed.safe}")
        except BaseException:
            self._pool.close()
            raise

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _tx(self, what: str = "a write") -> Iterator[Cursor]:
        """One transaction on a pooled connection; committed on success, rolled back on any exception.

        Inside this thread's :meth:`batch`: a savepoint of the batch's transaction (it commits with the batch).
        """
        with self._pool.errors(what), self._pool.transaction() as conn:
            yield conn.cursor()

    @contextmanager
    def _read(self, what: str = "a read") -> Iterator[Conn]:
        """A pooled connection in autocommit mode (each statement sees the latest committed data).

        Inside this thread's :meth:`batch`: the batch's connection, in a savepoint (its statements see the batch's
        writes, and one that fails undoes only this call's).
        """
        with self._pool.errors(what), self._pool.connection() as conn:
            yield conn

    def _one(self, what: str, query: str, params: dict[str, Any]) -> DictRow | None:
        """Run one statement (one round trip, its own transaction; in a batch, in a savepoint) and return its first row.

        psycopg prepares a statement on the server once a connection has run it five times (one more round trip,
        once): the statements of every step are prepared, the ones a short command runs once are not.
        """
        return self._pool.one(what, query, params)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """See :meth:`Store.batch`: one transaction on one pooled connection that this thread holds until the block
        ends; every store call the thread makes inside runs on it in a savepoint (so a call that raises, e.g.
        :class:`LockHeld`, undoes only its own writes). Other threads borrow other connections and see nothing of
        the batch until it commits. A nested block joins in a savepoint of its own. Times stored inside the block
        are the batch's (``now()`` is the transaction's start).

        ``pg_notify`` wake-ups sent inside are delivered by PostgreSQL at the commit, and only if it commits; this
        process's own workers are woken (:attr:`Store.work`) after the commit too, not when the call returns: a
        worker woken earlier would claim before the commit, find nothing and go back to sleep until its next poll.
        """
        outermost = self._pool.current_batch() is None
        with self._pool.batch("a batch of writes") as state:
            yield
        if outermost and state.wakes:
            self.work.notify(state.wakes)

    def close(self) -> None:
        """Close the pooled connections and stop listening (the store reconnects if it is used again)."""
        self._listener.close()
        self._pool.close()

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """See :meth:`Store.subscribe`: ``LISTEN`` on this journal's channel, on a connection of its own."""
        return self._listener.subscribe(wake)

    # ------------------------------------------------------------------ runs

    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """See :meth:`Store.create_run`. A concurrent insert with the same idempotency key returns that run.

        With ``new.holder`` the run is inserted already leased (fence 1), so no claim can take it first. One
        statement; with a lock key, one transaction that is rolled back if another active run holds the key.
        """
        params = {
            "id": new.id, "runbook": new.runbook, "state": str(new.state), "params": jsonb(new.params),
            "started_by": new.started_by, "trigger": jsonb(new.trigger), "content_hash": new.content_hash,
            "step_hashes": jsonb(new.step_hashes), "spec": jsonb(new.spec), "file": new.file,
            "idempotency_key": new.idempotency_key, "lock_key": new.lock_key, "parent_run_id": new.parent_run_id,
            "parent_step_id": new.parent_step_id, "options": jsonb(new.options), "queued": new.state == RunState.QUEUED,
            "holder": self._holder(new.holder), "ttl": float(new.lease_ttl) if new.holder else None,
            "fence": 1 if new.holder else 0, "step_ids": list(new.step_ids), "created": jsonb(new.created_event),
            "channel": self._channel,
        }  # fmt: skip
        if new.lock_key is None:
            row = self._one("creating a run", _sql.create_sql(False), params)
        else:
            with self._tx("creating a run") as cur:
                row = cur.execute(_sql.create_sql(True), params).fetchone()
                if row is not None and not row["locked"]:  # fresh reads decide (LockHeld rolls the run back)
                    self._take_lock(cur, new.lock_key, new.id)
                    if row["claimable"]:
                        cur.execute("SELECT pg_notify(%s, '')", (self._channel,))
                        row["notified"] = 1
        if row is not None:
            self._signal(row)
            return RunRecord.model_validate(row), True
        # the key was used before (or by a transaction that committed while this insert waited on it)
        with self._read("creating a run") as conn:
            existing = conn.execute(f"SELECT {_RUN} FROM runs WHERE idempotency_key = %s", (new.idempotency_key,)).fetchone()
        if existing is None:
            raise StoreError(f"run {new.id}: insert conflicted on idempotency key '{new.idempotency_key}' but no run has it")
        return RunRecord.model_validate(existing), False

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
        row = self._one("a read", f"SELECT {_RUN} FROM runs WHERE id = %(id)s", {"id": run_id})
        if row is None:
            raise RunNotFound(run_id)
        return RunRecord.model_validate(row)

    def get_spec(self, run_id: str) -> dict[str, Any]:
        """See :meth:`Store.get_spec`."""
        spec: dict[str, Any] = self._run_json(run_id, "spec")
        return spec

    def get_step_hashes(self, run_id: str) -> dict[str, str]:
        """See :meth:`Store.get_step_hashes`."""
        hashes: dict[str, str] = self._run_json(run_id, "step_hashes")
        return hashes

    def _run_json(self, run_id: str, column: str) -> Any:
        """One ``jsonb`` column of the run's row, decoded (RunNotFound if there is no such run)."""
        with self._read() as conn:
            row = conn.execute(f"SELECT {column} FROM runs WHERE id = %s", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return row[column]

    def find_run_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """See :meth:`Store.find_run_ids`."""
        with self._read() as conn:
            rows = conn.execute("SELECT id FROM runs WHERE id >= %s AND id < %s ORDER BY id LIMIT %s",
                                (prefix, prefix + "\uffff", limit)).fetchall()  # fmt: skip
        return [r["id"] for r in rows]

    def list_runs(
        self, *, runbook: str | None = None, states: Sequence[RunState] = (), parent: str | None = None,
        limit: int = 50, before: str | None = None, since: float | None = None, until: float | None = None,
        started_by: str | None = None,
    ) -> list[RunRecord]:  # fmt: skip
        """See :meth:`Store.list_runs`."""
        where: list[str] = ["TRUE"]
        args: list[Any] = []
        prefix = started_by[:-1] if started_by is not None and started_by.endswith("*") else None
        for clause, value in (("runbook = %s", runbook), ("parent_run_id = %s", parent), ("id < %s", before),
                              ("created_at >= %s", since), ("created_at < %s", until),
                              ("started_by = %s", None if prefix is not None else started_by),
                              ("starts_with(started_by, %s)", prefix)):  # fmt: skip
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
        rows = self._pool.run("a read", "SELECT * FROM steps WHERE run_id = %(id)s ORDER BY idx", {"id": run_id})
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
        """See :meth:`Store.acquire`.

        One statement when the lease is free, expired or this holder's already (and the lock key free or the
        run's); otherwise a transaction decides whether the live holder is gone or may be forced out.
        """
        row = self._one("acquiring a lease", _sql.acquire_sql(take_lock), {"id": run_id, "holder": self._holder(holder), "ttl": float(ttl)})
        if row is None:
            raise RunNotFound(run_id)
        if row["fence"] is not None:
            return self._granted(run_id, int(row["fence"]), row["holder"], row["state"], holder, ttl, is_alive)
        with self._tx("acquiring a lease") as cur:
            locked = cur.execute(f"SELECT {_RUN}, {NOW} AS db_now FROM runs WHERE id = %s FOR UPDATE", (run_id,)).fetchone()
            if locked is None:
                raise RunNotFound(run_id)
            return self._lease(cur, locked, holder, ttl, force=force, is_alive=is_alive, take_lock=take_lock)

    @staticmethod
    def _granted(run_id: str, fence: int, previous: Any, state: str, holder: Holder, ttl: float, is_alive: IsAlive) -> Lease:
        """The lease a statement granted over a free, expired or own lease (``previous`` is the stored holder)."""
        prev = None if previous is None else Holder.model_validate(previous)
        took_over = None
        if prev is not None and prev != holder:  # granted over another holder: its lease had expired
            took_over = (f"previous executor ({prev.label()}) is no longer running" if is_alive(prev) is False
                         else f"lease of {prev.label()} expired")  # fmt: skip
        return Lease(run_id, holder, fence, ttl, previous=prev if prev != holder else None, previous_state=RunState(state),
                     took_over=took_over)  # fmt: skip

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
        row = self._one("renewing a lease", f"UPDATE runs SET lease_expires_at = {NOW} + %(ttl)s::float8 WHERE id = %(id)s"
                        " AND fence = %(fence)s RETURNING pause_requested, cancel_requested",
                        {"ttl": float(lease.ttl), "id": lease.run_id, "fence": lease.fence})  # fmt: skip
        if row is None:
            raise LeaseLost(lease.run_id)
        return Flags(row["pause_requested"], row["cancel_requested"])

    def flags(self, lease: Lease) -> Flags:
        """Outside requests without extending the lease (cheap read)."""
        row = self._one("a read", "SELECT pause_requested, cancel_requested, fence FROM runs WHERE id = %(id)s", {"id": lease.run_id})
        if row is None or row["fence"] != lease.fence:
            raise LeaseLost(lease.run_id)
        return Flags(row["pause_requested"], row["cancel_requested"])

    def release(self, lease: Lease) -> None:
        """See :meth:`Store.release`. Wakes the workers if the run is runnable without its holder."""
        self._signal(self._one("releasing a lease", _sql.RELEASE, {"id": lease.run_id, "fence": lease.fence, "channel": self._channel}))

    def _signal(self, row: dict[str, Any] | None) -> None:
        """After a statement that notified the channel (a run became claimable): wake this process's idle workers
        at once (``LISTEN`` brings the same news to the other processes' workers)."""
        if row is not None and row.get("notified"):
            batch = self._pool.current_batch()
            if batch is None:
                self.work.notify()
            else:  # after the batch commits (see batch()); a nested batch that raises takes its wake-ups back
                batch.wakes += 1

    def commit(
        self, lease: Lease, *, events: Sequence[NewEvent] = (), run: dict[str, Any] | None = None,
        steps: Sequence[StepPatch] = (),
    ) -> tuple[int, Flags]:  # fmt: skip
        """See :meth:`Store.commit`: one statement, so one round trip, fenced by the lease's token."""
        params: dict[str, Any] = {"id": lease.run_id, "fence": lease.fence, "n": len(events)}
        for key, value in (run or {}).items():
            params[key] = self._run_value(key, value)
        if steps:
            params["steps"] = json_text([self._step_doc(p) for p in steps])
        if events:
            params["events"] = json_text([{"type": e.type, "step_id": e.step_id, "attempt": e.attempt, "actor": e.actor, "data": e.data}
                                          for e in events])  # fmt: skip
        notes = run_notifications(lease.run_id, 0, events)  # numbered from 0: the statement adds the first event's number
        if notes:
            params["notes"] = json_text([{"i": n.seq, "kind": n.kind, "step_id": n.step_id, "data": n.data} for n in notes])
        state = (run or {}).get("state")
        unlock = state is not None and RunState(state) not in ACTIVE_STATES
        row = self._one("committing", _sql.commit_sql(tuple(run or ()), bool(steps), bool(events), unlock, bool(notes)), params)
        if row is None:
            raise LeaseLost(lease.run_id)
        return row["last_seq"] - len(events) + 1, Flags(row["pause_requested"], row["cancel_requested"])

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
    def _step_doc(p: StepPatch) -> dict[str, Any]:
        return {"step_id": p.step_id, "idx": p.idx, "state": str(p.state), "attempts": p.attempts, "output": p.output,
                "reason": p.reason, "started_at": p.started_at, "finished_at": p.finished_at, "not_before": p.not_before,
                "data": p.data}  # fmt: skip

    # ------------------------------------------------------------------ outside requests

    def request(self, run_id: str, kind: str, *, actor: str, reason: str, data: dict[str, Any] | None = None) -> Event:
        """See :meth:`Store.request`. One statement; it wakes the workers if the run is runnable now."""
        column = {"pause": "pause_requested = true", "cancel": "cancel_requested = true", "resume": "pause_requested = false"}.get(kind)
        sets = ["last_seq = last_seq + 1"] + ([column, f"updated_at = {NOW}"] if column else [])
        if kind in ("approve", "deny", "cancel", "wake", "decide", "retry"):  # a decision (or a cancel) wakes a waiting run for the workers
            sets.append(f"wake_at = CASE WHEN state = 'waiting' THEN {NOW} ELSE wake_at END")
        payload = {"reason": text(reason), **(data or {})}
        step_id = payload.pop("step_id", None)
        row = self._one("recording a request", _sql.request_sql(tuple(sets)), {
            "id": run_id, "type": f"request.{kind}", "step_id": step_id, "actor": actor, "data": jsonb(payload),
            "channel": self._channel,
        })  # fmt: skip
        if row is None:
            raise RunNotFound(run_id)
        self._signal(row)
        return Event(run_id=run_id, seq=row["last_seq"], ts=row["ts"], type=f"request.{kind}", step_id=step_id, actor=actor, data=payload)

    # ------------------------------------------------------------------ workers

    def claim(self, holder: Holder, ttl: float, *, is_alive: IsAlive, limit: int = 1) -> list[Lease]:
        """See :meth:`Store.claim`: one statement; rows other claimers have locked are skipped, never shared or waited for.

        Running runs whose unexpired lease belongs to a dead process on this host (which only ``is_alive`` can
        tell) come back from the same statement as candidates; only when there are some is a second
        transaction needed to take them over.
        """
        rows = self._one_all("claiming runs", _sql.CLAIM, {"n": limit, "holder": self._holder(holder), "ttl": float(ttl)})
        rows.sort(key=lambda r: r["created_at"])
        leases = [self._granted(r["id"], int(r["fence"]), r["prev_holder"], r["prev_state"], holder, ttl, is_alive)
                  for r in rows if r["why"] == "leased"]  # fmt: skip
        retry = [r["id"] for r in rows if r["why"] == "lock"]
        retry += [r["id"] for r in rows if r["why"] == "live" and is_alive(Holder.model_validate(r["prev_holder"])) is False]
        if retry and len(leases) < limit:
            leases += self._claim_slowly(retry, holder, ttl, is_alive, limit - len(leases))
        return leases

    def _one_all(self, what: str, query: str, params: dict[str, Any]) -> list[DictRow]:
        return self._pool.run(what, query, params)

    def _claim_slowly(self, ids: list[str], holder: Holder, ttl: float, is_alive: IsAlive, limit: int) -> list[Lease]:
        """Claim what the one-statement claim could not settle: a run whose same-host holder process is gone, or
        whose lock key needs fresh reads; rows other claimers locked meanwhile are skipped."""
        leases: list[Lease] = []
        with self._tx("claiming runs") as cur:
            rows = cur.execute(f"SELECT {_RUN}, {NOW} AS db_now FROM runs WHERE id = ANY(%s) AND state IN ({_sql.ACTIVE_SQL})"
                               " ORDER BY created_at FOR UPDATE SKIP LOCKED", (ids,)).fetchall()  # fmt: skip
            for row in rows:
                with suppress(LeaseHeld, LockHeld):  # taken meanwhile, or its lock key is held: the next candidate
                    leases.append(self._lease(cur, row, holder, ttl, force=False, is_alive=is_alive))
                if len(leases) == limit:
                    break
        return leases

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
