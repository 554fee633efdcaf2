"""The store's hot statements, each one round trip: a step's commit, a run's creation, a claim, a lease.

Each is a single statement whose data-modifying ``WITH`` parts all depend on the fenced ``UPDATE`` (or the
``INSERT``) of the run's row, so either everything is written or nothing is (one statement is one
transaction in autocommit mode), and no ``BEGIN``/``COMMIT`` round trips are needed. Steps and events travel
as one ``jsonb`` array each, so a statement's text depends only on which run columns it sets, and the
server keeps it prepared.
"""

from __future__ import annotations

import functools

from runbook_postgres._schema import DUE
from runbook_postgres._values import NOW
from runner.store.records import ACTIVE_STATES

__all__ = ["ACTIVE_SQL", "CLAIM", "CLAIMABLE_ROW", "RUN", "acquire_sql", "commit_sql", "create_sql", "request_sql"]

ACTIVE_SQL = ", ".join(f"'{s}'" for s in sorted(str(s) for s in ACTIVE_STATES))
"""The active states as SQL literals (literal, so the planner can match partial indexes)."""
RUN = (
    "id, runbook, state, reason, params, started_by, trigger, created_at, updated_at, finished_at, content_hash,"
    " file, cursor, idempotency_key, lock_key, parent_run_id, parent_step_id, holder, lease_expires_at,"
    " fence, pause_requested, cancel_requested, wake_at, options, last_seq"
)
"""Every column of ``runs`` but the runbook snapshot and step hashes (as large as the runbook: see ``get_spec``,
``get_step_hashes``)."""
_FREE = f"(holder IS NULL OR lease_expires_at < {NOW})"
CLAIMABLE_ROW = (
    f"(parent_run_id IS NULL AND {_FREE} AND (state = 'running' OR (state = 'queued' AND NOT pause_requested)"
    f" OR (state = 'waiting' AND wake_at <= {NOW} AND NOT pause_requested)"
    " OR (cancel_requested AND state IN ('paused', 'waiting', 'interrupted'))))"
)
"""A row a claim would take now (used to decide whether a write wakes the workers)."""
_NOTIFY = "(SELECT count(*) FROM (SELECT pg_notify(%(channel)s, '') WHERE {cond}) AS n) AS notified"

# Taking a run's lock key (the row in ``locks``): free, ours already, or held by a run this statement sees
# finished. Conservative: a holder it cannot see (created by a transaction that committed after this statement
# began, or deleted) counts as holding, and the caller settles that case with fresh reads (``_take_lock``).
_TAKE_LOCK = (
    "INSERT INTO locks (key, run_id) SELECT DISTINCT ON (lock_key) lock_key, id FROM {src} WHERE {cond}"
    " ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id WHERE locks.run_id = excluded.run_id"
    f" OR EXISTS (SELECT 1 FROM runs h WHERE h.id = locks.run_id AND h.state NOT IN ({ACTIVE_SQL})) RETURNING run_id"
)
_LOCK_FREE_FOR = (
    "(runs.lock_key IS NULL OR NOT EXISTS (SELECT 1 FROM locks l JOIN runs h ON h.id = l.run_id"
    f" WHERE l.key = runs.lock_key AND l.run_id <> runs.id AND h.state IN ({ACTIVE_SQL})))"
)

_STEP_COLUMNS = (
    "step_id text, idx integer, state text, attempts integer, output jsonb, reason text, started_at float8,"
    " finished_at float8, not_before float8, data jsonb"
)
_EVENT_COLUMNS = "type text, step_id text, attempt integer, actor text, data jsonb"
_INSERT_EVENTS = (
    "INSERT INTO events (run_id, seq, ts, type, step_id, attempt, actor, data)"
    " SELECT %(id)s, r.last_seq - %(n)s::integer + x.ord, r.ts, x.type, x.step_id, x.attempt, x.actor, COALESCE(x.data, '{}')"
    f" FROM r, ROWS FROM (jsonb_to_recordset(%(events)s::jsonb) AS ({_EVENT_COLUMNS})) WITH ORDINALITY"
    " AS x(type, step_id, attempt, actor, data, ord)"
)
_UPSERT_STEPS = (
    "INSERT INTO steps (run_id, step_id, idx, state, attempts, output, reason, started_at, finished_at, not_before, data)"
    " SELECT %(id)s, x.step_id, x.idx, x.state, COALESCE(x.attempts, 0), x.output, COALESCE(x.reason, ''), x.started_at,"
    f" x.finished_at, x.not_before, COALESCE(x.data, '{{}}') FROM r, jsonb_to_recordset(%(steps)s::jsonb) AS x({_STEP_COLUMNS})"
    " ON CONFLICT (run_id, step_id) DO UPDATE SET idx = excluded.idx, state = excluded.state, attempts = excluded.attempts,"
    " output = excluded.output, reason = excluded.reason, started_at = excluded.started_at, finished_at = excluded.finished_at,"
    " not_before = excluded.not_before, data = excluded.data"
)


