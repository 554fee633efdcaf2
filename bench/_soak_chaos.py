"""The soak of one store: supervised components killed at random moments, SIGSTOPs past lease expiry, PostgreSQL killed.

Components: two CLI executor slots (``runbook run`` of a new run, or ``runbook resume`` of an unfinished CLI run),
two ``runbook worker`` processes (one thread each) and one ``runbook serve`` (one worker thread) that receives
Alertmanager deliveries and ``POST /v1/runs`` from :class:`~_soak_parts.Sender`. Each process is given a random
lifetime when it starts; when it is up, it is ``kill -9``-ed and started again, as a supervisor would.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from _soak_parts import Component, Sender, SoakProject

LIFETIMES = {"cli": (0.5, 4.0), "worker": (1.0, 6.0), "serve": (2.0, 8.0)}
ACTIVE = ("queued", "running", "paused", "waiting", "interrupted")


@dataclass
class Plan:
    """How much chaos one store gets."""

    kills: int
    sigstops: int
    pg_kills: int
    drain_timeout: float = 300.0


@dataclass
class Chaos:
    """The running soak of one store and what it counted."""

    project: SoakProject
    rng: random.Random
    plan: Plan
    prefix: str
    pg: Any = None  # harness.postgres.PostgresServer when the store is PostgreSQL
    kills: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)  # unplanned exits, "kind:code"
    cli_codes: Counter[int] = field(default_factory=Counter)
    sigstops: list[dict[str, Any]] = field(default_factory=list)
    pg_outages: list[float] = field(default_factory=list)
    resumed_at_end: Counter[str] = field(default_factory=Counter)
    comps: dict[str, Component] = field(default_factory=dict)
    read_errors: Counter[str] = field(default_factory=Counter)
    _store: Any = None
    _cli_n: int = 0
    _stop: dict[str, Any] | None = None

    def say(self, message: str) -> None:
        """A progress line on stderr (kills so far, and what happened)."""
        print(f"soak {time.strftime('%H:%M:%S')} {self.prefix} kills={self.killed}: {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ set-up

    def store(self) -> Any:
        """The driver's own connection to the journal (opened again after a PostgreSQL restart)."""
        if self._store is None:
            from runner.plugin import PluginHost

            self._store = PluginHost().stores.open(self.project.store_url)
        return self._store

    def _reset_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                self._store.close()
        self._store = None

    def read(self, fn: Any, default: Any) -> Any:
        """``fn(store)``, or ``default`` while the store does not answer."""
        try:
            return fn(self.store())
        except Exception as exc:  # the store may be down (PostgreSQL killed): read again later
            self.read_errors[type(exc).__name__] += 1
            self._reset_store()
            return default

    def start(self) -> Sender:
        """Create the journal, start the server, the workers and the sender."""
        self.store()
        logs = self.project.root / "logs"
        port = self.project.port
        serve = self.project.cmd("serve", "--config", str(self.project.root / "server.yaml"), "--listen", f"127.0.0.1:{port}",
                                 "--workers", "1")  # fmt: skip
        self.comps["serve"] = Component("serve", "serve", serve, logs / "serve.log")
        for i in (1, 2):
            argv = self.project.cmd("worker", "--workers", "1", "--poll", "0.2")
            self.comps[f"worker-{i}"] = Component(f"worker-{i}", "worker", argv, logs / f"worker-{i}.log")
        for c in self.comps.values():
            c.start(self.project, self.rng.uniform(*LIFETIMES[c.kind]))
        for i in (1, 2):
            self._start_cli(f"cli-{i}")
        sender = Sender(port, self.prefix, random.Random(self.rng.random()))
        sender.start()
        return sender

    def _start_cli(self, name: str) -> None:
        logs = self.project.root / "logs"
        unfinished = self.read(lambda s: [r.id for r in s.list_runs(states=ACTIVE, limit=50)], [])
        busy = {c.tag for c in self.comps.values() if c.kind == "cli" and c.alive()}
        unfinished = [r for r in unfinished if r not in busy]
        if unfinished and self.rng.random() < 0.5:
            run_id = self.rng.choice(unfinished)
            comp = Component(name, "cli", self.project.cmd("resume", run_id, "--json"), logs / f"{name}.log", tag=run_id)
        else:
            self._cli_n += 1
            tag = f"{self.prefix}-cli-{self._cli_n}"
            comp = Component(name, "cli", self.project.cmd("run", "soak", "-p", f"tag={tag}", "--json"), logs / f"{name}.log", tag=tag)
        self.comps[name] = comp
        comp.start(self.project, self.rng.uniform(*LIFETIMES["cli"]))

    # ------------------------------------------------------------------ the loop

    @property
    def killed(self) -> int:
        """Kills of executors, workers and servers so far (PostgreSQL's own are counted apart)."""
        return sum(n for kind, n in self.kills.items() if kind != "postgres")

    def run(self) -> None:
        """Kill at random moments until the plan's number of kills is reached."""
        stop_every = self.plan.kills / (self.plan.sigstops + 1)
        pg_every = self.plan.kills / (self.plan.pg_kills + 1)
        next_stop, next_pg = stop_every, pg_every
        while self.killed < self.plan.kills or not self._planned_done():
            time.sleep(0.05)
            self.supervise(kill=True)
            due = self._stop is None and len(self.sigstops) < self.plan.sigstops and self.killed >= next_stop
            if due and self._sigstop():
                next_stop += stop_every
            if self._stop is not None:
                self._sigstop_progress()
            if self.pg is not None and len(self.pg_outages) < self.plan.pg_kills and self.killed >= next_pg:
                self._kill_postgres()
                next_pg += pg_every

    def _planned_done(self) -> bool:
        """Every planned SIGSTOP and PostgreSQL kill happened (a SIGSTOP waits for an executor holding a lease)."""
        pg_done = self.pg is None or len(self.pg_outages) >= self.plan.pg_kills
        return pg_done and self._stop is None and len(self.sigstops) >= self.plan.sigstops

    def supervise(self, *, kill: bool, new_cli: bool = True) -> None:
        """Restart what exited, and (with ``kill``) ``kill -9`` what reached its random lifetime."""
        now = time.monotonic()
        for name, c in list(self.comps.items()):
            if c.stopped:
                continue
            if not c.alive():
                code = c.proc.returncode if c.proc is not None else None
                if c.kind == "cli":
                    self.cli_codes[int(code or 0)] += 1
                    if new_cli:
                        self._start_cli(name)
                    else:
                        del self.comps[name]
                    continue
                self.exits[f"{c.kind}:{code}"] += 1
                c.start(self.project, self.rng.uniform(*LIFETIMES[c.kind]))
            elif kill and now >= c.kill_at and c.kill9():
                self.kills[c.kind] += 1
                if self.killed % 100 == 0:
                    self.say(f"{dict(self.kills)}")
                if c.kind == "cli":
                    self._start_cli(name)
                else:
                    c.start(self.project, self.rng.uniform(*LIFETIMES[c.kind]))

    # ------------------------------------------------------------------ SIGSTOP past lease expiry

    def _sigstop(self) -> bool:
        """SIGSTOP a process (CLI, worker, server) that holds a running run's lease; False if none holds one now."""
        by_pid = {c.pid: c for c in self.comps.values() if c.alive() and not c.stopped}
        running = self.read(lambda s: s.list_runs(states=("running",), limit=50), [])
        held = [r for r in running if r.holder is not None and r.holder.pid in by_pid]
        if not held:
            return False
        run = self.rng.choice(held)
        victim = by_pid[run.holder.pid]
        victim.signal(signal.SIGSTOP)
        victim.stopped = True
        self._stop = {"comp": victim, "run_id": run.id, "fence": run.fence, "at": time.monotonic(), "kind": victim.kind}
        self.say(f"SIGSTOP {victim.name} (pid {victim.pid}) holding run {run.id} (fence {run.fence})")
        return True

    def _sigstop_progress(self) -> None:
        """SIGCONT the stopped executor once another took its run over (or gave up waiting for that)."""
        assert self._stop is not None
        waited = time.monotonic() - self._stop["at"]
        if waited < self.project.lease_ttl + 1:
            return
        run = self.read(lambda s: s.get_run(self._stop["run_id"]) if self._stop else None, None)
        taken = run is not None and run.fence > self._stop["fence"]
        froze = not taken and waited > self.project.lease_ttl + 3 and self._sqlite_write_locked()
        if not taken and not froze and waited < self.project.lease_ttl + 60:
            return
        comp: Component = self._stop["comp"]
        offset = comp.log.stat().st_size  # before SIGCONT: what it writes from then on is looked at
        comp.signal(signal.SIGCONT)
        comp.stopped = False
        comp.kill_at = time.monotonic() + self.rng.uniform(3.0, 6.0)  # let it run on: its next write must be fenced
        self.sigstops.append({"kind": self._stop["kind"], "run_id": self._stop["run_id"], "stopped_s": round(waited, 1),
                              "taken_over": taken, "froze_journal": froze, "log": str(comp.log), "offset": offset})  # fmt: skip
        outcome = "taken over" if taken else "NOT taken over: it holds the SQLite journal's write lock" if froze else "NOT taken over"
        self.say(f"SIGCONT {comp.name} after {waited:.1f} s; run {outcome}")
        self._stop = None

    def _sqlite_write_locked(self) -> bool:
        """True if no process can start a write on the SQLite journal (the stopped one is inside its write transaction)."""
        import sqlite3

        if not self.project.store_url.startswith("sqlite:///"):
            return False
        conn = sqlite3.connect(self.project.store_url[len("sqlite:///") :], timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()

    # ------------------------------------------------------------------ PostgreSQL killed under load

    def _kill_postgres(self) -> None:
        """``kill -9`` the postmaster while everything runs, wait a moment, start it again."""
        import os

        from harness.postgres import _as_owner, _run
        from harness.procs import pid_alive

        pid = self.pg.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        self.kills["postgres"] += 1
        t0 = time.monotonic()
        self._reset_store()
        down_until = t0 + self.rng.uniform(1.0, 3.0)
        while time.monotonic() < down_until or pid_alive(pid):
            self.supervise(kill=False)
            time.sleep(0.1)
        pg_ctl = str(self.pg.bin / "pg_ctl")
        for attempt in range(60):  # orphaned backends may hold the shared memory for a moment
            try:
                _run(_as_owner(pg_ctl, "-D", str(self.pg.data), "-l", str(self.pg.directory / "server.log"), "-w", "-t", "30", "start"))
                break
            except RuntimeError:
                if attempt == 59:
                    raise
                time.sleep(0.5)
        self.pg_outages.append(round(time.monotonic() - t0, 2))
        self.say(f"PostgreSQL killed (postmaster {pid}) and started again after {self.pg_outages[-1]} s")

    # ------------------------------------------------------------------ the end

    def drain(self, sender: Sender) -> None:
        """No more kills: let every run finish; resume by hand what no worker picks up (paused, interrupted)."""
        if self._stop is not None:
            self._stop["comp"].signal(signal.SIGCONT)
            self._stop["comp"].stopped = False
            self._stop = None
        sender.stop()
        deadline = time.monotonic() + self.plan.drain_timeout
        tried: set[str] = set()
        while time.monotonic() < deadline:
            self.supervise(kill=False, new_cli=False)
            active = self.read(lambda s: s.list_runs(states=ACTIVE, limit=500), None)
            if active is not None and not active and not any(c.kind == "cli" and c.alive() for c in self.comps.values()):
                return
            for run in active or []:
                if str(run.state) in ("paused", "interrupted") and run.id not in tried:
                    tried.add(run.id)
                    res = self.project.run("resume", run.id, "--json")
                    self.resumed_at_end[f"{run.state}->exit {res.returncode}"] += 1
            time.sleep(1.0)

    def fenced(self) -> int:
        """SIGSTOPped executors that said, after SIGCONT, that their run was taken over and they stopped writing."""
        n = 0
        for stop in self.sigstops:
            with open(stop.pop("log"), "rb") as f:
                f.seek(stop.pop("offset"))
                text = f.read().decode(errors="replace")
            stop["fenced"] = any(stop["run_id"] in line and "taken over" in line for line in text.splitlines())
            n += stop["fenced"]
        return n

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every component (SIGKILL after 30 s); their exit codes."""
        return {name: c.stop() for name, c in self.comps.items()}
