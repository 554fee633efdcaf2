"""Alert intake: authenticate a delivery, normalise it, decide for each alert, record everything durably.

At-least-once: a delivery is recorded (``processing``) before anything else, each alert's run is created
with an idempotency key derived from the route, dedupe key and firing episode, and each decision is
recorded right after; only then is the delivery marked ``done`` and a 2xx returned. Any failure before
that is a 5xx, so the sender retries; the retry finds the same runs and decisions (nothing is doubled),
and a retry of a finished delivery gets the first answer back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runbook_server.guard import judge
from runbook_server.routing import run_key
from runbook_server.runs import gate_config, start_queued
from runner.alerts import NewDecision
from runner.errors import ConflictError, LockHeld, ParamsError, RunbookError, StoreError, TemplateError, UsageError
from runner.store.records import RunState

if TYPE_CHECKING:
    from runbook_server.routing import CompiledRoute
    from runbook_server.state import EnabledSource, ServerState
    from runner.alerts import Alert, DecisionRecord

__all__ = ["DeliveryConflict", "FaultInjected", "Intake"]

log = logging.getLogger("runbook.server")

FAULT_ENV = "RUNBOOK_TEST_FAIL_DELIVERIES"
"""TEST-ONLY fault injection: the first N deliveries are processed, then answered 503 before they are marked
done (as if the process died there). Used by the test suite to prove retries create nothing twice."""

_CANCELLABLE = {str(RunState.QUEUED), str(RunState.WAITING), str(RunState.PAUSED), str(RunState.INTERRUPTED)}


class FaultInjected(StoreError):
    """The test-only fault injection fired (answered 503)."""


class DeliveryConflict(ConflictError):
    """A delivery id was reused with a different body."""


class Intake:
    """Processes deliveries for one server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = state.store
        self._faults = int(os.environ.get(FAULT_ENV, "0") or 0)
        self._fault_lock = threading.Lock()

    def handle(self, enabled: EnabledSource, raw_body: bytes, headers: Mapping[str, str], body: Any) -> dict[str, Any]:
        """Process one authenticated delivery; returns the response document."""
        source = enabled.source
        alerts = source.normalize(body, headers)
        sha = hashlib.sha256(raw_body).hexdigest()
        sender_id = source.delivery_id(raw_body, headers, enabled.auth)
        delivery_id = f"{source.name}:{sender_id}" if sender_id else f"{source.name}:sha256:{sha[:40]}"
        rec = self.store.begin_delivery(delivery_id, source.name, sha)
        if rec.body_sha256 != sha:
            raise DeliveryConflict(f"delivery id '{sender_id}' was already used for a different body")
        if rec.state == "done" and rec.result is not None:
            return {**rec.result, "duplicate": True}
        earlier = {d.idx: d for d in self.store.list_decisions(delivery_id=delivery_id, limit=100000)} if rec.seen > 1 else {}
        records = [earlier.get(i) or self._decide(source.name, delivery_id, i, alert) for i, alert in enumerate(alerts)]
        truncated = int(source.group_info(body).get("truncated") or 0)
        if truncated:
            records += self._record([NewDecision(delivery_id, len(alerts), source.name, "truncated",
                                                 reason=f"{truncated} alert(s) of this group were left out by the sender (max_alerts)"
                                                        " and could not be routed")])  # fmt: skip
        self._maybe_fail()
        result = {"delivery_id": delivery_id, "source": source.name, "alerts": len(alerts), "truncated": truncated,
                  "decisions": [d.model_dump(mode="json") for d in records], "duplicate": False}  # fmt: skip
        self.store.finish_delivery(delivery_id, result)
        return result

    def _maybe_fail(self) -> None:
        if not self._faults:
            return
        with self._fault_lock:
            if self._faults > 0:
                self._faults -= 1
                raise FaultInjected(f"test fault injection ({FAULT_ENV}): answering 503 before the delivery is marked done")

    # ------------------------------------------------------------------ one alert

    def _decide(self, source: str, delivery_id: str, idx: int, alert: Alert) -> DecisionRecord:
        alert_json = alert.model_dump(mode="json", exclude={"raw"})
        base = NewDecision(delivery_id, idx, source, "no_route", fingerprint=alert.fingerprint, status=alert.status, alert=alert_json,
                           reason="no route matches this alert")  # fmt: skip
        route = self.state.router.route(alert)
        if route is None:
            return self._record([base])[0]
        base.route = route.name
        context = {"alert": alert.model_dump(mode="json")}
        try:
            base.dedupe_key = route.dedupe_key(self.state.api_engine.renderer, context, alert)
        except TemplateError as exc:
            return self._record([_with(base, "invalid_params", reason=f"dedupe: {exc}")])[0]
        lock = self.state.route_locks.setdefault(route.name, threading.Lock())
        with lock:
            if alert.status == "resolved":
                return self._resolved(route, base)
            return self._firing(route, alert, context, base)

    def _firing(self, route: CompiledRoute, alert: Alert, context: dict[str, Any], base: NewDecision) -> DecisionRecord:
        key = base.dedupe_key or ""
        verdict = judge(self.store, route, key)
        if verdict.decision not in ("started", "breaker_open"):
            return self._record([_with(base, verdict.decision, reason=verdict.reason, run_id=verdict.run_id)])[0]
        try:
            params = route.params(self.state.api_engine.renderer, context)
            view = self._start(route, alert, params, base, gated=verdict.reason if verdict.gated else None)
        except (ParamsError, TemplateError) as exc:
            return self._record([_with(base, "invalid_params", reason=str(exc))])[0]
        except LockHeld as exc:
            return self._record([_with(base, "locked", reason=str(exc), run_id=exc.run_id)])[0]
        trigger = view.trigger or {}
        if trigger.get("delivery") != base.delivery_id:
            if trigger.get("route") != route.name or view.runbook != route.spec.runbook:
                return self._record([_with(base, "conflict", run_id=view.run_id, reason=f"run {view.run_id} ({view.runbook}) holds this "
                                           f"alert's run key but was not started by route '{route.name}'; no run started")])[0]  # fmt: skip
            return self._record([_with(base, "deduped", reason=f"this alert episode already has run {view.run_id} ({view.state})",
                                       run_id=view.run_id)])[0]  # fmt: skip
        self.state.wake_workers()
        return self._record([_with(base, verdict.decision, reason=verdict.reason or f"started run {view.run_id}", run_id=view.run_id)])[0]

    def _start(self, route: CompiledRoute, alert: Alert, params: dict[str, Any], base: NewDecision, *, gated: str | None) -> Any:
        engine = self.state.api_engine
        trigger = {"source": alert.source, "alert": alert.model_dump(mode="json"), "route": route.name, "delivery": base.delivery_id}
        gates = None
        if gated:
            steps = engine.catalog.get(route.spec.runbook).spec.steps
            gates = {s.id: gate_config(f"route '{route.name}': {gated}") for s in steps}
        return start_queued(engine, route.spec.runbook, params, started_by=f"alert:{alert.source}/{route.name}",
                            idempotency_key=self._run_key(route, base.dedupe_key or "", alert), trigger=trigger, gates=gates)  # fmt: skip

    def _run_key(self, route: CompiledRoute, key: str, alert: Alert) -> str:
        """The run's idempotency key: the alert episode's, else "the firing after the key's last run".

        Deterministic for every delivery (and every server process) that sees the same store, so a retried
        delivery and an HA duplicate find the run the first one created. An alert without an episode binds
        to a run only while it is the newest run for the dedupe key: the guard refused firings while that run
        was active or cooling down, so the next firing after it gets a new key and a new run.
        """
        episode = alert.episode()
        if episode is None:
            last = self.store.route_runs(route.name, dedupe_key=key, limit=1)
            episode = f"\x00after:{last[0].run_id if last else '-'}"  # never equal to an episode (those hold '@')
        return run_key(route.name, key, episode)

    def _resolved(self, route: CompiledRoute, base: NewDecision) -> DecisionRecord:
        if route.spec.on_resolved == "ignore":
            return self._record([_with(base, "resolved_ignored", reason="route has on_resolved: ignore")])[0]
        active = self.store.route_runs(route.name, dedupe_key=base.dedupe_key, active_only=True)
        cancelled, left = [], []
        for run in active:
            if run.state not in _CANCELLABLE:
                left.append(f"{run.run_id} ({run.state})")
                continue
            try:
                with self.state.control_lock:
                    self.state.api_engine.cancel(run.run_id, actor=f"alert:{base.source}/{route.name}", reason="alert resolved")
                cancelled.append(run.run_id)
            except (ConflictError, UsageError) as exc:
                left.append(f"{run.run_id} ({exc})")
        if cancelled:
            reason = f"cancelled {', '.join(cancelled)}" + (f"; left running: {', '.join(left)}" if left else "")
            return self._record([_with(base, "resolved_cancelled", reason=reason, run_id=cancelled[0])])[0]
        reason = f"no queued, waiting or paused run to cancel{'; running: ' + ', '.join(left) if left else ''}"
        return self._record([_with(base, "resolved", reason=reason)])[0]

    def _record(self, decisions: list[NewDecision]) -> list[DecisionRecord]:
        out = self.store.record_decisions(decisions)
        for d in out:
            self.state.metrics.decision(d.route, d.decision)
        return out


def _with(base: NewDecision, decision: str, *, reason: str, run_id: str | None = None) -> NewDecision:
    from dataclasses import replace

    return replace(base, decision=decision, reason=reason, run_id=run_id)


def is_retryable(exc: BaseException) -> bool:
    """Errors after which the sender should retry (5xx): the store, or anything unexpected."""
    return isinstance(exc, StoreError) or not isinstance(exc, RunbookError)
