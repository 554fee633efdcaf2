"""The PostgreSQL store passes the store contract, and holds up under many writers, claimers and kill -9.

Everything runs against a real PostgreSQL cluster (``harness.postgres``); each test gets a fresh database.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness.postgres import PostgresServer
from runbook_postgres.store import PostgresStore
from runbook_sqlite.store import SQLiteStore

from runner.alerts import NewDecision
from runner.engine.holder import is_alive
from runner.errors import ConfigError, LeaseLost, LockHeld, MissingExtra, StoreError
from runner.store.base import Store
from runner.store.records import Holder, NewEvent, RunState, StepPatch, StepState
from tests.store_contract import *  # noqa: F403
from tests.store_contract import ME, OTHER, alive, new_run

REPO = Path(__file__).resolve().parent.parent

# Child processes (argv: DSN, ...): each is a separate client of the database, as on another host.
OPENER = """
import sys
import tempfile
from runbook_postgres.store import PostgresStore
sys.stdin.readline()
PostgresStore(sys.argv[1]).close()
print("ok", flush=True)
"""
CLAIMER = """
import sys
import tempfile
from runbook_postgres.store import PostgresStore
from runner.store.records import Holder
store = PostgresStore(sys.argv[1])
holder = Holder(host="host-" + sys.argv[2], boot_id="b", pid=1, start_time=1, kind="worker")
print("ready", flush=True)
sys.stdin.readline()
while leases := store.claim(holder, 30, is_alive=lambda h: None, limit=2):
    for lease in leases:
        print(lease.run_id, flush=True)
"""
ROW_LOCKER = """
import sys, time
from runbook_postgres.store import PostgresStore
store = PostgresStore(sys.argv[1])
with store._tx() as cur:  # a claim in flight: the run's row is locked by an open transaction
    cur.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (sys.argv[2],))
    print("locked", flush=True)
    time.sleep(600)
