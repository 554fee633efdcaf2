"""The storm guard: what a route may do with one more firing alert.

In order: an active run for the same dedupe key → ``deduped``; a run for the key started within
``cooldown`` → ``cooled_down``; ``budget.runs`` runs started in the last ``budget.per`` → ``over_budget``;
``breaker.failures`` failed runs within ``breaker.within`` (counted after the route's last successful run
and last reset) → the run starts with an approval gate on every step (``breaker_open``); ``approval: required``
gates every run the same way. Every outcome is recorded as a decision by the caller.

Alert routes and schedules (``schedule:<name>``) are judged alike: anything with a ``name`` and a ``spec``
carrying ``cooldown``, ``budget``, ``breaker`` and ``approval`` (:class:`Guarded`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runbook_server.config import BreakerSpec, BudgetSpec
    from runner.store.base import Store

__all__ = ["GuardSpec", "Guarded", "Verdict", "judge"]


class GuardSpec(Protocol):
    """The storm-guard settings of a route or schedule."""

    @property
    def cooldown(self) -> float: ...
    @property
    def budget(self) -> BudgetSpec | None: ...
    @property
    def breaker(self) -> BreakerSpec | None: ...
    @property
    def approval(self) -> str: ...


class Guarded(Protocol):
    """What the guard judges: a route (``CompiledRoute``) or a schedule; its runs are recorded under ``name``."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> GuardSpec: ...


@dataclass
class Verdict:
    """The guard's answer: ``started`` (possibly ``gated``) or a refusal with its reason."""

    decision: str
    reason: str = ""
    run_id: str | None = None
    gated: bool = False


def judge(store: Store, route: Guarded, key: str, now: float | None = None) -> Verdict:
    """Decide whether ``route`` may start a run for dedupe key ``key`` now."""
    now = time.time() if now is None else now
    spec = route.spec
    active = store.route_runs(route.name, dedupe_key=key, active_only=True, limit=1)
    if active:
        run = active[0]
        return Verdict("deduped", f"run {run.run_id} for this dedupe key is still {run.state}", run.run_id)
    window = max(spec.cooldown, spec.budget.per if spec.budget else 0.0, spec.breaker.within if spec.breaker else 0.0)
    recent = store.route_runs(route.name, since=now - window) if window > 0 else []
    if spec.cooldown > 0:
        last = next((r for r in recent if r.dedupe_key == key and r.started_at >= now - spec.cooldown), None)
        if last is not None:
            left = spec.cooldown - (now - last.started_at)
            return Verdict("cooled_down", f"run {last.run_id} started {now - last.started_at:.0f}s ago; cooldown has {left:.0f}s left",
                           last.run_id)  # fmt: skip
    if spec.budget is not None:
        used = sum(1 for r in recent if r.started_at >= now - spec.budget.per)
        if used >= spec.budget.runs:
            return Verdict(
                "over_budget", f"route already started {used} run(s) in the last {spec.budget.per:g}s (budget {spec.budget.runs})"
            )
    if spec.breaker is not None:
        failures = _failures(store, route, recent, now)
        if failures >= spec.breaker.failures:
            return Verdict("breaker_open", f"{failures} failed run(s) within {spec.breaker.within:g}s: every step waits for approval",
                           gated=True)  # fmt: skip
    if spec.approval == "required":
        return Verdict("started", "route requires approval: every step waits for approval", gated=True)
    return Verdict("started")


def _failures(store: Store, route: Guarded, recent: list, now: float) -> int:  # type: ignore[type-arg]
    """Failed runs of the route inside the breaker window, after its last success and last reset."""
    assert route.spec.breaker is not None
    since = now - route.spec.breaker.within
    for r in recent:
        if r.state == "succeeded" and r.finished_at is not None:
            since = max(since, r.finished_at)
    resets = store.list_decisions(route=route.name, decision="breaker_reset", limit=1)
    if resets:
        since = max(since, resets[0].ts)
    return sum(1 for r in recent if r.state == "failed" and (r.finished_at or 0) >= since)
