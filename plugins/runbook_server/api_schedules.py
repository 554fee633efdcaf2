"""``/v1/schedules``: the configured schedules, their next slots and their newest decisions and runs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import Field

from runbook_server.app import get_state, scope
from runbook_server.models import DecisionList
from runbook_server.schedules import SOURCE, ScheduleList, ScheduleStatus, at, describe
from runner.alerts import DecisionRecord, NewDecision

if TYPE_CHECKING:
    from runbook_server.auth import Principal
    from runbook_server.scheduler import Scheduler
    from runbook_server.schedules import CompiledSchedule
    from runbook_server.state import ServerState

__all__ = ["ScheduleDetail", "router", "schedule_listing"]

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
_READ = scope("read")
_ADMIN = scope("admin")


class ScheduleDetail(ScheduleStatus):
    """``GET /v1/schedules/{name}``: the schedule, its next slots and its newest decisions."""

    upcoming: list[str] = Field(description="the next slots (at most `upcoming` of them), in the schedule's time zone")
    decisions: list[DecisionRecord] = Field(description="the newest decisions for its slots, newest first")


def _scheduler(state: ServerState) -> Scheduler | None:
    return state.scheduler


def _visible(state: ServerState, principal: Principal) -> list[CompiledSchedule]:
    """The schedules ``principal`` may see: all, or for an ``agent`` token those whose runbook the agent policy lets it
    start (as ``GET /v1/runbooks``)."""
    scheduler = _scheduler(state)
    if scheduler is None:
        return []
    policy = state.policy if principal.is_agent else None
    return [cs for cs in scheduler.all if policy is None or policy.may_start(cs.spec.runbook)]


def _listing(state: ServerState, principal: Principal, schedules: list[CompiledSchedule], now: float) -> ScheduleList:
    """:func:`describe`, without the last run where the principal may not read that run."""
    from runner.authority import Action, decide

    listing = describe(schedules, state.store, now)
    if principal.is_agent:
        who = principal.acting()
        for row in listing.schedules:
            run = state.store.get_run(row.last_run_id) if row.last_run_id else None
            if run is not None and not decide(who, Action.READ, runbook=row.runbook, run=run, policy=state.policy).ok:
                row.last_run_id = row.last_run_state = row.last_run_slot = None
    return listing


def schedule_listing(state: ServerState, principal: Principal) -> ScheduleList:
    """Every schedule of the server config (enabled or not) that ``principal`` may see, with its next slot and its newest
    decision and run: what ``GET /v1/schedules`` answers and the console's ``/schedules`` page shows."""
    scheduler = _scheduler(state)
    if scheduler is None:
        return ScheduleList(schedules=[], now=at(time.time()).isoformat(timespec="seconds"))
    return _listing(state, principal, _visible(state, principal), scheduler.clock.now())


@router.get("", response_model=ScheduleList, summary="Schedules with their next slot and last run")
def list_schedules(request: Request, principal: Principal = _READ) -> ScheduleList:
    """Every schedule in the server config (enabled or not)."""
    return schedule_listing(get_state(request), principal)


@router.get("/{name}", response_model=ScheduleDetail, summary="One schedule: next slots and newest decisions")
def get_schedule(request: Request, name: str, upcoming: Annotated[int, Query(ge=0, le=100)] = 5,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 20, principal: Principal = _READ) -> ScheduleDetail:  # fmt: skip
    """The schedule ``name``, its next ``upcoming`` slots and its newest ``limit`` decisions."""
    state = get_state(request)
    scheduler = _scheduler(state)
    found = next((cs for cs in _visible(state, principal) if cs.name == name), None)
    if found is None or scheduler is None:
        raise _unknown(state, principal, name)
    now = scheduler.clock.now()
    status = _listing(state, principal, [found], now).schedules[0]
    slots = list(found.slots.between(at(now), at(now + 366 * 86400 * 15), limit=upcoming)) if found.spec.enabled else []
    decisions = state.store.list_decisions(route=found.route, source=SOURCE, limit=limit)
    return ScheduleDetail(**status.model_dump(), upcoming=[found.local(s) for s in slots], decisions=decisions)


@router.post("/{name}/reset", response_model=DecisionList, summary="Close a schedule's circuit breaker (admin)")
def reset_breaker(request: Request, name: str, principal: Principal = _ADMIN) -> dict[str, object]:
    """Record a ``breaker_reset`` decision for the schedule: failures before it no longer count."""
    state = get_state(request)
    scheduler = _scheduler(state)
    if scheduler is None or not any(cs.name == name for cs in scheduler.all):
        raise _unknown(state, principal, name)
    route = f"{SOURCE}:{name}"
    rows = state.store.record_decisions([NewDecision(f"api:reset:{route}:{time.time_ns()}", 0, "api", "breaker_reset", route=route,
                                                     reason=f"reset by {principal.name}")])  # fmt: skip
    return {"decisions": rows, "next_before": None}


def _unknown(state: ServerState, principal: Principal, name: str) -> HTTPException:
    names = [cs.name for cs in _visible(state, principal)]
    return HTTPException(404, f"no schedule named '{name}' (schedules: {', '.join(names) or 'none'})")