"""
WORKER = """
import sys, time
from runbook_postgres.store import PostgresStore
from runner.engine.holder import current_holder, is_alive
store = PostgresStore(sys.argv[1])
(lease,) = store.claim(current_holder("worker"), 1.5, is_alive=is_alive)
store.commit(lease, run={"state": "running"})
print(lease.run_id, flush=True)
time.sleep(600)
"""


@pytest.fixture
def store(pg_dsn: str) -> Iterator[Store]:
    s = PostgresStore(pg_dsn)
    yield s
    s.close()


def _sql(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


def _threads(target: Callable[[int], None], n: int) -> None:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


class Script:
    """A Python child process using the store (the repo on its path); stdout read line by line."""

    def __init__(self, source: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", source, *args], cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    def line(self) -> str:
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline()
        assert got, f"child exited early: {self.proc.communicate(timeout=30)}"
        return got.strip()

    def finish(self, kill: bool = False) -> str:
        if kill:
            self.proc.kill()
        out, err = self.proc.communicate(timeout=120)
        assert kill or self.proc.returncode == 0, err
        return out


@pytest.fixture
def spawn() -> Iterator[Callable[..., Script]]:
    """Start :class:`Script` children; any still running when the test ends is killed and reaped."""
    children: list[Script] = []

    def start(source: str, *args: str) -> Script:
        children.append(Script(source, *args))
        return children[-1]

    yield start
    for child in children:
        if child.proc.poll() is None or (child.proc.stdout and not child.proc.stdout.closed):
            child.finish(kill=True)


def _poll(condition: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------- URL, schema, errors


def test_schema_option_keeps_the_journal_in_its_own_schema(pg_dsn: str) -> None:
    a = PostgresStore(pg_dsn + "?schema=runbook")
    b = PostgresStore(pg_dsn + "?schema=other")
    run, _ = a.create_run(new_run())
    assert [r.id for r in a.list_runs()] == [run.id] and b.list_runs() == []
    tables = {r[0] for r in _sql(pg_dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'runbook'")}
    assert {"runs", "steps", "events", "locks", "runbook_schema", "alert_deliveries", "alert_decisions"} <= tables
    assert _sql(pg_dsn, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]
    a.close()
    again = PostgresStore(pg_dsn + "?schema=runbook")  # reopening finds the schema at its version: no DDL
    assert again.get_run(run.id) == run
    assert _sql(pg_dsn, "SELECT version FROM runbook.runbook_schema") == [(2,)]
    again.close()
    b.close()


def test_many_processes_creating_the_schema_at_once(pg_dsn: str, spawn: Callable[..., Script]) -> None:
    children = [spawn(OPENER, pg_dsn + "?schema=fresh") for _ in range(4)]
    for child in children:  # release them together
        assert child.proc.stdin is not None
        child.proc.stdin.write("go\n")
        child.proc.stdin.flush()
    assert [child.finish().strip() for child in children] == ["ok"] * 4
    assert _sql(pg_dsn, "SELECT version FROM fresh.runbook_schema") == [(2,)]


def test_a_newer_journal_version_is_refused(pg_dsn: str) -> None:
    PostgresStore(pg_dsn).close()
    _sql(pg_dsn, "INSERT INTO runbook_schema VALUES (3, 0)")
    with pytest.raises(StoreError, match="journal version 3; this runbook reads up to 2"):
        PostgresStore(pg_dsn)


@pytest.mark.parametrize("suffix", ["?schema=Bad-Name", "?pool_size=0", "?pool_timeout=x"], ids=["schema", "pool", "timeout"])
def test_bad_url_options(pg_dsn: str, suffix: str) -> None:
    with pytest.raises(ConfigError):
        PostgresStore(pg_dsn + suffix)


def test_errors_name_the_store_but_never_its_password(postgres: PostgresServer) -> None:
    url = f"postgresql://rb:s3cret-pw@127.0.0.1:{postgres.port}/no_such_db"
    with pytest.raises(StoreError) as info:
        PostgresStore(url)
    message = str(info.value)
    assert "s3cret-pw" not in message and "rb:***@127.0.0.1" in message and "no_such_db" in message
    assert "\n" not in message


def test_store_url_attribute_is_masked(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn.replace("rb@", "rb:hunter2@") + "?password=hunter2&application_name=t")
    assert "hunter2" not in s.url and "***" in s.url
    s.close()


def test_missing_psycopg_is_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import runbook_postgres

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtra, match=r"runbook\[postgres\]"):
        runbook_postgres._open("postgresql://rb@127.0.0.1/x")


def test_registered_for_postgresql_and_postgres_schemes(pg_dsn: str) -> None:
    import runbook_postgres

    from runner.plugin import PluginHost, get_plugin_manager

    pm = get_plugin_manager()
    if not pm.is_registered(runbook_postgres):  # until the entry point is installed
        pm.register(runbook_postgres)
    stores = PluginHost(pm).stores
    for url in (pg_dsn, pg_dsn.replace("postgresql://", "postgres://")):
        s = stores.open(url)
        assert isinstance(s, PostgresStore)
        s.close()


# ---------------------------------------------------------------------- connections


def test_pool_bounds_connections_and_survives_terminated_backends(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?pool_size=3")
    run, _ = s.create_run(new_run())
    _threads(lambda i: [s.get_run(run.id) for _ in range(30)], 8)
    assert s._pool.stats()["open"] <= 3
    db = pg_dsn.rsplit("/", 1)[1]
    _sql(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", db)
    _poll(lambda: _sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", db) == [(1,)], "backends to exit")
    assert s.get_run(run.id).id == run.id, "a connection the server dropped is replaced, not used"
    s.close()
    assert s.get_run(run.id).id == run.id, "a closed store reconnects on use (like the SQLite store)"
    s.close()


def test_nul_characters_in_outputs_do_not_break_a_commit(store: Store) -> None:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, events=[NewEvent("x", data={"stdout": "a\x00b"})],
                 steps=[StepPatch("a", 0, StepState.FAILED, output={"stdout": "a\x00b"}, reason="saw a\x00b")])  # fmt: skip
    step = store.get_steps(run.id)[0]
    assert step.output == {"stdout": "a\ufffdb"} and step.reason == "saw a\ufffdb"
    assert store.events(run.id, types=["x"])[0].data == {"stdout": "a\ufffdb"}


# ---------------------------------------------------------------------- concurrency


def test_concurrent_claims_from_many_processes_never_share_a_run(store: Store, pg_dsn: str, spawn: Callable[..., Script]) -> None:
    ids = {store.create_run(new_run())[0].id for _ in range(60)}
    children = [spawn(CLAIMER, pg_dsn, str(n)) for n in range(4)]
    for child in children:
        assert child.line() == "ready"
    for child in children:  # a start barrier: all claim at once
        assert child.proc.stdin is not None
        child.proc.stdin.write("go\n")
        child.proc.stdin.flush()
    claimed = [child.finish().split() for child in children]
    every = [rid for got in claimed for rid in got]
    assert sorted(every) == sorted(ids), "each run claimed exactly once"
    assert sum(1 for got in claimed if got) >= 2, f"the work was spread: {[len(g) for g in claimed]}"
    holders = {store.get_run(rid).holder.host for rid in ids}  # type: ignore[union-attr]
    assert holders <= {f"host-{n}" for n in range(4)}


def test_claim_skips_rows_locked_by_another_client_and_gets_them_after_its_kill_9(
    store: Store, pg_dsn: str, spawn: Callable[..., Script]
) -> None:
    run, _ = store.create_run(new_run())
    child = spawn(ROW_LOCKER, pg_dsn, run.id)
    assert child.line() == "locked"
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(store.claim(ME, 30, is_alive=alive)))
    t.start()
    t.join(timeout=30)
    assert not t.is_alive() and got == [[]], "the locked row is skipped, not waited for"
    child.finish(kill=True)
    leases = _poll(lambda: store.claim(ME, 30, is_alive=alive), "the killed client's row lock to be released")
    assert [lease.run_id for lease in leases] == [run.id]


def test_a_claim_held_by_a_killed_worker_is_taken_over(store: Store, pg_dsn: str, spawn: Callable[..., Script]) -> None:
    """Same host: the dead holder is detected at once. Another host: only after its lease expires."""
    here, _ = store.create_run(new_run())
    child = spawn(WORKER, pg_dsn)
    assert child.line() == here.id
    assert store.claim(ME, 30, is_alive=is_alive) == [], "a live worker keeps its claim"
    child.finish(kill=True)
    (lease,) = store.claim(ME, 30, is_alive=is_alive)
    assert lease.run_id == here.id and "no longer running" in (lease.took_over or "")
    remote, _ = store.create_run(new_run())
    first = store.acquire(remote.id, OTHER, 1.5, force=False, is_alive=alive)
    store.commit(first, run={"state": RunState.RUNNING})
    assert store.claim(ME, 30, is_alive=alive) == [], "a remote holder cannot be checked: wait for its lease"
    (taken,) = _poll(lambda: store.claim(ME, 30, is_alive=alive), "the remote lease to expire")
    assert taken.run_id == remote.id and "expired" in (taken.took_over or "")


def test_fencing_under_concurrent_writers(store: Store) -> None:
    run, _ = store.create_run(new_run())
    first = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    lost = [0]

    def writer(n: int) -> None:
        holder = Holder(host=f"w{n}", boot_id="b", pid=n, start_time=1, kind="test")
        for _ in range(25):
            lease = store.acquire(run.id, holder, 30, force=True, is_alive=alive)
            for k in range(2):
                try:
                    store.commit(lease, events=[NewEvent("w", data={"fence": lease.fence, "k": k})])
                except LeaseLost:
                    lost[0] += 1

    _threads(writer, 4)
    with pytest.raises(LeaseLost):
        store.commit(first, events=[NewEvent("late")])
    fences = [e.data["fence"] for e in store.events(run.id, types=["w"], limit=10000)]
    assert fences == sorted(fences), "no write under a lease after a newer lease was granted"
    assert len(fences) + lost[0] == 4 * 25 * 2
    assert store.get_run(run.id).fence == 1 + 4 * 25


def test_sequence_numbers_stay_gapless_under_concurrent_requests_and_commits(store: Store) -> None:
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)

    def work(n: int) -> None:
        for i in range(40):
            if n == 0:
                store.commit(lease, events=[NewEvent("a", data={"i": i}), NewEvent("b"), NewEvent("c")])
            else:
                store.request(run.id, "approve", actor=f"user{n}", reason="ok", data={"step_id": "a"})

    _threads(work, 4)
    seqs = [e.seq for e in store.events(run.id, limit=10000)]
    total = 1 + 40 * 3 + 3 * 40
    assert seqs == list(range(1, total + 1)) and store.get_run(run.id).last_seq == total
    ours = [e for e in store.events(run.id, limit=10000) if e.type in "abc"]
    assert [e.type for e in ours] == ["a", "b", "c"] * 40, "one commit's events are contiguous"


def test_concurrent_duplicate_idempotency_keys_return_the_existing_run(store: Store) -> None:
    results: list[tuple[str, bool]] = []

    def create(_: int) -> None:
        run, created = store.create_run(new_run(idempotency_key="delivery-42"))
        results.append((run.id, created))

    _threads(create, 8)
    assert len({rid for rid, _ in results}) == 1 and sum(created for _, created in results) == 1
    assert len(store.list_runs()) == 1


def test_concurrent_runs_with_one_lock_key_admit_one(store: Store) -> None:
    outcomes: list[str] = []

    def create(_: int) -> None:
        try:
            outcomes.append(store.create_run(new_run(lock_key="host:web1"))[0].id)
        except LockHeld as exc:
            outcomes.append(f"held by {exc.run_id}")

    _threads(create, 8)
    winners = [o for o in outcomes if not o.startswith("held")]
    assert len(winners) == 1 and all(o == f"held by {winners[0]}" for o in outcomes if o.startswith("held"))


# ---------------------------------------------------------------------- alert deliveries, same as SQLite


def _deliveries_script(s: Store) -> list[Any]:
    """Exercise the alert-delivery methods; return what they answered, without times and ids."""
    run, _ = s.create_run(new_run())
    done, _ = s.create_run(new_run())
    lease = s.acquire(done.id, ME, 30, force=False, is_alive=alive)
    s.commit(lease, run={"state": RunState.SUCCEEDED, "finished_at": time.time()})
    out: list[Any] = [s.begin_delivery("d1", "alertmanager", "sha").model_dump(exclude={"received_at"})]
    out.append(s.begin_delivery("d1", "alertmanager", "sha").seen)
    decisions = [NewDecision("d1", 0, "alertmanager", "started", route="r", dedupe_key="k1", run_id=run.id, alert={"a": 1}),
                 NewDecision("d1", 1, "alertmanager", "breaker_open", route="r", dedupe_key="k2", run_id=done.id),
                 NewDecision("d1", 2, "alertmanager", "no_route", reason="nothing matched")]  # fmt: skip
    first = s.record_decisions(decisions)
    again = s.record_decisions(decisions)
    out.append([d.id for d in first] == [d.id for d in again])
    s.finish_delivery("d1", {"runs": 1, "nested": {"ok": [True, None]}})
    out.append(s.begin_delivery("d1", "alertmanager", "sha").model_dump(exclude={"received_at", "finished_at"}))
    strip = {"id", "ts", "run_id"}
    out.append([d.model_dump(exclude=strip) for d in s.list_decisions()])
    out.append([d.decision for d in s.list_decisions(route="r", limit=1)])
    out.append([d.decision for d in s.list_decisions(before=first[1].id)])
    out.append([d.decision for d in s.list_decisions(run_id=run.id)])
    out.append([(r.dedupe_key, r.state) for r in s.route_runs("r")])
    out.append([(r.dedupe_key, r.state) for r in s.route_runs("r", active_only=True)])
    out.append([r.dedupe_key for r in s.route_runs("r", dedupe_key="k2")])
    out.append([r.dedupe_key for r in s.route_runs("r", since=time.time() + 3600)])
    return out


def test_alert_deliveries_answer_exactly_like_the_sqlite_store(store: Store, tmp_path: Path) -> None:
    sqlite = SQLiteStore(f"sqlite:///{tmp_path}/j.db")
    expected = _deliveries_script(sqlite)
    sqlite.close()
    assert _deliveries_script(store) == expected
    assert expected[1] == 2 and expected[2] is True and expected[3]["state"] == "done"


def test_records_come_back_in_the_same_shape_as_sqlite(store: Store, tmp_path: Path) -> None:
    sqlite = SQLiteStore(f"sqlite:///{tmp_path}/j.db")
    shapes = []
    for s in (sqlite, store):
        run, _ = s.create_run(new_run(trigger={"source": "t"}, options={"o": [1]}, lock_key="k"))
        lease = s.acquire(run.id, ME, 30, force=False, is_alive=alive)
        s.commit(lease, events=[NewEvent("e", step_id="a", attempt=1, data={"x": None})], run={"state": RunState.RUNNING},
                 steps=[StepPatch("a", 0, StepState.SUCCEEDED, attempts=1, output=[1, "two"], started_at=1.5)])  # fmt: skip
        assert s.get_run(run.id).wake_at is not None, "a queued run is due at once"
        got = s.get_run(run.id).model_dump(exclude={"id", "created_at", "updated_at", "lease_expires_at", "wake_at"})
        steps = [{k: v for k, v in dataclasses.asdict(st).items() if k != "run_id"} for st in s.get_steps(run.id)]
        events = [e.model_dump(exclude={"run_id", "ts"}) for e in s.events(run.id)]
        shapes.append((got, steps, events))
    sqlite.close()
    assert shapes[0] == shapes[1]


def test_times_are_epoch_seconds_from_the_database_clock(store: Store) -> None:
    before = time.time()
    run, _ = store.create_run(new_run())
    assert before - 5 < run.created_at < time.time() + 5 and isinstance(run.created_at, float)
    assert store.events(run.id)[0].ts == run.created_at, "the run and its first event are stamped in one transaction"


def test_a_version_1_journal_is_upgraded_to_typed_progress_in_place(pg_dsn: str) -> None:
    from runner.store.progress import GateStatus, WaitKind
    from runner.store.records import StepPatch, StepState
    from tests.store_contract import ME, alive, new_run

    store = PostgresStore(pg_dsn)
    run, _ = store.create_run(new_run())
    lease = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    store.commit(lease, steps=[StepPatch("a", 0, StepState.WAITING)])
    store.close()
    legacy = '{"state": {"since_seq": 3}, "gate": "pending", "gate_state": {"expires_at": 5.0}, "wait_kind": "approval"}'
    _sql(pg_dsn, f"UPDATE steps SET data = '{legacy}'::jsonb WHERE step_id = 'a'")
    _sql(pg_dsn, "DELETE FROM runbook_schema WHERE version = 2")
    _sql(pg_dsn, "INSERT INTO runbook_schema VALUES (1, 0) ON CONFLICT DO NOTHING")
    store = PostgresStore(pg_dsn)
    assert max(v for (v,) in _sql(pg_dsn, "SELECT version FROM runbook_schema")) == 2
    step = store.get_steps(run.id)[0]
    assert step.progress.waiting == WaitKind.APPROVAL and step.progress.local == {"since_seq": 3}
    assert (
        step.progress.gate is not None
        and step.progress.gate.status == GateStatus.PENDING
        and step.progress.gate.state == {"expires_at": 5.0}
    )
    assert "gate_state" not in str(_sql(pg_dsn, "SELECT data FROM steps WHERE step_id = 'a'")), "rewritten in place"
    store.close()


# ---------------------------------------------------------------------- one round trip per write


class Trace:
    """The protocol messages one pooled connection exchanges (libpq's trace): round trips are ReadyForQuery messages."""

    def __init__(self, store: PostgresStore) -> None:
        from psycopg import pq

        ((self.conn, _),) = store._pool._idle  # a store opened with ?pool_size=1 and used once
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.conn.pgconn.trace(self.file.fileno())
        self.conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def round_trips(self, action: Callable[[], Any]) -> int:
        """Run ``action`` and count the server's ReadyForQuery replies it caused (one per round trip)."""
        start = self.file.seek(0, 2)
        action()
        self.file.seek(start)
        return sum(1 for line in self.file.read().decode().splitlines() if line.startswith("B\t5\tReadyForQuery"))

    def close(self) -> None:
        """Stop tracing."""
        self.conn.pgconn.untrace()
        self.file.close()


def test_each_executor_write_is_one_round_trip(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?pool_size=1")
    trace = Trace(s) if s.get_run(s.create_run(new_run())[0].id) else None
    assert trace is not None
    runs = [s.create_run(new_run(lock_key=None)) for _ in range(2)]  # statements prepared before counting
    events = [NewEvent("step.finished", step_id="a", attempt=1, data={"k": 1}), NewEvent("step.started", step_id="b", attempt=1)]
    steps = [StepPatch("a", 0, StepState.SUCCEEDED, attempts=1, output={"stdout": "x"}), StepPatch("b", 1, StepState.RUNNING, attempts=1)]

    def step(lease: Any) -> None:
        s.commit(lease, events=events, steps=steps, run={"state": RunState.RUNNING, "cursor": "b"})

    assert trace.round_trips(lambda: s.create_run(new_run())) == 1, "a statement run once: one round trip, not prepared"
    warm = s.acquire(runs[0][0].id, ME, 30, force=False, is_alive=alive)
    for _ in range(6):  # psycopg prepares a statement at its fifth use on a connection (one more round trip, once)
        step(warm)
        s.renew(warm)
        s.request(runs[0][0].id, "pause", actor="a", reason="r")
        s.release(s.acquire(runs[1][0].id, ME, 30, force=False, is_alive=alive))
        s.create_run(new_run())
    counted: dict[str, int] = {
        "create_run": trace.round_trips(lambda: s.create_run(new_run())),
        "acquire": trace.round_trips(lambda: s.acquire(runs[1][0].id, ME, 30, force=False, is_alive=alive)),
        "commit": trace.round_trips(lambda: step(warm)),
        "renew": trace.round_trips(lambda: s.renew(warm)),
        "request": trace.round_trips(lambda: s.request(runs[1][0].id, "pause", actor="a", reason="r")),
        "release": trace.round_trips(lambda: s.release(warm)),
    }
    for _ in range(6):  # take what is runnable (and prepare the claim)
        s.claim(OTHER, 30, is_alive=alive)
    while s.claim(OTHER, 30, is_alive=alive):
        pass
    queued, _ = s.create_run(new_run())
    got: list[Any] = []
    counted["claim"] = trace.round_trips(lambda: got.extend(s.claim(OTHER, 30, is_alive=alive)))
    counted["idle claim"] = trace.round_trips(lambda: got.extend(s.claim(OTHER, 30, is_alive=alive)))
    assert counted == dict.fromkeys(counted, 1), counted
    assert [lease.run_id for lease in got] == [queued.id]
    prepared = trace.conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
    assert prepared is not None and prepared["n"] >= len(counted) - 1, "the statements used over and over are prepared on the server"
    trace.close()
    s.close()


def test_a_fenced_off_commit_writes_nothing_at_all(store: Store) -> None:
    run, _ = store.create_run(new_run(lock_key="host:x"))
    old = store.acquire(run.id, ME, 30, force=False, is_alive=alive)
    store.acquire(run.id, OTHER, 30, force=True, is_alive=alive)
    before = (store.get_run(run.id), store.get_steps(run.id), store.events(run.id))
    with pytest.raises(LeaseLost):
        store.commit(old, events=[NewEvent("late")], steps=[StepPatch("a", 0, StepState.SUCCEEDED), StepPatch("z", 9, StepState.PENDING)],
                     run={"state": RunState.SUCCEEDED, "reason": "late", "finished_at": 1.0})  # fmt: skip
    assert (store.get_run(run.id), store.get_steps(run.id), store.events(run.id)) == before
    with pytest.raises(LockHeld):  # the lock key was not released by the fenced-off terminal state
        store.create_run(new_run(lock_key="host:x"))


# ---------------------------------------------------------------------- live work, migrations


def _claim_plan(dsn: str, schema: str) -> tuple[str, int]:
    """The claim's plan (rolled back) and the number of shared buffers its execution touched."""
    from runbook_postgres._sql import CLAIM
    from runbook_postgres._values import jsonb

    with psycopg.connect(dsn) as conn:  # a transaction, rolled back at the end: nothing is claimed
        conn.execute(f"SET search_path TO {schema}")
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) " + CLAIM,
                            {"n": 1, "holder": jsonb(ME.model_dump(mode="json")), "ttl": 30.0}).fetchall()  # fmt: skip
        conn.rollback()
    plan = "\n".join(r[0] for r in rows)
    top = next(line for line in plan.splitlines() if "Buffers:" in line)  # the statement's own total comes first
    return plan, sum(int(n) for n in re.findall(r"=(\d+)", top))


