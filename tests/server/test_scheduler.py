"""The scheduler in process, on a real SQLite journal and the real engine, with a clock the test sets.

Each "process" is a :class:`Scheduler` with its own store connection and engine over one journal file, so
races between schedulers go through SQLite exactly as two server processes' would.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from runbook_server.config import ServerConfig
from runbook_server.scheduler import Scheduler
from runbook_server.schedules import check_schedules, compile_schedules, describe
from runbook_sqlite.store import SQLiteStore

from runner.catalog import Catalog, search_path
from runner.engine import DriveOptions, Engine
from runner.errors import StoreError, ValidationError
from runner.plugin import PluginHost
from runner.settings import Settings

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()  # a slot of every per-minute schedule
MIN = 60.0

TICK = """
name: tick
params:
  slot: {type: string}
steps:
  - id: note
    shell: [sh, -c, 'echo "$1" >> "$2"', sh, "{{ params.slot }}", "OUT"]
"""
FAIL = """
name: flaky
params:
  slot: {type: string}
steps:
  - id: fail
    shell: [sh, -c, 'exit 1']
"""


class Clock:
    """A clock only the test moves."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep_until(self, when: float, stop: threading.Event) -> None:
        stop.wait(0.001)


class World:
    """One journal file and catalog; each :meth:`scheduler` is another "process" on them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "runbooks").mkdir(parents=True)
        self.out = root / "out.log"
        (root / "runbooks" / "tick.yaml").write_text(TICK.replace("OUT", str(self.out)), encoding="utf-8")
        (root / "runbooks" / "flaky.yaml").write_text(FAIL, encoding="utf-8")
        self.url = f"sqlite:///{root / 'journal.db'}"
        self.host = PluginHost()
        self.settings = Settings(paths=[str(root / "runbooks")], store_url=self.url, project_dir=root, actor="tester")
        self.catalog = Catalog.load(self.host.step_types, search_path(self.settings.paths))
        self.stores: list[SQLiteStore] = []
        self.store = self.new_store()

    def new_store(self) -> SQLiteStore:
        store = SQLiteStore(self.url)
        self.stores.append(store)
        return store

    def engine(self, store: SQLiteStore | None = None) -> Engine:
        return Engine(self.host, store or self.new_store(), self.catalog, self.settings, holder_kind="scheduler")

    def config(self, **schedule: Any) -> ServerConfig:
        spec = {"name": "tick", "runbook": "tick", "cron": "* * * * *", "params": {"slot": "{{ schedule.slot }}"}, **schedule}
        return ServerConfig.model_validate({"schedules": [spec]})

    def scheduler(self, clock: Clock, **schedule: Any) -> Scheduler:
        engine = self.engine()
        config = self.config(**schedule)
        return Scheduler(check_schedules(config, self.catalog, engine.renderer, clock.now()), engine, clock)

    def runs(self, runbook: str = "tick") -> list[Any]:
        return self.store.list_runs(runbook=runbook, limit=10000)

    def decisions(self, name: str = "tick") -> list[Any]:
        return list(reversed(self.store.list_decisions(route=f"schedule:{name}", source="schedule", limit=10000)))

    def drive(self, run_id: str) -> str:
        return str(self.engine(self.store).drive(run_id, DriveOptions(actor="worker", wait_in_process=False)).state)


@pytest.fixture
def world(tmp_path: Path) -> Any:
    w = World(tmp_path)
    yield w
    for store in w.stores:
        store.close()


def slot(i: int) -> str:
    """The i-th per-minute slot after T0, as decisions spell it."""
    return datetime.fromtimestamp(T0 + i * MIN, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- exactly once


def test_two_schedulers_racing_in_threads_start_one_run_per_slot(world: World) -> None:
    """The SQLite variant of "two workers": each slot's tick happens in both at the same instant."""
    clock = Clock(T0 + 25)
    a, b = world.scheduler(clock, jitter="20s", overlap="allow"), world.scheduler(clock, jitter="20s", overlap="allow")
    times = [T0 + 25 + 5 * i for i in range(12 * 30)]  # 30 minutes in 5 s steps
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def drive(s: Scheduler) -> None:
        try:
            for t in times:
                barrier.wait(timeout=30)
                s.tick(t)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=drive, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    cs = a.schedules[0]
    due = [s for s in cs.slots.between(datetime.fromtimestamp(T0 - 1, UTC), datetime.fromtimestamp(times[-1], UTC))
           if cs.fire_at(s) <= times[-1]]  # fmt: skip
    assert len(due) >= 29
    runs = world.runs()
    keys = Counter(r.idempotency_key for r in runs)
    assert sorted(keys) == sorted(cs.key(s) for s in due) and set(keys.values()) == {1}
    decisions = world.decisions()
    assert [d.fingerprint for d in decisions] == [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in due]
    assert {d.decision for d in decisions} == {"started"}
    assert {d.run_id for d in decisions} == {r.id for r in runs}
    run = world.store.get_run(decisions[0].run_id)
    assert run.started_by == "schedule:tick" and run.options["principal"] == {"kind": "schedule", "name": "tick"}
    assert run.params == {"slot": "2026-01-01T12:00:00+00:00"} and run.trigger is not None
    assert run.trigger["slot_utc"] == slot(0) and run.trigger["delivery"] == f"schedule:tick:{slot(0)}"