_INSERT_NOTES = (
    "INSERT INTO notifications (key, kind, run_id, seq, step_id, runbook, created_at, next_at, data)"
    " SELECT %(id)s || ':' || (r.last_seq - %(n)s::integer + 1 + x.i), x.kind, %(id)s, r.last_seq - %(n)s::integer + 1 + x.i,"
    " x.step_id, r.runbook, r.ts, r.ts, COALESCE(x.data, '{}')"
    " FROM r, jsonb_to_recordset(%(notes)s::jsonb) AS x(i integer, kind text, step_id text, data jsonb)"
    " WHERE r.parent_run_id IS NULL ON CONFLICT (key) DO NOTHING"
)
"""The notifications outbox rows of the commit's events (only a run without a parent notifies), numbered as they are."""


@functools.cache
def commit_sql(columns: tuple[str, ...], steps: bool, events: bool, unlock: bool, notes: bool = False) -> str:
    """A fenced commit: the run's row (``updated_at``, ``last_seq`` and ``columns``), steps, events, the events'
    notifications (:func:`runner.notify.outbox.run_notifications`), lock release.

    Parameters: ``id``, ``fence``, ``n`` (number of events), one per column, ``steps``, ``events`` and ``notes``
    (JSON arrays; a note's ``i`` is its event's index). Returns ``last_seq, pause_requested, cancel_requested``; no
    row when the fence does not match.
    """
    sets = ", ".join([f"updated_at = {NOW}", "last_seq = last_seq + %(n)s::integer", *(f"{c} = %({c})s" for c in columns)])
    parts = [f"r AS (UPDATE runs SET {sets} WHERE id = %(id)s AND fence = %(fence)s"
             " RETURNING last_seq, updated_at AS ts, pause_requested, cancel_requested, runbook, parent_run_id)"]  # fmt: skip
    if steps:
        parts.append(f"s AS ({_UPSERT_STEPS})")
    if events:
        parts.append(f"e AS ({_INSERT_EVENTS})")
    if notes:
        parts.append(f"o AS ({_INSERT_NOTES})")
    if unlock:
        parts.append("l AS (DELETE FROM locks WHERE run_id = %(id)s AND EXISTS (SELECT 1 FROM r))")
    return f"WITH {', '.join(parts)} SELECT last_seq, pause_requested, cancel_requested FROM r"


_INSERT_RUN = (
    "INSERT INTO runs (id, runbook, state, params, started_by, trigger, created_at, updated_at, content_hash, step_hashes,"
    " spec, file, idempotency_key, lock_key, parent_run_id, parent_step_id, options, wake_at, holder, lease_expires_at,"
    " fence, last_seq) VALUES (%(id)s, %(runbook)s, %(state)s, %(params)s, %(started_by)s, %(trigger)s,"
    f" {NOW}, {NOW}, %(content_hash)s, %(step_hashes)s, %(spec)s, %(file)s, %(idempotency_key)s, %(lock_key)s,"
    " %(parent_run_id)s, %(parent_step_id)s, %(options)s,"
    f" CASE WHEN %(queued)s THEN {NOW} END, %(holder)s, {NOW} + %(ttl)s::float8, %(fence)s::bigint, 1)"
    f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {RUN}, {CLAIMABLE_ROW} AS claimable"
)


@functools.cache
def create_sql(lock: bool) -> str:
    """A run, its pending steps and its ``run.created`` event (and its lock key), and a wake-up if it is claimable.

    Returns the run (no row if the idempotency key was used before) with ``locked``: whether the lock key was
    taken (always true without one). With a lock key the caller must roll back when it was not taken.
    """
    parts = [
        f"r AS ({_INSERT_RUN})",
        "s AS (INSERT INTO steps (run_id, step_id, idx, state) SELECT r.id, x.sid, x.i - 1, 'pending'"
        " FROM r, unnest(%(step_ids)s::text[]) WITH ORDINALITY AS x(sid, i))",
        "e AS (INSERT INTO events (run_id, seq, ts, type, actor, data)"
        " SELECT r.id, 1, r.created_at, 'run.created', %(started_by)s, %(created)s FROM r)",
    ]
    locked = "true"
    if lock:
        parts.append("lk AS (" + _TAKE_LOCK.format(src="r", cond="true") + ")")
        locked = "EXISTS (SELECT 1 FROM lk)"
    notify = _NOTIFY.format(cond=f"r.claimable AND {locked}")
    return f"WITH {', '.join(parts)} SELECT r.*, {locked} AS locked, {notify} FROM r"


def _candidates(name: str, where: str, order: str) -> str:
    return (f"{name} AS (SELECT id, holder, state, lock_key, created_at FROM runs WHERE {where} AND {_FREE}"
            f" AND {_LOCK_FREE_FOR} ORDER BY {order} LIMIT %(n)s FOR UPDATE SKIP LOCKED)")  # fmt: skip


