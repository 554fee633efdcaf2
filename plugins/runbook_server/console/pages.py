"""The console's pages (GET): overview, catalog, start form, runs, run, step output, decisions, schedules, live events, assets."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from runbook_server.app import get_state
from runbook_server.console.common import context, local_path, renderer_of, respond
from runbook_server.console.forms import fields_for
from runbook_server.console.listing import RunFilter, find_runs
from runbook_server.console.outputs import step_panels
from runbook_server.console.render import STATIC
from runbook_server.console.runpage import check_read, may_read, run_context
from runbook_server.console.session import identify, sessions_of, set_cookie
from runner.alerts import DECISIONS
from runner.errors import AuthError, PolicyDenied, UsageError
from runner.store.records import RunState

if TYPE_CHECKING:
    from runbook_server.console.common import Built
    from runbook_server.console.session import Viewer
    from runbook_server.state import ServerState
    from runner.catalog import LoadedRunbook

__all__ = ["router", "runbook_page", "visible_runbook"]

router = APIRouter(include_in_schema=False)


def visible_runbook(state: ServerState, viewer: Viewer, name: str) -> LoadedRunbook:
    """The runbook ``name`` if this viewer may see it (an agent token: only what the agent policy lets it start)."""
    rb = state.catalog.get(name)
    if viewer.principal.is_agent and state.policy is not None and not state.policy.may_start(name):
        raise PolicyDenied(f"runbook '{name}' is not available to agents ({state.policy.file})")
    return rb


# ---------------------------------------------------------------------- overview and catalog


@router.get("/")
def home(request: Request) -> Response:
    def build(state: ServerState, viewer: Viewer) -> Built:
        waiting = [r for r in state.store.list_runs(states=[RunState.WAITING], limit=50) if may_read(state, viewer, r)]
        attention = [state.api_engine.view(r.id) for r in waiting]
        recent = [r for r in state.store.list_runs(limit=50) if may_read(state, viewer, r)][:15]
        return "home.html", {"attention": attention, "recent": recent}

    return respond(request, "read", build)


@router.get("/runbooks")
def runbooks(request: Request) -> Response:
    def build(state: ServerState, viewer: Viewer) -> Built:
        policy = state.policy if viewer.principal.is_agent else None
        shown = [rb for rb in state.catalog if policy is None or policy.may_start(rb.name)]
        return "runbooks.html", {"runbooks": shown, "problems": list(state.catalog.problems)}

    return respond(request, "read", build)


def runbook_page(state: ServerState, viewer: Viewer, name: str, values: dict[str, str] | None = None,
                 errors: dict[str, str] | None = None, error: str | None = None, status: int = 200) -> Built:  # fmt: skip
    """The runbook page with its start form (filled with ``values`` and ``errors`` after a refused start)."""
    rb = visible_runbook(state, viewer, name)
    schema = rb.params_model.model_json_schema()
    fields = fields_for(schema, values)
    for f in fields:
        f.error = (errors or {}).get(f.name, "")
    steps = [{"id": s.id, "type": s.action.type, "description": s.description} for s in rb.spec.steps]
    return "runbook.html", {"rb": rb, "steps": steps, "fields": fields, "request_id": secrets.token_urlsafe(16),
                            "can_start": viewer.can("run"), "error": error}, status  # fmt: skip


@router.get("/runbooks/{name}")
def runbook(request: Request, name: str) -> Response:
    return respond(request, "read", lambda state, viewer: runbook_page(state, viewer, name))


# ---------------------------------------------------------------------- runs


@router.get("/runs")
def runs(request: Request, state_: Annotated[str, Query(alias="state", max_length=40)] = "",
         runbook: Annotated[str, Query(max_length=200)] = "", actor: Annotated[str, Query(max_length=200)] = "",
         since: Annotated[str, Query(max_length=40)] = "", until: Annotated[str, Query(max_length=40)] = "",
         before: Annotated[str, Query(max_length=40)] = "") -> Response:  # fmt: skip
    flt = RunFilter(state=state_, runbook=runbook, actor=actor, since=since, until=until, before=before)

    def build(state: ServerState, viewer: Viewer) -> Built:
        base = {"flt": flt, "states": [str(s) for s in RunState], "names": sorted(rb.name for rb in state.catalog)}
        try:
            found = find_runs(state.store, flt, visible=lambda run: may_read(state, viewer, run))
        except UsageError as exc:
            return "runs.html", {**base, "page": None, "error": exc.message}, 400
        return "runs.html", {**base, "page": found}

    return respond(request, "read", build)


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str) -> Response:
    return respond(request, "read", lambda state, viewer: ("run.html", run_context(state, viewer, run_id)))


@router.get("/runs/{run_id}/live")
def run_live(request: Request, run_id: str) -> Response:
    """The live part of the run page (steps, next action, buttons), fetched by console.js when events arrive."""
    return respond(request, "read", lambda state, viewer: ("_live.html", run_context(state, viewer, run_id)))


@router.get("/runs/{run_id}/steps/{step_id}")
def step_page(request: Request, run_id: str, step_id: str) -> Response:
    """One step's probes and whole output (every target)."""

    def build(state: ServerState, viewer: Viewer) -> Built:
        rid = state.api_engine.resolve_id(run_id)
        run = state.store.get_run(rid)
        check_read(state, viewer, run)
        recs = [s for s in state.store.get_steps(rid) if s.step_id == step_id]
        if not recs:
            raise UsageError(f"run {rid} has no step '{step_id[:100]}'")
        probes = [e for e in state.store.events(rid, types=("probe",), limit=5000) if e.step_id == step_id]
        events = [e for e in state.store.events(rid, limit=5000) if e.step_id == step_id]
        return "step.html", {"run": run, "panel": step_panels(recs, probes)[0], "events": events}

    return respond(request, "read", build)


