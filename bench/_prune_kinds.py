"""Every kind of run retention must tell apart, written into a journal as if weeks ago (for prune checks).

Used by ``bench/prune_bench.py`` (beside 100k generated runs) and ``tests/test_prune_cli.py`` (beside a few
thousand). The runs are made through the real store API under a shifted clock (:func:`clock`), so their ids,
times, events and decisions are exactly what the store writes, only older. :data:`KINDS` says, for
``runbook prune --older-than 30d --idempotency-window 35d --alert-window 1d``, which are kept and why.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ARGS", "KINDS", "check", "clock", "write_kinds"]

DAY = 86400.0
ARGS = ("--older-than", "30d", "--idempotency-window", "35d", "--alert-window", "1d")
KINDS: dict[str, bool] = {  # name → kept
    "old succeeded": False,
    "old failed": False,
    "old cancelled": False,
    "recent succeeded": True,
    "old queued": True,
    "old waiting": True,
    "old paused": True,
    "old interrupted": True,
    "old running": True,
    "old parent of an active child": True,
    "active child": True,
    "old parent of old children": False,
    "old child": False,
    "old grandchild": False,
    "parent finished recently": True,
    "old child of a recent parent": True,
    "old, key used 32 days ago": True,
    "old, key used 40 days ago": False,
    "old alert run, alert still firing": True,
    "old alert run, alert resolved": False,
    "old alert run, alert not seen for weeks": False,
}


@contextlib.contextmanager
def clock(days_ago: float) -> Iterator[None]:
    """``time.time()`` runs ``days_ago`` days behind inside the block (the store and run ids read it)."""
    real = time.time
    shift = days_ago * DAY
    time.time = lambda: real() - shift  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time = real  # type: ignore[assignment]


def write_kinds(path: Path) -> dict[str, str]:
    """Add one run of every kind in :data:`KINDS` to the journal at ``path``; returns ``{kind: run_id}``."""
    from runbook_sqlite.store import SQLiteStore

    from runner.alerts import NewDecision
    from runner.engine.runtime import new_run_id
    from runner.store.records import Holder, NewRun, RunState

    store = SQLiteStore(f"sqlite:///{path}")
    other = Holder(host="elsewhere", boot_id="b", pid=1, start_time=1, kind="worker")
    ids: dict[str, str] = {}

    def run(name: str, state: RunState | None = None, *, key: str | None = None, parent: str | None = None) -> str:
        new = NewRun(id=new_run_id(), runbook="kinds", params={}, started_by="bench", content_hash="h", step_hashes={"a": "1"},
                     spec={"name": "kinds"}, file="kinds.yaml", step_ids=["a"], idempotency_key=key, parent_run_id=parent,
                     parent_step_id="a" if parent else None)  # fmt: skip
        rid = store.create_run(new)[0].id
        if state is not None:
            finish(rid, state)
        ids[name] = rid
        return rid

    def finish(rid: str, state: RunState, release: bool = True) -> None:
        lease = store.acquire(rid, other, 30, force=True, is_alive=lambda _h: None)
        cols: dict[str, Any] = {"state": state}
        if state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED):
            cols["finished_at"] = time.time()
        store.commit(lease, run=cols)
        if release:
            store.release(lease)

    def decide(delivery: str, idx: int, decision: str, key: str, status: str, rid: str | None) -> None:
        store.begin_delivery(delivery, "alertmanager", "sha")
        store.record_decisions([NewDecision(delivery, idx, "alertmanager", decision, route="r", dedupe_key=key, status=status,
                                            run_id=rid)])  # fmt: skip
        store.finish_delivery(delivery, {})

    with clock(40):
        run("old succeeded", RunState.SUCCEEDED)
        run("old failed", RunState.FAILED)
        run("old cancelled", RunState.CANCELLED)
        run("old queued")
        run("old waiting", RunState.WAITING)
        run("old paused", RunState.PAUSED)
        run("old interrupted", RunState.INTERRUPTED)
        finish(run("old running"), RunState.RUNNING, release=False)
        run("active child", parent=run("old parent of an active child", RunState.SUCCEEDED))
        child = run("old child", RunState.SUCCEEDED, parent=run("old parent of old children", RunState.SUCCEEDED))
        run("old grandchild", RunState.FAILED, parent=child)
        recent_parent = run("parent finished recently")
        run("old child of a recent parent", RunState.SUCCEEDED, parent=recent_parent)
        run("old, key used 40 days ago", RunState.SUCCEEDED, key="api:k40")
        for name, key in (("old alert run, alert still firing", "k-fire"), ("old alert run, alert resolved", "k-res"),
                          ("old alert run, alert not seen for weeks", "k-old")):  # fmt: skip
            decide(f"d-{key}", 0, "started", key, "firing", run(name, RunState.SUCCEEDED))
        decide("d-none", 0, "no_route", "k-none", "firing", None)
    with clock(32):
        run("old, key used 32 days ago", RunState.SUCCEEDED, key="api:k32")
        decide("d-resolved", 0, "resolved", "k-res", "resolved", ids["old alert run, alert resolved"])
    with clock(0.05):  # an hour ago: Alertmanager re-sent the firing alert
        decide("d-again", 0, "deduped", "k-fire", "firing", ids["old alert run, alert still firing"])
    finish(recent_parent, RunState.SUCCEEDED)
    run("recent succeeded", RunState.SUCCEEDED)
    store.close()
    return ids


def check(path: Path, ids: dict[str, str]) -> list[str]:
    """What differs from :data:`KINDS` in the journal at ``path`` after the prune (empty: all as the rules say)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        present = {r[0] for r in conn.execute(f"SELECT id FROM runs WHERE id IN ({','.join('?' * len(ids))})", list(ids.values()))}
        orphans = conn.execute("SELECT COUNT(*) FROM events WHERE run_id NOT IN (SELECT id FROM runs)").fetchone()[0]
        orphans += conn.execute("SELECT COUNT(*) FROM steps WHERE run_id NOT IN (SELECT id FROM runs)").fetchone()[0]
        decisions = {r[0] for r in conn.execute("SELECT delivery_id FROM alert_decisions WHERE delivery_id LIKE 'd-%'")}
    problems = [f"{name}: {'kept' if rid in present else 'deleted'}, expected {'kept' if KINDS[name] else 'deleted'}"
                for name, rid in ids.items() if (rid in present) != KINDS[name]]  # fmt: skip
    if orphans:
        problems.append(f"{orphans} event or step rows of deleted runs are left")
    if decisions != {"d-k-fire", "d-again"}:
        problems.append(f"alert decisions left: {sorted(decisions)}, expected those of the firing alert only")
    return problems
