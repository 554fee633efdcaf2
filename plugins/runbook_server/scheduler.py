"""The scheduler: one thread per process that starts each schedule's runbook once per slot.

It sleeps until the next fire time (a slot plus its jitter) and then, for each slot due:

1. if the journal already has a decision for the slot (another scheduler fired it), nothing;
2. the storm guard judges it like an alert route (:func:`runbook_server.guard.judge`: ``overlap: skip`` →
   ``deduped`` while the schedule's last run is active; ``budget`` → ``over_budget``; ``breaker`` → the run
   waits for approval at every step; ``approval: required`` likewise);
3. the run is created queued, with the slot's idempotency key, by principal ``schedule:<name>`` — a
   second scheduler (or this one after a crash) gets the same run back, never a second one; a held
   ``lock`` → ``locked``; params that fail → ``invalid_params``;
4. the decision is recorded with the slot as its key (the first recorded decision for a slot stands).

A crash between 3 and 4 leaves a queued run without a decision: the next scheduler to look (any process,
within ``grace``) gets the same run back and records it. Slots missed while no scheduler ran are found at
start-up (and after a stall longer than ``grace``) from the newest decided slot: ``misfire: skip`` records
one ``missed`` decision for the latest of them; ``run_once`` runs the latest of them once when it is at
most ``catch_up`` old.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from runbook_server.guard import judge
from runbook_server.runs import gate_config, start_queued
from runbook_server.schedules import SOURCE, at, from_utc_iso, utc_iso
from runner.alerts import NewDecision
from runner.authority import Principal
from runner.errors import LockHeld, RunbookError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from runbook_server.clock import Clock
    from runbook_server.config import ServerConfig
    from runbook_server.schedules import CompiledSchedule
    from runner.alerts import DecisionRecord
    from runner.engine import Engine, RunView

__all__ = ["CRASH_ENV", "Scheduler", "build_scheduler"]

log = logging.getLogger("runbook.scheduler")

CRASH_ENV = "RUNBOOK_TEST_SCHEDULER_CRASH"
"""TEST-ONLY fault injection: ``after_start`` makes the process kill itself (SIGKILL) right after a slot's run
was created and before its decision is recorded — the worst moment for a scheduler to die."""

_LOOKBACK = 86400.0  # missed slots are looked for this far back at least (run_once: catch_up, if longer)
_RETRY = 1.0  # after a failed tick (the store did not answer), try again this soon
_AHEAD = 1000  # slots examined to find the next fire time


class Scheduler:
    """Fires the enabled ``schedules`` on ``engine``'s store; :meth:`start` runs it on a thread until ``stop`` is set."""

    def __init__(self, schedules: list[CompiledSchedule], engine: Engine, clock: Clock, *,
                 on_decision: Callable[[DecisionRecord], None] | None = None, on_started: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.all = schedules
        self.schedules = [s for s in schedules if s.spec.enabled]
        self.engine, self.store, self.clock = engine, engine.store, clock
        self.on_decision, self.on_started = on_decision, on_started
        self._decided: dict[str, float] = {}  # slot key → slot time: slots known to have a decision
        self._unrecorded: dict[str, NewDecision] = {}  # runs started whose decision could not be recorded yet
        self._planned: float | None = None  # when the previous tick said the next one is due (None: no tick yet)
        self._thread: threading.Thread | None = None
        self._crash = os.environ.get(CRASH_ENV) == "after_start"

    # ------------------------------------------------------------------ the thread

    def start(self, stop: threading.Event) -> None:
        """Run :meth:`run` on a daemon thread."""
        self._thread = threading.Thread(target=self.run, args=(stop,), name="runbook-scheduler", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after ``stop`` was set)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self, stop: threading.Event) -> None:
        """Tick at every fire time until ``stop`` is set; a failed tick is logged and tried again shortly."""
        while not stop.is_set():
            now = self.clock.now()
            try:
                wake = self.tick(now)
            except Exception as exc:  # the store is unreachable, or a bug: keep the loop alive, say why
                unexpected = not isinstance(exc, RunbookError)
                log.warning("scheduler: %s: %s; trying again in %.0fs", type(exc).__name__, exc, _RETRY, exc_info=unexpected)
                wake = self.clock.now() + _RETRY
            self.clock.sleep_until(wake, stop)

    # ------------------------------------------------------------------ one tick

    def tick(self, now: float) -> float:
        """Fire every slot due at ``now`` (and handle missed ones); returns when the next one is due."""
        for slot_key in list(self._unrecorded):
            self._record(self._unrecorded[slot_key])
        late = None if self._planned is None else now - self._planned  # > grace: the thread stalled (a suspended VM)
        for cs in self.schedules:
            if late is None or late > cs.spec.grace:
                self._misfire(cs, now)
            for slot in self._on_time(cs, now):
                self._fire(cs, slot)
        horizon = now - max((cs.spec.jitter + cs.spec.grace for cs in self.schedules), default=0.0)
        self._decided = {k: t for k, t in self._decided.items() if t >= horizon}  # older ones are past their grace anyway
        self._planned = self.next_wake(now)
        return self._planned

    def next_wake(self, now: float) -> float:
        """The earliest fire time after ``now`` of any schedule (at most a minute ahead; sooner while a decision waits)."""
        best = now + (_RETRY if self._unrecorded else 60.0)
        for cs in self.schedules:
            t = at(now - cs.spec.jitter)
            for _ in range(_AHEAD):
                slot = cs.slots.next_after(t)
                if slot is None or slot.timestamp() > best:
                    break
                fire = cs.fire_at(slot)
                if fire > now:
                    best = min(best, fire)
                t = slot
        return best

    def _on_time(self, cs: CompiledSchedule, now: float) -> list[datetime]:
        """Slots whose fire time is in ``(now - grace, now]``."""
        grace = cs.spec.grace
        slots = cs.slots.between(at(now - cs.spec.jitter - grace), at(now), limit=_AHEAD)
        return [s for s in slots if now - grace < cs.fire_at(s) <= now and cs.key(s) not in self._decided]

    def _misfire(self, cs: CompiledSchedule, now: float) -> None:
        """Slots past their grace since the newest decided one: runs a dead scheduler created are recorded, and the
        latest slot is ``missed`` or (``run_once``) run once. A schedule never decided before has missed nothing."""
        rows = self.store.list_decisions(route=cs.route, source=SOURCE, limit=1)
        last = from_utc_iso(rows[0].fingerprint) if rows and rows[0].fingerprint else None
        spec = cs.spec
        lookback = max(spec.catch_up if spec.misfire == "run_once" else 0.0, _LOOKBACK) + spec.jitter + spec.grace
        since = max(last, at(now - lookback)) if last is not None else at(now - lookback)
        missed = [s for s in cs.slots.between(since, at(now - spec.grace)) if cs.fire_at(s) <= now - spec.grace]
        if not missed:
            return
        orphans = self._recover(cs, missed)
        latest = missed[-1]
        if last is None or latest in orphans or self._has_decision(cs, latest):
            return
        count = f"{'at least ' if since > last else ''}{len(missed)} slot(s)"
        what = f"{count} from {cs.local(missed[0])} to {cs.local(latest)} passed while no scheduler was running"
        if spec.misfire == "run_once" and now - latest.timestamp() <= spec.catch_up:
            self._fire(cs, latest, catch_up=f"{what}; misfire: run_once runs the latest once")
            return
        why = "misfire: skip" if spec.misfire == "skip" else f"older than catch_up ({spec.catch_up:g}s)"
        self._record(self._base(cs, latest, "missed", f"{what}; not run ({why})"))

    def _recover(self, cs: CompiledSchedule, missed: list[datetime]) -> set[datetime]:
        """Record the runs a scheduler created for ``missed`` slots before it died unrecorded (among the runbook's newest runs)."""
        keys = {cs.key(s): s for s in missed}
        found = set()
        for run in self.store.list_runs(runbook=cs.spec.runbook, limit=50):
            slot = keys.get(run.idempotency_key or "")
            if slot is not None and not self._has_decision(cs, slot):
                self._record(self._base(cs, slot, "started", f"run {run.id} was created for this slot by a scheduler that stopped "
                                                             "before recording it", run_id=run.id))  # fmt: skip
                found.add(slot)
        return found

    # ------------------------------------------------------------------ one slot

    def _fire(self, cs: CompiledSchedule, slot: datetime, *, catch_up: str | None = None) -> None:
        if self._has_decision(cs, slot):
            return
        key = cs.dedupe_key(slot)
        verdict = judge(self.store, cs.guard, key)
        if verdict.decision not in ("started", "breaker_open"):
            self._record(self._base(cs, slot, verdict.decision, verdict.reason, run_id=verdict.run_id))
            return
        try:
            view = self._start(cs, slot, gated=verdict.reason if verdict.gated else None, catch_up=catch_up is not None)
        except LockHeld as exc:
            self._record(self._base(cs, slot, "locked", str(exc), run_id=exc.run_id))
            return
        except UsageError as exc:  # params that do not render or fit, a runbook gone from the catalog
            self._record(self._base(cs, slot, "invalid_params", str(exc)))
            return
        if self._crash:
            os.kill(os.getpid(), signal.SIGKILL)  # TEST-ONLY (CRASH_ENV): die before the decision is recorded
        if (view.trigger or {}).get("delivery") != cs.key(slot):
            self._record(self._base(cs, slot, "conflict", f"run {view.run_id} ({view.runbook}) holds this slot's run key but was not "
                                                          f"started by schedule '{cs.name}'; no run started", run_id=view.run_id))  # fmt: skip
            return
        reason = catch_up or verdict.reason or f"started run {view.run_id}"
        self._record(self._base(cs, slot, verdict.decision, reason, run_id=view.run_id))
        if self.on_started is not None:
            self.on_started()

    def _start(self, cs: CompiledSchedule, slot: datetime, *, gated: str | None, catch_up: bool) -> RunView:
        gates = None
        if gated:
            steps = self.engine.catalog.get(cs.spec.runbook).spec.steps
            gates = {sid: gate_config(f"schedule '{cs.name}': {gated}") for sid in steps.ids}
        params = cs.params(self.engine.renderer, slot)
        return start_queued(self.engine, cs.spec.runbook, params, started_by=cs.route, idempotency_key=cs.key(slot),
                            trigger=cs.trigger(slot, catch_up=catch_up), gates=gates, principal=Principal(SOURCE, cs.name))  # fmt: skip

    def _has_decision(self, cs: CompiledSchedule, slot: datetime) -> bool:
        key = cs.key(slot)
        if key in self._decided or key in self._unrecorded:
            return True
        if self.store.list_decisions(delivery_id=key, limit=1):
            self._decided[key] = slot.timestamp()
            return True
        return False

    def _base(self, cs: CompiledSchedule, slot: datetime, decision: str, reason: str, *, run_id: str | None = None) -> NewDecision:
        return NewDecision(cs.key(slot), 0, SOURCE, decision, route=cs.route, fingerprint=utc_iso(slot), dedupe_key=cs.dedupe_key(slot),
                           run_id=run_id, reason=reason)  # fmt: skip

    def _record(self, decision: NewDecision) -> None:
        """Record ``decision``; one that fails is kept and recorded again on the next tick (its run exists)."""
        self._unrecorded[decision.delivery_id] = decision
        (row,) = self.store.record_decisions([decision])
        del self._unrecorded[decision.delivery_id]
        self._decided[decision.delivery_id] = from_utc_iso(decision.fingerprint or "").timestamp()
        if row.decision != decision.decision or row.run_id != decision.run_id:
            log.info("schedule %s, slot %s: already decided by another scheduler: %s", decision.route, decision.fingerprint, row.decision)
            return
        if self.on_decision is not None:
            self.on_decision(row)
        log.info("schedule %s, slot %s: %s (%s)", decision.route, decision.fingerprint, row.decision, row.reason)


def build_scheduler(config: ServerConfig, engine: Engine, *, on_decision: Callable[[DecisionRecord], None] | None = None,
                    on_started: Callable[[], None] | None = None) -> Scheduler | None:  # fmt: skip
    """The scheduler for the config's schedules (checked against ``engine``'s catalog), or None without schedules."""
    from runbook_server.clock import clock_from_env
    from runbook_server.schedules import check_schedules

    if not config.schedules:
        return None
    clock = clock_from_env()
    compiled = check_schedules(config, engine.catalog, engine.renderer, clock.now())
    return Scheduler(compiled, engine, clock, on_decision=on_decision, on_started=on_started)
