"""``/v1/runbooks`` and ``/v1/runs``: the catalog, starting runs, watching and steering them."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from runbook_server.app import get_state, scope
from runbook_server.models import (
    ApiRunView,
    Decide,
    DecideStep,
    EventList,
    Reason,
    Resume,
    RunbookDetail,
    RunbookList,
    RunList,
    StartRun,
    http_next,
)  # fmt: skip
from runbook_server.runs import requeue
from runbook_server.waiting import SETTLED, HeldStream, busy, settled, waiter_slot
from runner.errors import InvalidState, PolicyDenied, UsageError
from runner.store.records import TERMINAL_STATES, RunState

if TYPE_CHECKING:
    from runbook_server.auth import Principal
    from runbook_server.state import ServerState
    from runner.engine import RunView
    from runner.store.records import Event, RunRecord

__all__ = ["router"]

router = APIRouter(prefix="/v1")
READ, RUN, APPROVE = scope("read"), scope("run"), scope("approve")
_ENDED = frozenset({RunState.SUCCEEDED, RunState.CANCELLED, RunState.FAILED})


def _actor(state: ServerState, principal: Principal, asked: str | None) -> str:
    """Who acts: the token's name; a body's ``actor``/``by`` only without tokens or with the admin scope."""
    if asked and (not state.tokens.enabled or "admin" in principal.scopes):
        return asked
    return principal.name if state.tokens.enabled else (asked or state.settings.actor)


# ---------------------------------------------------------------------- catalog


@router.get("/runbooks", response_model=RunbookList, tags=["catalog"], summary="Runbooks and their params schemas")
def list_runbooks(request: Request, principal: Principal = READ) -> dict[str, Any]:
    """The catalog; an ``agent`` token sees only the runbooks the agent policy lets it start."""
    from runner.cli.catalog_cmds import runbook_summary

    state = get_state(request)
    policy = state.policy if principal.is_agent else None
    return {"runbooks": [runbook_summary(rb) for rb in state.catalog if policy is None or policy.may_start(rb.name)]}


@router.get("/runbooks/{name}", response_model=RunbookDetail, tags=["catalog"], summary="One runbook in full")
def get_runbook(request: Request, name: str, principal: Principal = READ) -> dict[str, Any]:
    from runner.cli.catalog_cmds import runbook_summary

    state = get_state(request)
    rb = state.catalog.get(name)
    policy = state.policy if principal.is_agent else None
    if policy is not None and not policy.may_start(name):
        raise PolicyDenied(f"runbook '{name}' is not available to agents ({policy.file})")
    return {**runbook_summary(rb), "runbook": rb.spec.model_dump(mode="json", by_alias=True), "content_hash": rb.content_hash}


# ---------------------------------------------------------------------- runs


@router.post("/runs", response_model=ApiRunView, status_code=201, tags=["runs"], summary="Start a run (queued for a worker)",
             responses={200: {"model": ApiRunView, "description": "an earlier run with this Idempotency-Key"},
                        429: {"description": "too many requests are waiting already (`wait`; limits.max_waiters)"}})  # fmt: skip
async def start_run(request: Request, response: Response, body: StartRun, principal: Principal = RUN,
                    idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> ApiRunView:  # fmt: skip
    state = get_state(request)
    if not body.wait:
        return http_next(await run_in_threadpool(_start, state, response, body, principal, idempotency_key))
    async with waiter_slot(state):
        view = await run_in_threadpool(_start, state, response, body, principal, idempotency_key)
        return http_next(await settled(state, view.run_id, body.wait))


def _start(state: ServerState, response: Response, body: StartRun, principal: Principal, key: str | None) -> RunView:
    """Queue the run (or find the run of a repeated key); a client's key lives in its own namespace (``api:<token>:``)."""
    trigger = {"source": "api", "token": principal.name, "budget": body.budget, "max_steps": body.max_steps}
    t0 = time.time()
    engine = state.agent_engine if principal.is_agent else state.api_engine  # agent tokens: the agent policy applies
    view = engine.start(body.runbook, body.params, started_by=_actor(state, principal, body.actor), idempotency_key=_api_key(state, principal, key),
                        trigger=trigger, execute=False, principal=principal.acting())  # fmt: skip
    run = state.store.get_run(view.run_id)
    if run.created_at < t0:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
        if run.runbook != body.runbook:
            raise InvalidState(run.id, f"a run of '{run.runbook}'", f"reuse its Idempotency-Key for '{body.runbook}'")
    else:
        state.wake_workers()
    return view