class Died(BaseException):
    """The process ended here (as a kill -9 would end it)."""


@pytest.mark.parametrize("after", [10.0, 3 * MIN], ids=["peer-within-grace", "restart-after-grace"])
def test_a_scheduler_killed_between_the_run_and_its_decision_loses_nothing_and_doubles_nothing(world: World, after: float) -> None:
    clock = Clock(T0)
    first = world.scheduler(clock, overlap="allow")
    first.tick(T0 - MIN + 1)  # fires slot -1: the schedule has a history

    def die(_decisions: Any) -> Any:
        raise Died

    first.store.record_decisions = die  # type: ignore[method-assign]
    with pytest.raises(Died):
        first.tick(T0 + 1)
    run = next(r for r in world.runs() if r.idempotency_key == f"schedule:tick:{slot(0)}")  # created, queued, no decision
    assert [d.fingerprint for d in world.decisions()] == [slot(-1)]
    second = world.scheduler(Clock(T0 + after), overlap="allow")
    second.tick(T0 + after)
    (_, decision, *later) = world.decisions()
    assert decision.fingerprint == slot(0) and decision.decision == "started" and decision.run_id == run.id
    assert [r.id for r in world.runs() if r.idempotency_key == run.idempotency_key] == [run.id]
    if after > MIN:  # nobody fired slot 0 in time: found at start-up, recorded as the run it is, never run twice
        assert "created for this slot by a scheduler that stopped" in decision.reason
        assert [(d.fingerprint, d.decision) for d in later] == [(slot(2), "missed"), (slot(3), "started")]


