"""The SQLite journal's queue of live work: what workers claim, found without looking at finished runs.

Every run has a *ready time*, ``runs.ready_at``: a virtual generated column, so SQLite keeps it (and the
partial index over it) right in the same transaction as every write to the columns it depends on::

    ready_at = NULL                                   sub-runbook runs (their parent drives them)
             = MAX(lease free at, state ready at)     otherwise, where
    lease free at   = 0 if nobody holds it, else lease_expires_at
    state ready at  = 0                               running (an executor died with it)
                    = 0                               paused / waiting / interrupted with a cancel request
                    = NULL                            a pause request (below: queued or waiting)
                    = created_at                      queued (first in, first out)
                    = wake_at                         waiting (NULL: until a decision wakes it)
                    = NULL                            anything else (finished, paused)

(``MAX`` of SQLite is NULL when an argument is NULL.) A run is claimable exactly when ``ready_at <= now``, the
condition the claim used to evaluate over every run. The partial index ``runs_ready`` holds only runs whose
``ready_at`` is not NULL, i.e. live work: finished runs never enter it, so claiming costs the same with
a million of them. ``runs_running`` (running runs only) lets a claim find runs whose holder process died
before its lease expired.

Journals of earlier versions get the column and indexes in place when opened (:func:`ensure`), keyed by the
index's existence rather than by ``PRAGMA user_version``, so this step composes with other format changes.
"""

from __future__ import annotations

import sqlite3

__all__ = ["CLAIM_CANDIDATES", "READY_PROBE", "RUNNING_HELD", "ensure"]

READY_AT = (
    "CASE WHEN parent_run_id IS NOT NULL THEN NULL ELSE MAX("
    "CASE WHEN holder IS NULL THEN 0 ELSE COALESCE(lease_expires_at, 0) END, "
    "CASE WHEN state = 'running' THEN 0"
    " WHEN cancel_requested = 1 AND state IN ('paused', 'waiting', 'interrupted') THEN 0"
    " WHEN pause_requested = 1 THEN NULL"
    " WHEN state = 'queued' THEN created_at"
    " WHEN state = 'waiting' THEN wake_at"
    " ELSE NULL END) END"
)
_MIGRATION = (
    f"ALTER TABLE runs ADD COLUMN ready_at REAL GENERATED ALWAYS AS ({READY_AT}) VIRTUAL",
    "CREATE INDEX IF NOT EXISTS runs_ready ON runs(ready_at) WHERE ready_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS runs_running ON runs(lease_expires_at) WHERE state = 'running'",
    "CREATE INDEX IF NOT EXISTS locks_by_run ON locks(run_id)",
)
READY_PROBE = "SELECT 1 FROM runs INDEXED BY runs_ready WHERE ready_at IS NOT NULL AND ready_at <= ? LIMIT 1"
"""Is anything claimable now? (A read: no write transaction is opened for an empty queue.)"""
CLAIM_CANDIDATES = (
    "SELECT id, state, holder, lock_key, fence FROM runs INDEXED BY runs_ready"
    " WHERE ready_at IS NOT NULL AND ready_at <= ? ORDER BY ready_at LIMIT ?"
)
"""The claimable runs, oldest ready first: plain tuples, no record is decoded."""
RUNNING_HELD = (
    "SELECT id, holder, fence FROM runs INDEXED BY runs_running"
    " WHERE state = 'running' AND holder IS NOT NULL AND lease_expires_at >= ? AND parent_run_id IS NULL"
)
"""Running runs under a live lease: a claim asks ``is_alive`` whether their holder process still exists."""


def ensure(conn: sqlite3.Connection) -> None:
    """Add the ready-time column and the live-work indexes if this journal lacks them (inside a write transaction)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'runs_ready'").fetchone():
        return
    columns = {row[1] for row in conn.execute("PRAGMA table_xinfo(runs)")}
    for statement in _MIGRATION:
        if statement.startswith("ALTER") and "ready_at" in columns:
            continue
        conn.execute(statement)