def _api_key(state: ServerState, principal: Principal, key: str | None) -> str | None:
    """The run idempotency key for a client's ``Idempotency-Key``: never equal to an alert route's or another token's."""
    if key is None:
        return None
    return f"api:{principal.name}:{key}" if state.tokens.enabled else f"api:{key}"


def _when(name: str, value: str | None) -> float | None:
    """A ``since``/``until`` query parameter as epoch seconds; a malformed one is a 400 naming it."""
    if value is None:
        return None
    from runner.durations import parse_time
    from runner.errors import UsageError

    try:
        return parse_time(value)
    except ValueError as exc:
        raise UsageError(f"query parameter '{name}': {exc}") from None


@router.get("/runs", response_model=RunList, tags=["runs"], summary="List runs, newest first")
def list_runs(request: Request, runbook: str | None = None, state: Annotated[list[RunState] | None, Query()] = None,
              before: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
              since: Annotated[str | None, Query(description="created since: a duration ago ('2h') or an ISO 8601 time")] = None,
              until: Annotated[str | None, Query(description="created before: a duration ago ('1d') or an ISO 8601 time")] = None,
              started_by: Annotated[str | None, Query(description="started by exactly this actor; 'alert:*' for a prefix")] = None,
              principal: Principal = READ) -> dict[str, Any]:  # fmt: skip
    from runner.authority import Action, decide
    from runner.listings import run_summary

    server = get_state(request)
    runs = server.store.list_runs(runbook=runbook, states=state or [], limit=limit, before=before, since=_when("since", since),
                                  until=_when("until", until), started_by=started_by)  # fmt: skip
    who, policy = principal.acting(), server.policy
    rows = [run_summary(r).model_dump(mode="json") for r in runs
            if decide(who, Action.READ, runbook=r.runbook, run=r, policy=policy if who.is_agent else None).ok]  # fmt: skip
    return {"runs": rows, "next_before": runs[-1].id if len(runs) == limit else None}


@router.get("/runs/{run_id}", response_model=ApiRunView, tags=["runs"], summary="A run (as `runbook status --json`)")
def get_run(request: Request, run_id: str, principal: Principal = READ) -> ApiRunView:
    state = get_state(request)
    engine = state.agent_engine if principal.is_agent else state.api_engine
    return http_next(engine.status(engine.resolve_id(run_id), principal=principal.acting()))


@router.get("/runs/{run_id}/events", response_model=EventList, tags=["events"], summary="Journal events after a seq")
def list_events(request: Request, run_id: str, after: Annotated[int, Query(ge=0)] = 0,
                limit: Annotated[int, Query(ge=1, le=10000)] = 1000, principal: Principal = READ) -> dict[str, Any]:  # fmt: skip
    from runner.listings import event_view

    state = get_state(request)
    engine = state.agent_engine if principal.is_agent else state.api_engine
    rid = engine.resolve_id(run_id)
    engine.status(rid, principal=principal.acting())  # who may not read the run may not read its events
    return {"run_id": rid, "events": [event_view(e).model_dump(mode="json") for e in state.store.events(rid, after=after, limit=limit)]}


@router.get("/runs/{run_id}/logs", tags=["events"], summary="The output its steps captured, as lines (as `runbook logs --json`)")
def get_logs(request: Request, run_id: str, step: str | None = None, target: str | None = None,
             stream: Literal["stdout", "stderr", "body", "log"] | None = None, principal: Principal = READ) -> dict[str, Any]:  # fmt: skip
    from runner.logs import collect

    state = get_state(request)
    engine = state.agent_engine if principal.is_agent else state.api_engine
    rid = engine.resolve_id(run_id)
    engine.status(rid, principal=principal.acting())
    return {"run_id": rid, "lines": [line.as_json() for line in collect(state.store, rid, step=step, target=target, stream=stream)]}


