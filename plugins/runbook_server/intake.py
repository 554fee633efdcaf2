"""Alert intake: authenticate a delivery, normalise it, decide for each alert, record everything durably.

At-least-once: the delivery, each alert's decision and the run it starts (with an idempotency key derived
from the route, dedupe key and firing episode), and the delivery's ``done`` mark are written in one store
transaction (:meth:`Store.batch <runner.store.base.Store.batch>`) before the 2xx: all of it is durable, or
none. Any failure before that is a 5xx, so the sender retries; the retry finds the same runs and decisions
(nothing is doubled, also on a store that commits them one by one), and a retry of a finished delivery gets
the first answer back. Deliveries that arrive while another is being written share the next transaction
(:meth:`Store.grouped <runner.store.base.Store.grouped>`, group commit), each in a savepoint of its own.

Everything that needs no store (routing, dedupe keys, params rendered from the alert) is worked out before
the transaction, so the journal's writer is held only for the guard's reads and the writes. The storm guard
reads and writes under an in-process lock per route and dedupe key (per route when the route has a run
budget, which counts every key), so deliveries of unrelated alerts do not wait for each other. A delivery
that resolves alerts of a route with ``on_resolved: cancel`` is written call by call instead: cancelling a
run may wait for its processes to stop, which must not hold the journal's writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook_server.guard import judge
from runbook_server.routing import run_key
from runbook_server.runs import gate_config
from runner.alerts import NewDecision
from runner.authority import Principal
from runner.errors import ConflictError, LockHeld, ParamsError, StoreError, TemplateError, UsageError
from runner.store.records import RunRecord, RunState

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


@dataclass
class _Prepared:
    """One alert of a delivery, routed and rendered before the store is touched."""

    idx: int
    alert: Alert
    base: NewDecision
    route: CompiledRoute | None = None
    context: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    problem: str | None = None
    """Why the dedupe key or the params could not be rendered (recorded as ``invalid_params``)."""
    dedupe_failed: bool = False

    @property
    def guard(self) -> tuple[str, ...] | None:
        """The storm guard's lock: the route and dedupe key, or the whole route when it counts a budget."""
        if self.route is None or self.dedupe_failed:
            return None
        if self.route.spec.budget is not None:
            return (self.route.name,)
        return (self.route.name, self.base.dedupe_key or "")


