"""Must-show: two ``runbook serve`` processes on one journal fire a per-minute schedule for three minutes,
exactly one run per slot, while each of them is killed (kill -9) across a slot.

Time is the test-only file clock (``RUNBOOK_TEST_CLOCK``), one file per process, so the test stops and
starts each server's time instead of waiting three real minutes and never races a server's start-up:

- 12:01 — server A's scheduler dies (the test-only ``RUNBOOK_TEST_SCHEDULER_CRASH=after_start``: SIGKILL
  right after creating the slot's run, before recording its decision); B's clock then reaches 12:01: it finds
  the run, records it and executes it;
- 12:02 — B is killed -9 before the slot; A (restarted) fires and executes it alone;
- 12:03 — both run (racing for the slot); whichever executes the slot's run is killed -9 in the middle of its
  step; the other takes the run over and finishes it without running the step again (its ``check``).

Each run's step appends its slot to a file: three lines, one per slot, and three runs, three ``started``
decisions, nothing ``missed``. Run on PostgreSQL and on one SQLite file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Project, require
from tests.server.serverkit import ServerProcess, poll, start_server

TICK = """
name: tick
params:
  slot: {type: string}
  out: {type: string}
  hold: {type: number, default: 0}
steps:
  - id: note
    shell:
      script: |
        echo "$slot" >> "$out"
        sleep "$hold"
    check:
      - shell: [grep, -qxF, "{{ params.slot }}", "{{ params.out }}"]
"""
CONFIG = """
schedules:
  - name: tick
    runbook: tick
    cron: "* * * * *"
    timezone: Europe/Paris
    params: {slot: "{{ schedule.slot }}", out: "OUT", hold: 2}
    grace: 30s
    overlap: allow
"""
START = datetime(2026, 7, 1, 10, 0, 45, tzinfo=UTC).timestamp()  # 12:00:45 in Paris
SPEED = 60.0  # a minute a second
SLOTS = ["2026-07-01T12:01:00+02:00", "2026-07-01T12:02:00+02:00", "2026-07-01T12:03:00+02:00"]


class SimClock:
    """One test-clock file per server process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc = {"start": START, "at": time.time() + 10**6, "speed": SPEED}  # stopped at START
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc), encoding="utf-8")
        os.replace(tmp, self.path)

    def now(self) -> float:
        return float(self.doc["start"] + max(0.0, time.time() - self.doc["at"]) * self.doc["speed"])

    def go(self, at: float | None = None) -> None:
        """Let time run from where it stands."""
        self.doc = {"start": self.now(), "at": time.time() if at is None else at, "speed": SPEED}
        self._write()

    def stop(self, at: float | None = None) -> float:
        """Stop time (at ``at``, default now); returns the time it stopped at."""
        self.doc = {"start": self.now() if at is None else at, "at": time.time() + 10**6, "speed": SPEED}
        self._write()
        return float(self.doc["start"])


class Pair:
    """Servers A and B on one journal, each with its own clock file."""

    def __init__(self, project: Project, store: Any, url: str | None) -> None:
        self.project, self.store = project, store
        self.out = project.root / "ticks.log"
        project.write("tick.yaml", TICK)
        self.config = CONFIG.replace("OUT", str(self.out))
        self.env = {"RUNBOOK_STORE": url} if url else {}
        self.clocks = {n: SimClock(project.root / f"clock-{n}.json") for n in "AB"}
        self.servers: dict[str, ServerProcess] = {}

    def start(self, name: str, **env: str) -> ServerProcess:
        server = start_server(self.project, self.config, workers=2, env={**self.env, "RUNBOOK_TEST_CLOCK": str(self.clocks[name].path), **env},
                              name=f"server-{name}.yaml")  # fmt: skip
        self.servers[name] = server
        return server

    def kill(self, name: str) -> None:
        server = self.servers.pop(name)
        server.proc.kill()
        server.stop()

    def decisions(self) -> list[tuple[str, str]]:
        """(slot in Paris, decision) of every decision for the schedule, oldest first."""
        rows = reversed(self.store.list_decisions(route="schedule:tick", limit=100))
        return [(_paris(d.fingerprint), d.decision) for d in rows]

    def run_for(self, slot: str) -> Any:
        utc = datetime.fromisoformat(slot).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return next((r for r in self.store.list_runs(runbook="tick", limit=100) if r.idempotency_key == f"schedule:tick:{utc}"), None)

    def succeeded(self, slot: str) -> bool:
        run = self.run_for(slot)
        return run is not None and run.state == "succeeded"

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(params=["postgres", "sqlite"])
def pair(request: pytest.FixtureRequest, project: Project) -> Iterator[Pair]:
    require(importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("uvicorn") is not None,
            "fastapi and uvicorn (pip install 'runbook[server]')")  # fmt: skip
    if request.param == "postgres":
        from runbook_postgres.store import PostgresStore

        dsn = request.getfixturevalue("pg_dsn")
        store: Any = PostgresStore(dsn)
        p = Pair(project, store, dsn)
    else:
        from runbook_sqlite.store import SQLiteStore

        project.journal.parent.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(f"sqlite:///{project.journal}")
        p = Pair(project, store, None)
    yield p
    p.stop_all()
    store.close()


