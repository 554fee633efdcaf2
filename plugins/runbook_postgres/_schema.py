"""The journal's tables, created on first use in the store's schema, with a schema version table.

Times are epoch seconds (``double precision``) like the SQLite store; JSON values are ``jsonb``.
Run ids use the ``C`` collation so that ordering and prefix ranges are byte order, whatever the
database's default collation is.

``runbook_schema.version`` is the journal's *format*: a runbook refuses a journal whose format is newer
than it reads. Additions that leave the format readable by older runbooks (an index, say) are not a new
version: they are :data:`MIGRATIONS`, applied in place by the first process that opens the journal and
recorded by name in ``runbook_migrations``, so hosts still running the previous release keep working.
"""

from __future__ import annotations

from psycopg import errors, sql

from runbook_postgres._conn import Conn
from runner.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ensure_schema"]

SCHEMA_VERSION = 2
"""2: a step row's ``data`` holds its typed :class:`~runner.store.progress.StepProgress`; version-1 rows (loose keys)
are rewritten in place by the first version-2 process, and a version-1 process then refuses the journal."""

_TABLES = """
CREATE TABLE IF NOT EXISTS runbook_schema (
  version integer PRIMARY KEY, applied_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
  id text COLLATE "C" PRIMARY KEY, runbook text NOT NULL, state text NOT NULL, reason text NOT NULL DEFAULT '',
  params jsonb NOT NULL DEFAULT '{}', started_by text NOT NULL DEFAULT '', trigger jsonb,
  created_at double precision NOT NULL, updated_at double precision NOT NULL, finished_at double precision,
  content_hash text NOT NULL DEFAULT '', step_hashes jsonb NOT NULL DEFAULT '{}', spec jsonb NOT NULL DEFAULT '{}',
  file text NOT NULL DEFAULT '', cursor text, idempotency_key text UNIQUE, lock_key text,
  parent_run_id text COLLATE "C", parent_step_id text, holder jsonb, lease_expires_at double precision,
  fence bigint NOT NULL DEFAULT 0, pause_requested boolean NOT NULL DEFAULT false,
  cancel_requested boolean NOT NULL DEFAULT false, wake_at double precision,
  options jsonb NOT NULL DEFAULT '{}', last_seq bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, wake_at);
CREATE INDEX IF NOT EXISTS runs_by_runbook ON runs (runbook, id);
CREATE INDEX IF NOT EXISTS runs_by_parent ON runs (parent_run_id);
CREATE INDEX IF NOT EXISTS runs_claimable ON runs (created_at)
  WHERE state IN ('queued', 'running', 'paused', 'waiting', 'interrupted');
CREATE TABLE IF NOT EXISTS steps (
  run_id text COLLATE "C" NOT NULL, step_id text NOT NULL, idx integer NOT NULL, state text NOT NULL,
  attempts integer NOT NULL DEFAULT 0, output jsonb, reason text NOT NULL DEFAULT '',
  started_at double precision, finished_at double precision, not_before double precision,
  data jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS events (
  run_id text COLLATE "C" NOT NULL, seq bigint NOT NULL, ts double precision NOT NULL, type text NOT NULL,
  step_id text, attempt integer, actor text, data jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS locks (key text PRIMARY KEY, run_id text COLLATE "C" NOT NULL);
CREATE INDEX IF NOT EXISTS locks_by_run ON locks (run_id);
CREATE TABLE IF NOT EXISTS alert_deliveries (
  id text PRIMARY KEY, source text NOT NULL, body_sha256 text NOT NULL, received_at double precision NOT NULL,
  finished_at double precision, state text NOT NULL DEFAULT 'processing', seen integer NOT NULL DEFAULT 1,
  result jsonb
);
CREATE TABLE IF NOT EXISTS alert_decisions (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ts double precision NOT NULL, delivery_id text NOT NULL,
  idx integer NOT NULL, source text NOT NULL, decision text NOT NULL, route text, fingerprint text, status text,
  dedupe_key text, run_id text COLLATE "C", reason text NOT NULL DEFAULT '', alert jsonb NOT NULL DEFAULT '{}',
  UNIQUE (delivery_id, idx)
);
CREATE INDEX IF NOT EXISTS alert_decisions_by_route ON alert_decisions (route, ts);
CREATE INDEX IF NOT EXISTS alert_decisions_by_key ON alert_decisions (route, dedupe_key, ts);
CREATE INDEX IF NOT EXISTS alert_decisions_by_run ON alert_decisions (run_id)
"""

