"""Background retention of ``runbook serve``: the ``retention:`` setting, a pass every ``every``, in small batches.

Each pass calls :meth:`Store.prune <runner.store.base.Store.prune>` with the rules of ``runbook prune``
(:mod:`runner.store.retention`), ``batch`` runs per transaction and a rest of ``pause`` between batches, so
intake and workers keep the journal's writer most of the time. Freed space goes back to the file system only
where that needs no rewrite of the whole file (SQLite: an incremental vacuum; a journal created before
incremental vacuum needs one ``runbook prune`` from the command line first, which the log says). A server
that is stopping ends the pass between two batches.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from runner.errors import Problem, RunbookError, ValidationError

if TYPE_CHECKING:
    from runbook_server.config import RetentionSpec, ServerConfig
    from runbook_server.state import ServerState
    from runner.store.base import Store
    from runner.store.retention import PruneReport

__all__ = ["check_retention", "start_retention"]

log = logging.getLogger("runbook.retention")
FIRST_PASS = 30.0
"""Seconds after start-up before the first pass (start-up and the first deliveries go first)."""


def check_retention(config: ServerConfig) -> None:
    """Refuse an ``older_than`` shorter than a route's cooldown, budget or breaker window: the storm guard counts
    the runs a route started within those, so they must outlive them."""
    spec = config.retention
    if spec is None:
        return
    problems: list[Problem] = []
    for route in config.routes:
        windows = {"cooldown": route.cooldown, "budget.per": route.budget.per if route.budget else 0.0,
                   "breaker.within": route.breaker.within if route.breaker else 0.0}  # fmt: skip
        name, longest = max(windows.items(), key=lambda item: item[1])
        if longest > spec.older_than:
            problems.append(config.problem(("retention", "older_than"), f"{spec.older_than:g}s is shorter than route '{route.name}'s "
                                           f"{name} ({longest:g}s): the storm guard still counts those runs", value=True))  # fmt: skip
    if problems:
        raise ValidationError(problems)


def _pass(store: Store, spec: RetentionSpec, stopping: threading.Event) -> PruneReport:
    from runner.store.records import RunState
    from runner.store.retention import PruneRules

    rules = PruneRules(older_than=spec.older_than, states=frozenset(RunState(s) for s in spec.states), keep_last=spec.keep_last,
                       idempotency_window=spec.idempotency_window, alert_window=spec.alert_window,
                       notification_window=spec.notification_window)  # fmt: skip
    t0 = time.monotonic()
    report = store.prune(rules, batch=spec.batch, should_stop=lambda: stopping.wait(spec.pause), vacuum="incremental")
    if report.runs or report.decisions or report.deliveries:
        log.info("retention: deleted %d run(s), %d decision(s), %d delivery(ies) in %.1fs%s", report.runs, report.decisions,
                 report.deliveries, time.monotonic() - t0, " (stopped early)" if report.stopped else "")  # fmt: skip
    return report


def _loop(store: Store, spec: RetentionSpec, stopping: threading.Event) -> None:
    delay, warned = min(FIRST_PASS, spec.every), False
    while not stopping.wait(delay):
        try:
            report = _pass(store, spec, stopping)
        except (RunbookError, Exception) as exc:  # a failed pass is retried at the next one; the server goes on
            log.warning("retention: pass failed: %s: %s", type(exc).__name__, exc)
        else:
            if report.vacuum == "unavailable" and report.runs and not warned:
                log.warning("retention: this journal keeps freed space for reuse; run `runbook prune --older-than %gs` once to let it "
                            "shrink (a one-time VACUUM that rewrites the file)", spec.older_than)  # fmt: skip
                warned = True
        delay = spec.every


def start_retention(state: ServerState) -> threading.Thread | None:
    """Start the background thread if the configuration has ``retention:`` (it ends when the server stops)."""
    spec = state.config.retention
    if spec is None:
        return None
    thread = threading.Thread(target=_loop, args=(state.store, spec, state.shutdown), name="runbook-retention", daemon=True)
    thread.start()
    return thread