def test_two_servers_fire_each_slot_once_while_each_is_killed_across_a_slot(pair: Pair) -> None:
    with ThreadPoolExecutor(2) as pool:  # both start-ups at once (clocks stopped: nothing is due yet)
        started = pool.submit(pair.start, "A", RUNBOOK_TEST_SCHEDULER_CRASH="after_start"), pool.submit(pair.start, "B")
        a = started[0].result()
        started[1].result()

    # 12:01 — A creates the slot's run and dies before recording it; B, a little later, records and runs it
    pair.clocks["A"].go()
    poll(lambda: a.proc.poll() is not None, what="server A to die at 12:01", timeout=60)
    assert a.proc.returncode == -signal.SIGKILL
    pair.servers.pop("A").stop()
    assert pair.run_for(SLOTS[0]) is not None and pair.decisions() == []
    pair.clocks["B"].go()
    poll(lambda: pair.decisions(), what="B to record 12:01", timeout=60)
    stopped = pair.clocks["B"].stop()
    poll(lambda: pair.succeeded(SLOTS[0]), what="the 12:01 run to succeed on B", timeout=60)
    assert pair.decisions() == [(SLOTS[0], "started")]

    # 12:02 — B is killed before the slot; A, restarted, fires and executes it alone
    pair.clocks["A"].stop(at=stopped)
    pair.start("A")
    pair.kill("B")
    pair.clocks["A"].go()
    poll(lambda: len(pair.decisions()) == 2, what="A to record 12:02", timeout=60)
    stopped = pair.clocks["A"].stop()
    assert START + 75 <= stopped < START + 135  # after 12:02, before 12:03
    poll(lambda: pair.succeeded(SLOTS[1]), what="the 12:02 run to succeed on A", timeout=60)

    # 12:03 — both race for the slot; the executor of its run is killed in the middle of the step
    pair.clocks["B"].stop(at=stopped)
    pair.start("B")
    at = time.time()
    for clock in pair.clocks.values():
        clock.go(at)
    poll(lambda: (SLOTS[2], "started") in pair.decisions(), what="the 12:03 decision", timeout=60)
    for clock in pair.clocks.values():
        clock.stop()
    run = poll(lambda: _mid_step(pair, SLOTS[2]), what="the 12:03 run to be in its step", timeout=60)
    victim = next(n for n, s in pair.servers.items() if s.proc.pid == run.holder.pid)
    pair.kill(victim)
    poll(lambda: pair.succeeded(SLOTS[2]), what="the 12:03 run to be taken over and succeed", timeout=60)
    survivor = next(iter(pair.servers.values()))

    # exactly once per slot: decisions, runs, side effects
    assert pair.decisions() == [(s, "started") for s in SLOTS]
    runs = pair.store.list_runs(runbook="tick", limit=100)
    assert len(runs) == 3 and {r.state for r in runs} == {"succeeded"}
    assert pair.out.read_text(encoding="utf-8").splitlines() == SLOTS
    steps = pair.store.get_steps(pair.run_for(SLOTS[2]).id)
    assert [s.state for s in steps] == ["satisfied"]  # re-entered through its check after the kill, not run twice

    # the API and the CLI list it
    listing = survivor.client().get("/v1/schedules").json()
    (row,) = listing["schedules"]
    assert row["next_slot"] == "2026-07-01T12:04:00+02:00" and row["last_slot"] == SLOTS[2] and row["last_decision"] == "started"
    assert row["last_run_state"] == "succeeded" and row["last_run_slot"] == SLOTS[2]
    detail = survivor.client().get("/v1/schedules/tick", params={"upcoming": 2}).json()
    assert detail["upcoming"] == ["2026-07-01T12:04:00+02:00", "2026-07-01T12:05:00+02:00"]
    assert [d["decision"] for d in detail["decisions"]] == ["started"] * 3
    env = {**pair.env, "RUNBOOK_TEST_CLOCK": str(pair.clocks["A"].path)}
    result = pair.project.run("schedules", "--config", str(pair.project.root / "server-A.yaml"), "--json", env=env)
    assert result.code == 0, result
    assert result.json()["schedules"] == listing["schedules"]


def _paris(utc: str) -> str:
    return datetime.strptime(utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris")).isoformat()


def _mid_step(pair: Pair, slot: str) -> Any:
    """The run of ``slot`` while its step sleeps (its line written, the run not finished), with its executor."""
    run = pair.run_for(slot)
    lines = pair.out.read_text(encoding="utf-8").splitlines() if pair.out.exists() else []
    if run is None or run.state != "running" or run.holder is None or slot not in lines:
        return None
    return run