DUE = "(CASE WHEN state = 'queued' THEN created_at ELSE wake_at END)"
"""When a queued or waiting run became (or becomes) runnable: the key of the live-work index ``runs_due``."""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "live-work-indexes",
        # Claims read only these: runnable work in the order it became due, the running runs (whose lease may
        # have expired) and idle runs someone cancelled. Finished history is in none of them.
        f"""
CREATE INDEX IF NOT EXISTS runs_due ON runs ({DUE}) WHERE state IN ('queued', 'waiting') AND parent_run_id IS NULL;
CREATE INDEX IF NOT EXISTS runs_running ON runs (created_at) WHERE state = 'running' AND parent_run_id IS NULL;
CREATE INDEX IF NOT EXISTS runs_cancelling ON runs (created_at)
  WHERE cancel_requested AND state IN ('paused', 'waiting', 'interrupted') AND parent_run_id IS NULL
""",
    ),
)
"""Additive changes, in order: (name, statements). Each is applied once per schema, by whoever opens it first."""


def _outbox() -> tuple[str, str]:
    from runbook_postgres._notify import _DDL  # the notifications outbox (runner.notify), its own module's tables

    return ("notifications-outbox", _DDL)


MIGRATIONS = (_outbox(), *MIGRATIONS)

_MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS runbook_migrations (name text PRIMARY KEY, applied_at double precision NOT NULL)"
_STATE = "SELECT (SELECT max(version) FROM runbook_schema) AS v, (SELECT array_agg(name) FROM runbook_migrations) AS m"


def _state(conn: Conn) -> tuple[int | None, set[str]]:
    """The schema's format version (None: no journal here yet) and the migrations applied to it, in one round trip."""
    try:
        row = conn.execute(_STATE).fetchone()
    except (errors.UndefinedTable, errors.InvalidSchemaName):
        try:  # a journal from before migrations were recorded, or none at all
            row = conn.execute("SELECT max(version) AS v FROM runbook_schema").fetchone()
        except (errors.UndefinedTable, errors.InvalidSchemaName):
            return None, set()
        return (None if row is None or row["v"] is None else int(row["v"])), set()
    assert row is not None
    return (None if row["v"] is None else int(row["v"])), set(row["m"] or ())


def _run_script(conn: Conn, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def ensure_schema(conn: Conn, schema: str, where: str) -> None:
    """Create the schema and its tables unless they are at :data:`SCHEMA_VERSION` already; upgrade a version-1
    journal; apply missing :data:`MIGRATIONS`.

    Idempotent and safe when many processes start at once: every change runs under a transaction-scoped
    advisory lock, and every statement is ``IF NOT EXISTS``. An open that finds everything in place costs
    one query.
    """
    version, applied = _state(conn)
    _refuse_newer(version, schema, where)
    if version == SCHEMA_VERSION and all(name in applied for name, _ in MIGRATIONS):
        return
    if version is None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook schema {schema}",))
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            _run_script(conn, _TABLES)
            conn.execute("INSERT INTO runbook_schema (version, applied_at) VALUES (%s, extract(epoch FROM now()))"
                         " ON CONFLICT (version) DO NOTHING", (SCHEMA_VERSION,))  # fmt: skip
        version, _ = _state(conn)
    if version == 1:
        _typed_progress(conn, schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook schema {schema}",))
        conn.execute(_MIGRATIONS_TABLE)
        done = {r["name"] for r in conn.execute("SELECT name FROM runbook_migrations").fetchall()}  # under the lock
        for name, script in MIGRATIONS:
            if name not in done:
                _run_script(conn, script)
                conn.execute("INSERT INTO runbook_migrations (name, applied_at) VALUES (%s, extract(epoch FROM now()))", (name,))
    version, _ = _state(conn)
    if version is None:
        raise StoreError(f"{where}: schema '{schema}' has no journal version after it was created",
                         hint="check the role's privileges on the schema")  # fmt: skip
    _refuse_newer(version, schema, where)


def _refuse_newer(version: int | None, schema: str, where: str) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: schema '{schema}' has journal version {version}; this runbook reads up to {SCHEMA_VERSION}",
            hint="upgrade runbook on this host (every host sharing the journal must run a version that reads it)",
        )


def _typed_progress(conn: Conn, schema: str) -> None:
    """Version 1 → 2: rewrite each step row's loose ``data`` keys as its typed progress, once, under the schema lock."""
    from psycopg.types.json import Jsonb

    from runner.store.progress import StepProgress

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook schema {schema}",))
        if (_state(conn)[0] or 0) >= 2:
            return  # another process migrated it meanwhile
        rows = conn.execute("SELECT run_id, step_id, data FROM steps WHERE data <> '{}'::jsonb").fetchall()
        for row in rows:
            typed = StepProgress.from_json(row["data"]).to_json()
            conn.execute("UPDATE steps SET data = %s WHERE run_id = %s AND step_id = %s", (Jsonb(typed), row["run_id"], row["step_id"]))
        conn.execute(
            "INSERT INTO runbook_schema (version, applied_at) VALUES (2, extract(epoch FROM now())) ON CONFLICT (version) DO NOTHING"
        )