def test_a_decision_the_store_refused_is_recorded_on_the_next_tick(world: World) -> None:
    s = world.scheduler(Clock(T0), overlap="allow")
    s.tick(T0 - 1)
    real = s.store.record_decisions
    calls = 0

    def flaky(decisions: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("database is locked")
        return real(decisions)

    s.store.record_decisions = flaky  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        s.tick(T0 + 1)
    assert s.next_wake(T0 + 1) == T0 + 2  # tries again within a second
    s.tick(T0 + 2)
    (_, d) = world.decisions()
    (run,) = [r for r in world.runs() if r.idempotency_key == f"schedule:tick:{slot(0)}"]
    assert (d.fingerprint, d.decision, d.run_id) == (slot(0), "started", run.id)


def test_run_loop_keeps_going_after_a_failed_tick(world: World) -> None:
    s = world.scheduler(Clock(T0 + 1), overlap="allow")
    real, calls = s.store.list_decisions, []

    def down(**kw: Any) -> Any:
        calls.append(kw)
        if len(calls) <= 2:
            raise StoreError("the store does not answer")
        return real(**kw)

    s.store.list_decisions = down  # type: ignore[method-assign]
    stop = threading.Event()
    s.start(stop)
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while not world.decisions() and datetime.now(UTC) < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        s.join(10)
    assert [d.decision for d in world.decisions()] == ["started"]


# ---------------------------------------------------------------------- misfires


def test_misfire_skip_records_the_latest_missed_slot_once_and_runs_nothing_for_it(world: World) -> None:
    world.scheduler(Clock(T0)).tick(T0 + 1)  # slot 0 fired; then no scheduler for ten minutes
    now = T0 + 10 * MIN + 30
    for s in (world.scheduler(Clock(now)), world.scheduler(Clock(now))):  # two processes come back at once
        s.tick(now)
    decisions = world.decisions()
    assert [(d.fingerprint, d.decision) for d in decisions] == [(slot(0), "started"), (slot(9), "missed"), (slot(10), "deduped")]
    assert decisions[1].reason == ("9 slot(s) from 2026-01-01T12:01:00+00:00 to 2026-01-01T12:09:00+00:00 passed while no scheduler "
                                   "was running; not run (misfire: skip)")  # fmt: skip
    assert decisions[2].run_id == decisions[0].run_id  # overlap: skip (slot 0's run never ran: still queued)
    assert len(world.runs()) == 1


@pytest.mark.parametrize("catch_up", ["5m", "30s"], ids=["within-catch-up", "beyond-catch-up"])
def test_misfire_run_once_runs_the_latest_missed_slot_once_within_catch_up(world: World, catch_up: str) -> None:
    spec = {"misfire": "run_once", "catch_up": catch_up, "overlap": "allow"}
    world.scheduler(Clock(T0), **spec).tick(T0 + 1)
    now = T0 + 10 * MIN + 30  # slot 9 is the latest missed (90 s ago), slot 10 is on time
    for s in (world.scheduler(Clock(now), **spec), world.scheduler(Clock(now), **spec)):
        s.tick(now)
    d = world.decisions()
    assert [x.fingerprint for x in d] == [slot(0), slot(9), slot(10)]
    runs = {r.idempotency_key: r for r in world.runs()}
    if catch_up == "5m":
        assert d[1].decision == "started" and d[1].reason.endswith("misfire: run_once runs the latest once")
        assert runs[f"schedule:tick:{slot(9)}"].trigger["catch_up"] is True
        assert len(runs) == 3
    else:
        assert d[1].decision == "missed" and d[1].reason.endswith("not run (older than catch_up (30s))")
        assert len(runs) == 2
    assert d[2].decision == "started" and runs[f"schedule:tick:{slot(10)}"].trigger["catch_up"] is False


def test_a_new_schedule_has_missed_nothing(world: World) -> None:
    now = T0 + 10 * MIN + 30
    world.scheduler(Clock(now), misfire="run_once").tick(now)
    assert [(d.fingerprint, d.decision) for d in world.decisions()] == [(slot(10), "started")]


def test_a_stall_longer_than_grace_is_handled_like_a_restart(world: World) -> None:
    s = world.scheduler(Clock(T0), overlap="allow", grace="10s")
    s.tick(T0)
    s.tick(T0 + 5 * MIN + 5)  # the thread was stuck for five minutes (a suspended VM)
    assert [(d.fingerprint, d.decision) for d in world.decisions()] == [(slot(0), "started"), (slot(4), "missed"), (slot(5), "started")]


# ---------------------------------------------------------------------- jitter and wake-ups


def test_jitter_is_the_same_on_every_server_and_delays_the_fire_time(world: World) -> None:
    config = world.config(jitter="30s", overlap="allow")
    a, b = compile_schedules(config)[0], compile_schedules(config)[0]
    slots = list(a.slots.between(datetime.fromtimestamp(T0 - 1, UTC), datetime.fromtimestamp(T0 + 99 * MIN, UTC)))
    delays = [a.delay(s) for s in slots]
    assert delays == [b.delay(s) for s in slots] and all(0 <= d < 30 for d in delays) and len(set(delays)) == len(delays)
    assert 10 < sum(delays) / len(delays) < 20  # spread over the window
    s = world.scheduler(Clock(T0), jitter="30s", overlap="allow")
    fire = a.fire_at(slots[0])
    assert s.next_wake(T0 - 1) == fire
    s.tick(fire - 0.01)
    assert world.decisions() == []
    s.tick(fire)
    assert [d.fingerprint for d in world.decisions()] == [slot(0)]
    assert s.next_wake(fire) == min(a.fire_at(slots[1]), fire + 60)


def test_next_wake_is_at_most_a_minute_ahead(world: World) -> None:
    s = world.scheduler(Clock(T0), cron="0 0 1 1 *")
    assert s.next_wake(T0) == T0 + 60


# ---------------------------------------------------------------------- the route guards


def fire(world: World, s: Scheduler, i: int) -> Any:
    """Tick at slot ``i`` (plus the most jitter a test uses); the newest decision of the schedule."""
    s.tick(T0 + i * MIN + 15)
    return world.decisions(s.schedules[0].name)[-1]


def test_overlap_skip_defers_to_the_active_run_and_allow_does_not(world: World) -> None:
    s = world.scheduler(Clock(T0))
    first = fire(world, s, 0)
    second = fire(world, s, 1)
    assert (second.decision, second.run_id) == ("deduped", first.run_id)
    assert "is still queued" in second.reason
    assert world.drive(first.run_id) == "succeeded"
    assert fire(world, s, 2).decision == "started"


def test_budget_and_lock(world: World, tmp_path: Path) -> None:
    s = world.scheduler(Clock(T0), overlap="allow", budget={"runs": 2, "per": "1h"})
    assert [fire(world, s, i).decision for i in range(3)] == ["started", "started", "over_budget"]
    (tmp_path / "runbooks" / "tick.yaml").write_text(TICK.replace("OUT", str(world.out)) + 'lock: "ticking"\n', encoding="utf-8")
    world.catalog = Catalog.load(world.host.step_types, search_path(world.settings.paths))
    locked = world.scheduler(Clock(T0), name="locked", overlap="allow")
    first, second = fire(world, locked, 10), fire(world, locked, 11)
    assert first.decision == "started" and (second.decision, second.run_id) == ("locked", first.run_id)
    assert "lock 'ticking' is held by run" in second.reason


def test_the_breaker_gates_runs_after_failures_and_a_reset_closes_it(world: World) -> None:
    from runner.alerts import NewDecision

    s = world.scheduler(Clock(T0), name="flaky", runbook="flaky", overlap="allow", breaker={"failures": 2, "within": "1h"})
    for i in range(2):
        d = fire(world, s, i)
        assert d.decision == "started" and world.drive(d.run_id) == "failed"
    gated = fire(world, s, 2)
    assert gated.decision == "breaker_open" and "2 failed run(s)" in gated.reason
    assert set(world.store.get_run(gated.run_id).options["gates"]) == {"fail"}
    world.store.record_decisions([NewDecision("cli:reset:x", 0, "cli", "breaker_reset", route="schedule:flaky", reason="reset")])
    d = fire(world, s, 3)
    assert d.decision == "started" and "gates" not in world.store.get_run(d.run_id).options


def test_approval_required_gates_every_step(world: World) -> None:
    s = world.scheduler(Clock(T0), approval="required")
    d = fire(world, s, 0)
    assert d.decision == "started" and d.reason == "route requires approval: every step waits for approval"
    assert set(world.store.get_run(d.run_id).options["gates"]) == {"note"}


def test_params_that_do_not_fit_at_fire_time_are_invalid_params(world: World) -> None:
    config = world.config(params={"slot": "{{ schedule.nope }}"})
    engine = world.engine()
    s = Scheduler(compile_schedules(config), engine, Clock(T0))
    d = fire(world, s, 0)
    assert d.decision == "invalid_params" and "schedules.tick.params" in d.reason and "nope" in d.reason
    assert world.runs() == []


# ---------------------------------------------------------------------- checks and listing


def test_check_schedules_names_every_problem(world: World, tmp_path: Path) -> None:
    from runbook_server.config import load_config

    path = tmp_path / "server.yaml"
    path.write_text(
        "schedules:\n"
        "  - {name: a, runbook: tick, cron: '* * * * *', params: {slot: '{{ schedule.slot }}'}}\n"
        "  - {name: a, runbook: tick, cron: '* * * * *', params: {slot: '{{ schedule.slot }}'}}\n"
        "  - {name: b, runbook: nope, cron: '@daily'}\n"
        "  - {name: c, runbook: tick, cron: '@hourly', params: {slot: 5}}\n"
        "  - {name: d, runbook: tick, cron: '@hourly', params: {slot: '{{ schedule.slot '}}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    with pytest.raises(ValidationError) as info:
        check_schedules(config, world.catalog, world.engine().renderer, T0)
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"{path}:3:") and "schedule name 'a' is used twice" in problems[0]
    assert problems[1].startswith(f"{path}:4:") and "no runbook named 'nope' in the catalog" in problems[1]
    assert (
        problems[2].startswith(f"{path}:5:")
        and "for the slot 2026-01-01T13:00:00+00:00: slot: Input should be a valid string" in problems[2]
    )
    assert problems[3].startswith(f"{path}:6:62 (schedules.4.params.slot)") and "unexpected end of template" in problems[3]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: x, runbook: tick, cron: '61 * * * *'}", "(schedules.0.cron): minute field '61': 61 is out of range 0-59"),
        ("{name: x, runbook: tick, cron: '@hourly', timezone: Europe/Pariss}", "unknown time zone 'Europe/Pariss'"),
        ("{name: x, runbook: tick, cron: '@hourly', misfire: twice}", "schedules.0.misfire"),
        ("{name: x, runbook: tick, cron: '@hourly', jitter: soon}", "schedules.0.jitter"),
        ("{name: x, runbook: tick, cron: '@hourly', grace: 0}", "schedules.0.grace"),
        ("{name: x, runbook: tick, cron: '@hourly', every: 5m}", "(schedules.0.every): unknown key 'every'"),
        ("{name: X!, runbook: tick, cron: '@hourly'}", "schedules.0.name"),
    ],
    ids=["cron", "timezone", "misfire", "jitter", "grace", "unknown-key", "name"],
)
def test_config_errors_are_located(tmp_path: Path, entry: str, message: str) -> None:
    from runbook_server.config import load_config

    path = tmp_path / "server.yaml"
    path.write_text(f"listen: 127.0.0.1:8080\nschedules:\n  - {entry}\n", encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        load_config(path)
    text = str(info.value.problems[0])
    assert text.startswith(f"{path}:3:") and message in text, text


def test_describe_shows_next_slot_and_the_newest_decision_and_run(world: World) -> None:
    s = world.scheduler(Clock(T0), timezone="Europe/Paris", jitter="10s")  # T0 is 13:00 in Paris
    fire(world, s, 0)
    fire(world, s, 1)
    (row,) = describe(s.all, world.store, T0 + 1 * MIN + 30).schedules
    assert row.next_slot == "2026-01-01T13:02:00+01:00" and row.next_fire_at is not None and row.next_fire_at >= row.next_slot[:19]
    assert (row.last_slot, row.last_decision) == ("2026-01-01T13:01:00+01:00", "deduped")
    assert row.last_run_slot == "2026-01-01T13:00:00+01:00" and row.last_run_state == "queued" and row.last_run_id