class Intake:
    """Processes deliveries for one server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = state.store
        self._faults = int(os.environ.get(FAULT_ENV, "0") or 0)
        self._fault_lock = threading.Lock()
        self._guards: dict[tuple[str, ...], threading.Lock] = {}
        self._guards_lock = threading.Lock()
        self._counted = threading.local()

    def handle(self, enabled: EnabledSource, raw_body: bytes, headers: Mapping[str, str], body: Any) -> dict[str, Any]:
        """Process one authenticated delivery; returns the response document."""
        source = enabled.source
        alerts = source.normalize(body, headers)
        sha = hashlib.sha256(raw_body).hexdigest()
        sender_id = source.delivery_id(raw_body, headers, enabled.auth)
        delivery_id = f"{source.name}:{sender_id}" if sender_id else f"{source.name}:sha256:{sha[:40]}"
        prepared = [self._prepare(source.name, delivery_id, i, alert) for i, alert in enumerate(alerts)]
        cancels = any(p.route is not None and p.alert.status == "resolved" and p.route.spec.on_resolved == "cancel" for p in prepared)
        group = source.group_info(body)

        def record() -> tuple[dict[str, Any], list[tuple[str | None, str]]]:
            self._counted.decisions = []  # (on the thread that writes: a group's leader)
            return self._record_delivery(source.name, delivery_id, sender_id, sha, body, prepared, group), self._counted.decisions

        with self._guarded(prepared):
            result, counted = record() if cancels else self.store.grouped(record)
        for route, decision in counted:  # counted once the decisions are durable
            self.state.metrics.decision(route, decision)
        return result

    def _record_delivery(self, source: str, delivery_id: str, sender_id: str | None, sha: str, body: Any,
                         prepared: list[_Prepared], group: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        rec = self.store.begin_delivery(delivery_id, source, sha)
        if rec.body_sha256 != sha:
            raise DeliveryConflict(f"delivery id '{sender_id}' was already used for a different body")
        if rec.state == "done" and rec.result is not None:
            return {**rec.result, "duplicate": True}
        earlier = {d.idx: d for d in self.store.list_decisions(delivery_id=delivery_id, limit=100000)} if rec.seen > 1 else {}
        records = [earlier.get(p.idx) or self._decide(p) for p in prepared]
        truncated = int(group.get("truncated") or 0)
        if truncated:
            records += self._record([NewDecision(delivery_id, len(prepared), source, "truncated",
                                                 reason=f"{truncated} alert(s) of this group were left out by the sender (max_alerts)"
                                                        " and could not be routed")])  # fmt: skip
        self._maybe_fail()
        result = {"delivery_id": delivery_id, "source": source, "alerts": len(prepared), "truncated": truncated,
                  "decisions": [d.model_dump(mode="json") for d in records], "duplicate": False}  # fmt: skip
        self.store.finish_delivery(delivery_id, result)
        return result

    @contextlib.contextmanager
    def _guarded(self, prepared: list[_Prepared]) -> Iterator[None]:
        """Hold the storm guard's locks of every alert of the delivery (in a fixed order: no deadlock)."""
        keys = sorted({p.guard for p in prepared if p.guard is not None})
        with self._guards_lock:
            locks = [self._guards.setdefault(key, threading.Lock()) for key in keys]
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield

    def _maybe_fail(self) -> None:
        if not self._faults:
            return
        with self._fault_lock:
            if self._faults > 0:
                self._faults -= 1
                raise FaultInjected(f"test fault injection ({FAULT_ENV}): answering 503 before the delivery is marked done")

    # ------------------------------------------------------------------ one alert

    def _prepare(self, source: str, delivery_id: str, idx: int, alert: Alert) -> _Prepared:
        """Route the alert and render its dedupe key and params (no store access)."""
        dumped = alert.model_dump(mode="json")  # once: the decision, the templates and the run's trigger share it
        alert_json = {k: v for k, v in dumped.items() if k != "raw"}
        base = NewDecision(delivery_id, idx, source, "no_route", fingerprint=alert.fingerprint, status=alert.status, alert=alert_json,
                           reason="no route matches this alert")  # fmt: skip
        route = self.state.router.route(alert)
        if route is None:
            return _Prepared(idx, alert, base)
        base.route = route.name
        out = _Prepared(idx, alert, base, route, {"alert": dumped})
        renderer = self.state.api_engine.renderer
        try:
            base.dedupe_key = route.dedupe_key(renderer, out.context, alert)
        except TemplateError as exc:
            out.problem, out.dedupe_failed = f"dedupe: {exc}", True
            return out
        if alert.status != "resolved":
            try:
                out.params = route.params(renderer, out.context)
            except TemplateError as exc:
                out.problem = str(exc)
        return out

    def _decide(self, p: _Prepared) -> DecisionRecord:
        if p.route is None:
            return self._record([p.base])[0]
        if p.dedupe_failed:
            return self._record([_with(p.base, "invalid_params", reason=p.problem or "")])[0]
        if p.alert.status == "resolved":
            return self._resolved(p.route, p.base)
        return self._firing(p)

    def _firing(self, p: _Prepared) -> DecisionRecord:
        route, alert, base = p.route, p.alert, p.base
        assert route is not None
        key = base.dedupe_key or ""
        verdict = judge(self.store, route, key)
        if verdict.decision not in ("started", "breaker_open"):
            return self._record([_with(base, verdict.decision, reason=verdict.reason, run_id=verdict.run_id)])[0]
        if p.params is None:
            return self._record([_with(base, "invalid_params", reason=p.problem or "")])[0]
        try:
            run = self._start(route, alert, p.params, base, p.context["alert"], gated=verdict.reason if verdict.gated else None)
        except (ParamsError, TemplateError) as exc:
            return self._record([_with(base, "invalid_params", reason=str(exc))])[0]
        except LockHeld as exc:
            return self._record([_with(base, "locked", reason=str(exc), run_id=exc.run_id)])[0]
        trigger = run.trigger or {}
        if trigger.get("delivery") != base.delivery_id:
            if trigger.get("route") != route.name or run.runbook != route.spec.runbook:
                return self._record([_with(base, "conflict", run_id=run.id, reason=f"run {run.id} ({run.runbook}) holds this "
                                           f"alert's run key but was not started by route '{route.name}'; no run started")])[0]  # fmt: skip
            return self._record([_with(base, "deduped", reason=f"this alert episode already has run {run.id} ({run.state})",
                                       run_id=run.id)])[0]  # fmt: skip
        return self._record([_with(base, verdict.decision, reason=verdict.reason or f"started run {run.id}", run_id=run.id)])[0]

    def _start(self, route: CompiledRoute, alert: Alert, params: dict[str, Any], base: NewDecision, dumped: dict[str, Any], *,
               gated: str | None) -> RunRecord:  # fmt: skip
        engine = self.state.api_engine
        trigger = {"source": alert.source, "alert": dumped, "route": route.name, "delivery": base.delivery_id}
        gates = None
        if gated:
            steps = engine.catalog.get(route.spec.runbook).spec.steps
            gates = {sid: gate_config(f"route '{route.name}': {gated}") for sid in steps.ids}
        run, _ = engine.create(
            route.spec.runbook,
            params,
            started_by=f"alert:{alert.source}/{route.name}",
            idempotency_key=self._run_key(route, base.dedupe_key or "", alert),
            trigger=trigger,
            run_options={"gates": gates} if gates else None,
            principal=Principal("route", f"{alert.source}/{route.name}"),
        )  # the record: no view is built
        return run

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
        self._counted.decisions.extend((d.route, d.decision) for d in out)
        return out


def _with(base: NewDecision, decision: str, *, reason: str, run_id: str | None = None) -> NewDecision:
    from dataclasses import replace

    return replace(base, decision=decision, reason=reason, run_id=run_id)
