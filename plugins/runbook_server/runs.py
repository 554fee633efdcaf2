"""Run operations the server needs beyond :class:`runner.engine.Engine`: gated starts, re-queueing, parking.

All of them go through the public store API (leases, fenced commits), exactly as the engine does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from runner.engine.holder import is_alive
from runner.store.records import NewEvent, RunState

if TYPE_CHECKING:
    from runner.authority import Principal
    from runner.engine import Engine, RunView
    from runner.store.records import RunRecord

__all__ = ["drive_request", "gate_config", "park", "requeue", "start_queued"]

_DRIVES = ("run.started", "run.resumed")


def gate_config(reason: str) -> dict[str, Any]:
    """The approval each gated step waits for (an ``approval`` step config)."""
    return {"message": f"{reason}: approve this step before it acts?", "approvers": 1, "expires": None}


def start_queued(engine: Engine, name: str, params: dict[str, Any], *, started_by: str, idempotency_key: str | None,
                 trigger: dict[str, Any] | None, gates: dict[str, dict[str, Any]] | None = None,
                 principal: Principal | None = None) -> RunView:  # fmt: skip
    """Create a queued run for the workers (or return the run of a repeated ``idempotency_key``).

    With ``gates`` (step id → approval config) the run carries durable approval gates: each named step waits
    for a human approval before it acts. ``principal``: who starts it (default: the engine's).
    """
    return engine.start(name, params, started_by=started_by, idempotency_key=idempotency_key, trigger=trigger, execute=False,
                        run_options={"gates": gates} if gates else None, principal=principal)  # fmt: skip


def _settle(engine: Engine, run_id: str, event: str, cols: dict[str, Any], *, actor: str, reason: str) -> None:
    lease = engine.store.acquire(run_id, engine.holder, engine.lease_ttl, force=False, is_alive=is_alive)
    try:
        engine.store.commit(lease, events=[NewEvent(event, actor=actor, data={"reason": reason})], run={**cols, "reason": reason})
    finally:
        engine.store.release(lease)


def requeue(engine: Engine, run_id: str, *, actor: str, reason: str) -> None:
    """Put an idle run back in the queue so a worker drives it (LeaseHeld if an executor holds it)."""
    _settle(engine, run_id, "run.queued", {"state": RunState.QUEUED, "wake_at": time.time(), "pause_requested": False},
            actor=actor, reason=reason)  # fmt: skip


def park(engine: Engine, run_id: str, why: str) -> None:
    """Leave a run a worker cannot drive ``paused`` with the reason, so it is not claimed again in a loop."""
    _settle(engine, run_id, "run.paused", {"state": RunState.PAUSED, "wake_at": None}, actor="worker",
            reason=f"a worker could not drive this run: {why}")  # fmt: skip


def drive_request(engine: Engine, run_id: str, run: RunRecord | None = None) -> dict[str, Any]:
    """What the next drive should do: a pending ``resume`` request's options, else the first drive's from the trigger.

    ``run``: the run's record when the caller has it (a worker just claimed it); read otherwise. One journal read.
    """
    store = engine.store
    events = store.events(run_id, types=("request.resume", *_DRIVES), limit=100000)
    last = next((e for e in reversed(events) if e.type == "request.resume"), None)
    if last is not None and not any(e.seq > last.seq and e.type in _DRIVES for e in events):
        return {**last.data, "actor": last.actor}
    if not any(e.type == "run.started" for e in events):
        run = run or store.get_run(run_id)
        trigger = run.trigger or {}
        return {"budget": trigger.get("budget"), "max_steps": trigger.get("max_steps"), "actor": run.started_by}
    return {}