def test_claims_read_live_work_only_however_long_the_history(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?schema=live")
    for _ in range(3):
        s.create_run(new_run())
    _sql(pg_dsn, "ANALYZE live.runs")
    _, buffers_small = _claim_plan(pg_dsn, "live")
    _sql(pg_dsn, "INSERT INTO live.runs (id, runbook, state, created_at, updated_at, finished_at)"
                 " SELECT 'H' || lpad(g::text, 25, '0'), 'rb', 'succeeded', g, g, g FROM generate_series(1, 50000) g")  # fmt: skip
    _sql(pg_dsn, "ANALYZE live.runs")
    plan, buffers = _claim_plan(pg_dsn, "live")
    assert "Seq Scan on runs" not in plan and "runs_due" in plan and "runs_running" in plan, plan
    assert buffers <= buffers_small + 4, f"a claim touched {buffers} buffers with 50,000 finished runs, {buffers_small} without"
    assert len(s.claim(ME, 30, is_alive=alive, limit=5)) == 3
    s.close()


def test_a_journal_from_before_the_live_work_indexes_is_migrated_in_place(pg_dsn: str) -> None:
    old = PostgresStore(pg_dsn)
    run, _ = old.create_run(new_run())
    old.close()
    _sql(pg_dsn, "DROP TABLE runbook_migrations")  # the layout the previous release created
    for index in ("runs_due", "runs_running", "runs_cancelling"):
        _sql(pg_dsn, f"DROP INDEX {index}")
    again = PostgresStore(pg_dsn)
    indexes = {r[0] for r in _sql(pg_dsn, "SELECT indexname FROM pg_indexes WHERE tablename = 'runs'")}
    assert {"runs_due", "runs_running", "runs_cancelling", "runs_claimable"} <= indexes
    from runbook_postgres._schema import MIGRATIONS, SCHEMA_VERSION

    assert sorted(r[0] for r in _sql(pg_dsn, "SELECT name FROM runbook_migrations")) == sorted(name for name, _ in MIGRATIONS)
    assert _sql(pg_dsn, "SELECT version FROM runbook_schema") == [(SCHEMA_VERSION,)], "additive: the format version is unchanged"
    assert [lease.run_id for lease in again.claim(ME, 30, is_alive=alive)] == [run.id]
    again.close()


def test_a_lock_key_pointing_at_a_run_that_is_gone_is_taken(store: Store, pg_dsn: str) -> None:
    _sql(pg_dsn, "INSERT INTO locks (key, run_id) VALUES ('host:gone', '01GONE')")
    run, _ = store.create_run(new_run(lock_key="host:gone"))
    assert _sql(pg_dsn, "SELECT run_id FROM locks WHERE key = 'host:gone'") == [(run.id,)]
    _sql(pg_dsn, "UPDATE locks SET run_id = '01GONE2' WHERE key = 'host:gone'")  # e.g. a lock row left by hand
    assert [lease.run_id for lease in store.claim(ME, 30, is_alive=alive)] == [run.id], "claimed through fresh reads"


def test_prepared_statements_can_be_turned_off(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?prepare=off")
    run, _ = s.create_run(new_run())
    lease = s.acquire(run.id, ME, 30, force=False, is_alive=alive)
    for _ in range(8):
        s.commit(lease, events=[NewEvent("x")])
    ((conn, _),) = s._pool._idle
    assert conn.prepare_threshold is None
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == {"count": 0}
    assert len(s.events(run.id)) == 9
    s.close()


def test_a_thread_gets_its_own_connection_back(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?pool_size=4")
    run, _ = s.create_run(new_run())
    seen: dict[int, set[int]] = {}
    barrier = threading.Barrier(3)

    def work(n: int) -> None:
        for _ in range(20):
            barrier.wait(timeout=30)  # all three return their connections, then all three borrow again
            with s._pool.connection() as conn:
                seen.setdefault(n, set()).add(id(conn))
                conn.execute("SELECT 1")

    _threads(work, 3)
    assert all(len(ids) == 1 for ids in seen.values()) and len(set().union(*seen.values())) == 3, seen
    assert s.get_run(run.id).id == run.id
    s.close()


# ---------------------------------------------------------------------- wake-ups (LISTEN/NOTIFY)


class Wakes:
    """Counts a store's wake-up calls; ``wait`` returns once one more arrived."""

    def __init__(self) -> None:
        self.count, self.cond = 0, threading.Condition()

    def __call__(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def after(self, action: Callable[[], Any], timeout: float = 10) -> bool:
        with self.cond:
            seen = self.count
        action()
        with self.cond:
            return self.cond.wait_for(lambda: self.count > seen, timeout=timeout)


def test_writes_that_make_work_runnable_wake_listeners_in_other_processes(pg_dsn: str, spawn: Callable[..., Script]) -> None:
    listener, writer = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    wakes = Wakes()
    unsubscribe = listener.subscribe(wakes)
    assert listener._listener.listening.wait(10)
    child = spawn("import sys\nfrom runbook_postgres.store import PostgresStore\nfrom tests.store_contract import new_run\n"
                  "PostgresStore(sys.argv[1]).create_run(new_run())\n", pg_dsn)  # fmt: skip
    assert wakes.after(child.finish), "a run queued by another process wakes the listener"
    run, _ = writer.create_run(new_run(holder=OTHER))
    assert not wakes.after(lambda: None, timeout=0.5), "a run created leased to its executor wakes nobody"
    lease = writer.acquire(run.id, OTHER, 30, force=False, is_alive=alive)
    writer.commit(lease, run={"state": RunState.WAITING, "wake_at": time.time() + 3600})
    assert not wakes.after(lambda: writer.release(lease), timeout=0.5), "a run waiting for later wakes nobody"
    assert wakes.after(lambda: writer.request(run.id, "approve", actor="a", reason="ok", data={"step_id": "a"})), "a decision does"
    other = PostgresStore(pg_dsn + "?schema=elsewhere")
    assert not wakes.after(lambda: other.create_run(new_run()), timeout=0.5), "another journal's work does not"
    unsubscribe()
    assert not listener._listener.listening.is_set() and listener._listener._thread is None
    for s in (listener, writer, other):
        s.close()


def test_the_listener_reconnects_and_wakes_after_its_connection_is_killed(pg_dsn: str) -> None:
    listener, writer = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    wakes = Wakes()
    listener.subscribe(wakes)
    assert listener._listener.listening.wait(10)
    db = pg_dsn.rsplit("/", 1)[1]
    killed = wakes.after(lambda: _sql(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                                              " AND query LIKE 'LISTEN%%'", db))  # fmt: skip
    assert killed, "a reconnected listener wakes its subscribers (notifications may have been missed)"
    _poll(lambda: listener._listener.listening.is_set(), "the listener to listen again")
    assert wakes.after(lambda: writer.create_run(new_run()))
    listener.close()
    writer.close()


def test_a_subscriber_may_unsubscribe_from_its_own_wake_up(pg_dsn: str) -> None:
    listener, writer = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    done = threading.Event()
    unsubscribe: list[Callable[[], None]] = []

    def once() -> None:
        unsubscribe[0]()  # on the listener's own thread: it must stop without joining itself
        done.set()

    unsubscribe.append(listener.subscribe(once))
    assert listener._listener.listening.wait(10)
    writer.create_run(new_run())
    assert done.wait(10)
    _poll(lambda: not listener._listener.listening.is_set(), "the listener to stop")
    assert listener._listener._thread is None
    listener.close()
    writer.close()


# ---------------------------------------------------------------------- batches (issue 19)


def _clean(s: PostgresStore) -> bool:
    """Every connection of the store's pool is idle and outside any transaction (none left mid-batch)."""
    from psycopg.pq import TransactionStatus

    stats = s._pool.stats()
    idle = [conn for conn, _ in s._pool._idle]
    return stats["open"] == stats["idle"] and all(c.pgconn.transaction_status == TransactionStatus.IDLE for c in idle)


def test_every_kind_of_call_in_a_batch_runs_in_a_savepoint_of_one_transaction(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?pool_size=2")
    holder, _ = s.create_run(new_run(lock_key="host:x"))
    leased, _ = s.create_run(new_run())
    backends: set[int] = set()
    with s.batch():
        batch = s._pool.current_batch()
        assert batch is not None
        backends.add(batch.conn.info.backend_pid)
        lease = s.acquire(leased.id, ME, 30, force=False, is_alive=alive)
        first, _ = s.commit(lease, events=[NewEvent("step.started", step_id="a", attempt=1)], run={"state": RunState.RUNNING},
                            steps=[StepPatch("a", 0, StepState.RUNNING, attempts=1)])  # fmt: skip
        assert [e.seq for e in s.events(leased.id, types=["step.started"])] == [first], "the per-step commit, seen by the batch"
        assert s.get_steps(leased.id)[0].state == StepState.RUNNING and s.get_run(leased.id).state == RunState.RUNNING
        with pytest.raises(LeaseLost):  # a stale fence: the statement writes nothing, the batch goes on
            s.commit(dataclasses.replace(lease, fence=lease.fence - 1), events=[NewEvent("late")])
        with pytest.raises(StoreError, match="LIMIT must not be negative"):  # the server refused a statement ...
            s.list_runs(limit=-1)
        with pytest.raises(LockHeld):  # ... and a transaction of create_run's own
            s.create_run(new_run(lock_key="host:x"))
        kept, _ = s.create_run(new_run(idempotency_key="kept"))  # ... yet the batch's transaction is still usable
        with pytest.raises(StoreError, match="duplicate key"):  # a one-statement call the server refused
            s.create_run(new_run(id=kept.id))
        s.request(kept.id, "pause", actor="alice", reason="r")
        with pytest.raises(RuntimeError), s.batch():  # a nested batch that raises undoes only its own writes
            s.create_run(new_run(idempotency_key="inner"))
            raise RuntimeError("inner")
        with s.batch():
            nested, _ = s.create_run(new_run(idempotency_key="nested"))
        s.release(lease)
        assert _sql(pg_dsn, "SELECT count(*) FROM runs WHERE id = %s", kept.id) == [(0,)], "nothing is visible outside yet"
        backends.add(s._pool.current_batch().conn.info.backend_pid)  # type: ignore[union-attr]
    assert len(backends) == 1 and s._pool.current_batch() is None
    assert {r.idempotency_key for r in s.list_runs(limit=10)} == {None, "kept", "nested"} and len(s.list_runs(limit=10)) == 4
    assert s.get_run(kept.id).pause_requested and s.get_run(leased.id).holder is None
    assert [e.type for e in s.events(leased.id)][-1:] == ["step.started"] and s.get_run(holder.id).lock_key == "host:x"
    assert s.get_run(nested.id).id == nested.id and _clean(s)
    s.close()


def test_other_threads_during_a_batch_neither_join_it_nor_wait_for_it(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?pool_size=2")
    seen: list[Any] = []

    def beside(batch_run: str) -> None:
        assert s._pool.current_batch() is None, "another thread's calls are not in the batch"
        mine, _ = s.create_run(new_run(idempotency_key="beside"))
        seen.extend([s.get_run(mine.id).id, s.find_run_ids(batch_run)])

    with pytest.raises(RuntimeError), s.batch():
        inside, _ = s.create_run(new_run(idempotency_key="inside"))
        other = threading.Thread(target=beside, args=(inside.id,))
        other.start()
        other.join(timeout=60)
        assert not other.is_alive(), "the other thread's calls do not wait for the batch"
        raise RuntimeError("give the batch up")
    assert len(seen) == 2 and seen[1] == [], "it committed its own run and saw nothing of the batch"
    assert [r.idempotency_key for r in s.list_runs(limit=10)] == ["beside"], "the rolled-back batch left nothing"
    assert _clean(s), "the batch's connection went back idle, outside any transaction"
    s.close()


def test_in_process_wake_ups_of_a_batch_come_after_its_commit(store: Store) -> None:
    signal = store.work
    seen = signal.generation()
    with store.batch():
        run, _ = store.create_run(new_run())
        store.request(run.id, "wake", actor="a", reason="r")
        assert signal.generation() == seen, "a worker woken now would not find the run: it is not committed"
    assert signal.generation() != seen, "the commit wakes the workers"
    seen = signal.generation()
    with pytest.raises(RuntimeError), store.batch():
        store.create_run(new_run())
        raise RuntimeError("rolled back")
    assert signal.generation() == seen, "a rolled-back batch wakes nobody"


def test_a_batch_whose_connection_dies_rolls_back_and_gives_its_slot_back(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn + "?pool_size=1")
    with pytest.raises(StoreError, match=r"PostgreSQL store .* failed"), s.batch():
        lost, _ = s.create_run(new_run())
        batch = s._pool.current_batch()
        assert batch is not None
        _sql(pg_dsn, "SELECT pg_terminate_backend(%s)", batch.conn.info.backend_pid)
        s.get_run(lost.id)
    assert s._pool.stats()["open"] == 0, "the broken connection was discarded, not pooled"
    run, _ = s.create_run(new_run())  # the only slot is free again
    assert [r.id for r in s.list_runs(limit=10)] == [run.id], "nothing of the dead batch was committed"
    s.close()