@router.get("/runs/{run_id}/events/stream", tags=["events"], response_class=StreamingResponse,
            summary="Server-Sent Events: the journal as it grows (resumable with Last-Event-ID)",
            responses={200: {"content": {"text/event-stream": {}}, "description": "`id: SEQ` + `data: EVENT` per event; `event: end` last"},
                       429: {"description": "too many streams are open already (limits.max_streams)"}})  # fmt: skip
async def stream_events(request: Request, run_id: str, after: Annotated[int, Query(ge=0)] = 0,
                        until: Literal["ended", "settled"] = "ended",
                        last_event_id: Annotated[str | None, Header()] = None, principal: Principal = READ) -> StreamingResponse:  # fmt: skip
    state = get_state(request)
    rid = await run_in_threadpool(state.api_engine.resolve_id, run_id)
    await run_in_threadpool(lambda: state.agent_engine.status(rid, principal=principal.acting()))
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
    stop_states = _ENDED if until == "ended" else SETTLED
    if not state.streams.try_acquire():
        raise busy(state.streams)
    return HeldStream(_sse(state, rid, start, stop_states), release=state.streams.release, media_type="text/event-stream",
                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


async def _sse(state: ServerState, rid: str, last: int, stop_states: frozenset[RunState]) -> Any:
    idle = 0
    yield "retry: 1000\n\n"
    while not state.shutdown.is_set():
        batch = await run_in_threadpool(state.store.events, rid, after=last, limit=500)
        for ev in batch:
            yield _frame(ev)
            last = ev.seq
        if batch:
            idle = 0
            continue
        run = await run_in_threadpool(state.store.get_run, rid)
        if run.state in stop_states:
            for ev in await run_in_threadpool(state.store.events, rid, after=last, limit=100000):  # committed with the final state
                yield _frame(ev)
                last = ev.seq
            yield f"event: end\ndata: {json.dumps({'run_id': rid, 'state': str(run.state), 'last_seq': last})}\n\n"
            return
        idle += 1
        if idle % 60 == 0:
            yield ": keepalive\n\n"
        await state.watch.changed(0.25)


def _frame(ev: Event) -> str:
    from runner.listings import event_view

    return f"id: {ev.seq}\ndata: {json.dumps(event_view(ev).model_dump(mode='json'), default=str)}\n\n"


# ---------------------------------------------------------------------- steering


def _control(request: Request, run_id: str, fn: Any) -> ApiRunView:
    state = get_state(request)
    rid = state.api_engine.resolve_id(run_id)
    with state.control_lock:
        view = fn(state, rid)
    state.wake_workers()
    return http_next(view)


@router.post("/runs/{run_id}/pause", response_model=ApiRunView, tags=["control"], summary="Pause at the next step boundary")
def pause_run(request: Request, run_id: str, body: Reason | None = None, principal: Principal = RUN) -> ApiRunView:
    return _control(request, run_id, lambda s, rid: s.agent_engine.pause(rid, actor=_actor(s, principal, None), reason=(body or Reason()).reason,
                                                                         principal=principal.acting()))  # fmt: skip


@router.post("/runs/{run_id}/cancel", response_model=ApiRunView, tags=["control"], summary="Cancel (a step in flight is stopped)")
def cancel_run(request: Request, run_id: str, body: Reason | None = None, principal: Principal = RUN) -> ApiRunView:
    body = body or Reason()
    return _control(request, run_id, lambda s, rid: s.agent_engine.cancel(rid, actor=_actor(s, principal, None), reason=body.reason,
                                                                          rollback=body.rollback, principal=principal.acting()))  # fmt: skip


@router.post("/runs/{run_id}/resume", response_model=ApiRunView, tags=["control"], summary="Queue a stopped run for a worker again",
             responses={429: {"description": "too many requests are waiting already (`wait`; limits.max_waiters)"}})  # fmt: skip
async def resume_run(request: Request, run_id: str, body: Resume | None = None, principal: Principal = RUN) -> ApiRunView:
    body = body or Resume()
    if not body.wait:
        return await run_in_threadpool(_resume, request, run_id, body, principal)
    state = get_state(request)
    async with waiter_slot(state):
        view = await run_in_threadpool(_resume, request, run_id, body, principal)
        return http_next(await settled(state, view.run_id, body.wait))


def _resume(request: Request, run_id: str, body: Resume, principal: Principal) -> ApiRunView:
    from runner.authority import Action
    from runner.engine.decisions import pending

    def do(s: ServerState, rid: str) -> RunView:
        run = s.store.get_run(rid)
        action = Action.DECIDE if (body.retry_step or body.skip_step) else Action.RETRY if body.retry else Action.RESUME
        s.agent_engine.authorize(principal.acting(), action, run)
        if run.state in TERMINAL_STATES or (run.state == RunState.RUNNING and not _gone(run)):
            raise InvalidState(run.id, str(run.state), "resume it")
        if run.state == RunState.FAILED and not (body.retry or body.retry_step or body.skip_step) and not pending(s.store, rid):
            raise UsageError(f"run {run.id} failed: {run.reason}",
                             hint=f'fix the cause, then POST /v1/runs/{run.id}/retry (or resume with {{"retry": true}})')  # fmt: skip
        actor = _actor(s, principal, None)
        data = body.model_dump(exclude={"wait"}, exclude_none=True)
        s.store.request(rid, "resume", actor=actor, reason="resume requested", data=data)
        requeue(s.api_engine, rid, actor=actor, reason=f"resume requested by {actor}")
        return s.api_engine.view(rid)

    return _control(request, run_id, do)


def _gone(run: RunRecord) -> bool:
    from runner.engine.inspect import holder_gone

    return holder_gone(run)


def _decide(request: Request, run_id: str, body: Decide | None, principal: Principal, approve: bool) -> ApiRunView:
    body = body or Decide()
    return _control(request, run_id, lambda s, rid: s.agent_engine.decide(rid, actor=_actor(s, principal, body.by), approve=approve,
                                                                           comment=body.comment, step_id=body.step,
                                                                           principal=principal.acting()))  # fmt: skip


@router.post("/runs/{run_id}/approve", response_model=ApiRunView, tags=["control"], summary="Approve the waiting approval step")
def approve_run(request: Request, run_id: str, body: Decide | None = None, principal: Principal = APPROVE) -> ApiRunView:
    return _decide(request, run_id, body, principal, True)


@router.post("/runs/{run_id}/deny", response_model=ApiRunView, tags=["control"], summary="Deny the waiting approval step")
def deny_run(request: Request, run_id: str, body: Decide | None = None, principal: Principal = APPROVE) -> ApiRunView:
    return _decide(request, run_id, body, principal, False)


@router.post("/runs/{run_id}/decide", response_model=ApiRunView, tags=["control"],
             summary="Record a decision on an unknown step (retry_step or skip_step); a worker applies it")  # fmt: skip
def decide_run(request: Request, run_id: str, body: DecideStep, principal: Principal = APPROVE) -> ApiRunView:
    step, choice = (body.retry_step, "retry") if body.retry_step else (body.skip_step or "", "skip")
    return _control(request, run_id, lambda s, rid: s.agent_engine.decide_step(rid, step, choice, actor=_actor(s, principal, None),
                                                                               principal=principal.acting()))  # fmt: skip


@router.post("/runs/{run_id}/retry", response_model=ApiRunView, tags=["control"],
             summary="Record a retry of a failed run whose cause was fixed, and queue it for a worker")  # fmt: skip
def retry_run(request: Request, run_id: str, principal: Principal = RUN) -> ApiRunView:
    def do(s: ServerState, rid: str) -> RunView:
        actor = _actor(s, principal, None)
        s.agent_engine.retry(rid, actor=actor, principal=principal.acting())
        requeue(s.api_engine, rid, actor=actor, reason=f"retry recorded by {actor}")
        return s.api_engine.view(rid)

    return _control(request, run_id, do)
