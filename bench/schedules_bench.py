"""Benchmark the scheduler: what firing a slot costs, what an idle wake-up costs, and two schedulers racing.

Reproduce (from the repository, with the venv that has runbook installed)::

    python bench/schedules_bench.py                         # SQLite journal in a temporary directory
    python bench/schedules_bench.py --store postgresql://... # an empty PostgreSQL database
    python bench/schedules_bench.py --slots 500 --racers 2

In process, with the real engine and store and a clock the benchmark sets: a per-minute schedule, each
tick one minute later. Reported (milliseconds unless named otherwise):

- ``fire_ms``: p50/p99 of one scheduler's tick that fires one slot (decision check, storm guard, the run
  created queued, the decision recorded);
- ``race_ms``: the same with ``--racers`` schedulers (each with its own store connection) ticking at once for
  every slot, and ``runs``/``slots`` (must be equal: one run per slot);
- ``idle_us``: p50 of a tick with nothing due (what a scheduler does at a wake-up that finds nothing);
- ``startup_scan_ms``: a first tick's look for missed slots of a per-minute schedule (a day of slots).

Prints one JSON document. Nothing is asserted: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RUNBOOK = "name: noop\nparams:\n  slot: {type: string}\nsteps:\n  - id: act\n    shell: ['true']\n"
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


class _Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t

    def sleep_until(self, when: float, stop: threading.Event) -> None:
        stop.wait(0)


def _world(root: Path, url: str | None) -> tuple[Any, Any, Any, Any]:
    from runbook_server.config import ServerConfig

    from runner.catalog import Catalog, search_path
    from runner.plugin import PluginHost
    from runner.settings import Settings

    (root / "runbooks").mkdir()
    (root / "runbooks" / "noop.yaml").write_text(RUNBOOK, encoding="utf-8")
    host = PluginHost()
    settings = Settings(paths=[str(root / "runbooks")], store_url=url or f"sqlite:///{root / 'journal.db'}", project_dir=root)
    catalog = Catalog.load(host.step_types, search_path(settings.paths))
    spec = {
        "name": "bench",
        "runbook": "noop",
        "cron": "* * * * *",
        "params": {"slot": "{{ schedule.slot }}"},
        "overlap": "allow",
        "grace": 30,
    }
    return host, settings, catalog, ServerConfig.model_validate({"schedules": [spec]})


def _scheduler(host: Any, settings: Any, catalog: Any, config: Any, clock: _Clock) -> Any:
    from runbook_server.scheduler import Scheduler
    from runbook_server.schedules import compile_schedules

    from runner.engine import Engine

    store = host.stores.open(settings.resolved_store_url())
    return Scheduler(compile_schedules(config), Engine(host, store, catalog, settings, holder_kind="scheduler"), clock)


def _pcts(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 3), "p99": round(values[int(len(values) * 0.99) - 1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="journal URL (default: SQLite in a temporary directory)")
    parser.add_argument("--slots", type=int, default=300)
    parser.add_argument("--racers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        host, settings, catalog, config = _world(Path(tmp), args.store)
        clock = _Clock()
        one = _scheduler(host, settings, catalog, config, clock)
        t = time.perf_counter()
        one.tick(T0 - 29)  # nothing due: the last slot is past its grace
        startup = (time.perf_counter() - t) * 1000
        fire, idle = [], []
        for i in range(args.slots):
            t = time.perf_counter()
            one.tick(T0 + i * 60)
            fire.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            one.tick(T0 + i * 60 + 30)
            idle.append((time.perf_counter() - t) * 1e6)
        racers = [_scheduler(host, settings, catalog, config, clock) for _ in range(args.racers)]
        base = T0 + args.slots * 60
        race: list[float] = []
        barrier = threading.Barrier(args.racers)

        def go(s: Any) -> None:
            for i in range(args.slots):
                barrier.wait()
                t = time.perf_counter()
                s.tick(base + i * 60)
                race.append((time.perf_counter() - t) * 1000)

        threads = [threading.Thread(target=go, args=(s,)) for s in racers]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        runs = one.store.list_runs(runbook="noop", limit=100000)
        print(json.dumps({
            "store": settings.resolved_store_url().split("://")[0], "python": platform.python_version(), "slots": 2 * args.slots,
            "runs": len(runs), "distinct_keys": len({r.idempotency_key for r in runs}), "fire_ms": _pcts(fire),
            "race_ms": _pcts(race), "racers": args.racers, "idle_us": round(statistics.median(idle), 1),
            "startup_scan_ms": round(startup, 2),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