CLAIM = (
    "WITH "
    + ", ".join([
        _candidates("stale", "state = 'running' AND parent_run_id IS NULL", "created_at"),
        _candidates("due", f"state IN ('queued', 'waiting') AND parent_run_id IS NULL AND {DUE} <= {NOW}"
                    " AND NOT pause_requested", DUE),
        _candidates("cancelling", "cancel_requested AND state IN ('paused', 'waiting', 'interrupted')"
                    " AND parent_run_id IS NULL", "created_at"),
        "c AS MATERIALIZED (SELECT * FROM stale UNION ALL SELECT * FROM due UNION ALL SELECT * FROM cancelling LIMIT %(n)s)",
        "lk AS (" + _TAKE_LOCK.format(src="c", cond="lock_key IS NOT NULL") + ")",
        f"u AS (UPDATE runs SET holder = %(holder)s, lease_expires_at = {NOW} + %(ttl)s::float8, fence = runs.fence + 1"
        " FROM c WHERE runs.id = c.id AND (c.lock_key IS NULL OR c.id IN (SELECT run_id FROM lk))"
        " RETURNING runs.id, runs.fence, c.holder AS prev_holder, c.state AS prev_state, runs.created_at)",
    ])
    + " SELECT id, fence, prev_holder, prev_state, created_at, 'leased' AS why FROM u"
    " UNION ALL SELECT id, NULL, holder, state, created_at, 'lock' FROM c WHERE id NOT IN (SELECT id FROM u)"
    " UNION ALL SELECT id, NULL, holder, state, created_at, 'live' FROM runs WHERE state = 'running' AND parent_run_id IS NULL"
    f" AND holder IS NOT NULL AND lease_expires_at >= {NOW} AND (SELECT count(*) FROM u) < %(n)s"
)  # fmt: skip
"""Lease up to ``n`` runnable runs in one statement: a running run whose lease expired (its executor is gone),
queued and due waiting runs in the order they became due, idle runs someone cancelled. Each part reads
only its live-work partial index and skips rows other claimers have locked. A run whose lock key another
active run holds is not taken.

Rows by ``why``: ``leased`` (``fence`` is the new token); ``lock``, a candidate whose lock key this statement
could not take (see ``_TAKE_LOCK``); ``live``, when fewer than ``n`` were leased, running runs under an unexpired
lease, so that the caller can check whether their holder is a dead process on its own host."""


@functools.cache
def acquire_sql(take_lock: bool) -> str:
    """Take a lease that is free, expired or already ours (and the run's lock key), else change nothing.

    Returns the run's previous lease and state, and ``fence``: the new fencing token, or NULL when the lease
    is held by another live executor or the lock key by another active run (the caller decides, in Python,
    whether that executor is gone or a forced takeover applies). No row: no such run.
    """
    lockable = f"{{t}}lock_key IS NOT NULL AND {{t}}state IN ({ACTIVE_SQL}, 'failed')"
    parts = [
        f"o AS (SELECT id, holder, lease_expires_at, state, lock_key, {NOW} AS db_now FROM runs WHERE id = %(id)s FOR UPDATE)",
        f"ok AS (SELECT * FROM o WHERE holder IS NULL OR holder = %(holder)s OR lease_expires_at < {NOW})",
    ]
    locked = "true"
    if take_lock:
        parts.append("lk AS (" + _TAKE_LOCK.format(src="ok", cond=lockable.format(t="")) + ")")
        locked = f"(NOT ({lockable.format(t='ok.')}) OR ok.id IN (SELECT run_id FROM lk))"
    parts.append(f"u AS (UPDATE runs SET holder = %(holder)s, lease_expires_at = {NOW} + %(ttl)s::float8,"
                 f" fence = runs.fence + 1 FROM ok WHERE runs.id = ok.id AND {locked} RETURNING runs.fence)")  # fmt: skip
    return f"WITH {', '.join(parts)} SELECT o.*, (SELECT fence FROM u) AS fence FROM o"


@functools.cache
def request_sql(sets: tuple[str, ...]) -> str:
    """An outside request: ``sets`` on the run's row, its event, and a wake-up if the run is claimable now."""
    return (
        f"WITH r AS (UPDATE runs SET {', '.join(sets)} WHERE id = %(id)s"
        f" RETURNING last_seq, {NOW} AS ts, {CLAIMABLE_ROW} AS claimable),"
        " e AS (INSERT INTO events (run_id, seq, ts, type, step_id, actor, data)"
        " SELECT %(id)s, r.last_seq, r.ts, %(type)s, %(step_id)s, %(actor)s, %(data)s FROM r)"
        f" SELECT last_seq, ts, {_NOTIFY.format(cond='r.claimable')} FROM r"
    )


RELEASE = (
    "WITH r AS (UPDATE runs SET holder = NULL, lease_expires_at = NULL WHERE id = %(id)s AND fence = %(fence)s"
    f" RETURNING {CLAIMABLE_ROW} AS claimable) SELECT {_NOTIFY.format(cond='r.claimable')} FROM r"
)
"""Give a lease up; wake the workers if the run is runnable (a worker stopping puts its run back in the queue)."""