@router.get("/runs/{run_id}/events")
async def run_events(request: Request, run_id: str, after: Annotated[int, Query(ge=0)] = 0,
                     last_event_id: Annotated[str | None, Header()] = None) -> Response:  # fmt: skip
    """Server-Sent Events of the run's journal for the run page: the API's stream, authenticated as the console."""
    from runbook_server.api_runs import _ENDED, _sse
    from runbook_server.waiting import HeldStream, busy

    state = get_state(request)
    try:
        viewer, _cookie = identify(state, request)
        if viewer is None or not viewer.can("read"):
            raise AuthError("log in to the console to follow this run", status=401 if viewer is None else 403)
        rid = await run_in_threadpool(state.api_engine.resolve_id, run_id)
        await run_in_threadpool(lambda: check_read(state, viewer, state.store.get_run(rid)))
    except Exception as exc:
        from runbook_server.app import error_response

        return error_response(exc, state)
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
    if not state.streams.try_acquire():
        raise busy(state.streams)
    return HeldStream(_sse(state, rid, start, _ENDED), release=state.streams.release, media_type="text/event-stream",
                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


# ---------------------------------------------------------------------- storm guard


@router.get("/decisions")
def decisions(request: Request, route: Annotated[str, Query(max_length=200)] = "", source: Annotated[str, Query(max_length=100)] = "",
              decision: Annotated[str, Query(max_length=40)] = "", run_id: Annotated[str, Query(max_length=40)] = "",
              before: Annotated[int | None, Query(ge=1)] = None) -> Response:  # fmt: skip
    def build(state: ServerState, viewer: Viewer) -> Built:
        flt = {"route": route, "source": source, "decision": decision, "run_id": run_id}
        base: dict[str, Any] = {"flt": flt, "decisions_known": DECISIONS, "routes": list(state.router.by_name.values()),
                                "sources": sorted(state.sources), "can_reset": viewer.can("admin"), "query": {}}  # fmt: skip
        if decision and decision not in DECISIONS:
            return "decisions.html", {**base, "rows": [], "next_before": None, "error": f"unknown decision '{decision[:40]}'"}, 400
        rows = state.store.list_decisions(route=route or None, source=source or None, decision=decision or None,
                                          run_id=run_id or None, limit=50, before=before)  # fmt: skip
        query = {k: v for k, v in flt.items() if v}
        return "decisions.html", {**base, "rows": rows, "next_before": rows[-1].id if len(rows) == 50 else None, "query": query}

    return respond(request, "read", build)


# ---------------------------------------------------------------------- schedules


@router.get("/schedules")
def schedules(request: Request) -> Response:
    """The server config's schedules as ``GET /v1/schedules`` lists them: next slot, newest decision and run."""
    from runbook_server.api_schedules import schedule_listing

    def build(state: ServerState, viewer: Viewer) -> Built:
        listing = schedule_listing(state, viewer.principal)
        return "schedules.html", {"listing": listing, "configured": state.scheduler is not None}

    return respond(request, "read", build)


# ---------------------------------------------------------------------- login page and assets


@router.get("/login")
def login_page(request: Request, next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
    """The login form (a session is made first, so that the form carries a CSRF token)."""
    state = get_state(request)
    target = local_path(next)
    viewer, cookie = identify(state, request)
    if viewer is not None:  # logged in already (or no tokens configured): nothing to trade
        from fastapi.responses import RedirectResponse

        response: Response = RedirectResponse(target, status_code=303)
        set_cookie(state, request, response, cookie)
        return response
    sessions = sessions_of(request)
    from runbook_server.console.session import COOKIE

    session = sessions.get(request.cookies.get(COOKIE))
    if session is None:
        cookie, session = sessions.new(None)
    response = renderer_of(request).html("login.html", {**context(request, None), "csrf": session.csrf, "next": target})
    set_cookie(state, request, response, cookie)
    return response


@router.get("/static/{name}")
def static(request: Request, name: str) -> Response:
    """The console's stylesheet and script (only these names)."""
    if name not in STATIC:
        raise HTTPException(404, "no such console asset")
    body = renderer_of(request).static[name]
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
