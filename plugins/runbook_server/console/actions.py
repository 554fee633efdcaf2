"""The console's form actions (POST): login, logout, start, approve, deny, pause, resume, cancel, breaker reset.

Every action checks, in this order: the form came from this console (CSRF token of the session, ``Origin``,
``Sec-Fetch-Site``; not needed with an ``Authorization`` header), the viewer holds the action's scope, and then
calls the very function the ``/v1`` endpoint calls — so the agent policy and the approval's ``approvers``,
``distinct_from_starter`` and ``allowed`` rules hold for the logged-in identity as they do for the API.
A refused action answers with the API's status (403, 409, 422, ...) and says why; a done one redirects back
(303) with a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import ValidationError as PydanticValidationError

from runbook_server.app import get_state, status_for
from runbook_server.console.common import context, error_page, local_path, page, renderer_of
from runbook_server.console.forms import params_from_form
from runbook_server.console.pages import runbook_page, visible_runbook
from runbook_server.console.runpage import run_context
from runbook_server.console.session import COOKIE, check_form, identify, sessions_of, set_cookie
from runner.errors import AuthError, ParamsError, RunbookError, UsageError

if TYPE_CHECKING:
    from runbook_server.console.session import Viewer
    from runbook_server.state import ServerState

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
RunId = Annotated[str, Path(max_length=40)]
Handler = Callable[["ServerState", "Viewer", dict[str, str]], Response]


async def read_form(request: Request) -> dict[str, str]:
    """The form-encoded body (the last value of a repeated field wins); other bodies are refused (415)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    body = await request.body()
    if body and media != "application/x-www-form-urlencoded":
        raise UsageError(f"console forms are form-encoded (application/x-www-form-urlencoded); got {media or 'none'}")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=500, strict_parsing=False))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"the form could not be read: {exc}") from None


async def act(request: Request, scope: str, handler: Handler) -> Response:
    """Check the form's origin and the scope, then run ``handler`` in a thread; errors become pages with their status."""
    state = get_state(request)
    viewer: Viewer | None = None
    try:
        form = await read_form(request)
        viewer, _cookie = identify(state, request)
        if viewer is None:
            raise AuthError("log in to the console first (your session ended or was never started)", status=401)
        check_form(request, viewer.session, form, bearer=viewer.via == "bearer")
        if not viewer.can(scope):
            raise AuthError(f"token '{viewer.name}' lacks the '{scope}' scope", status=403)
        return await run_in_threadpool(handler, state, viewer, form)
    except Exception as exc:
        return error_page(request, viewer, exc)


def done(viewer: Viewer, target: str, message: str) -> Response:
    """Redirect (303) to ``target`` with ``message`` shown there."""
    if viewer.session is not None:
        viewer.session.flash.append(("ok", message))
    return RedirectResponse(target, status_code=303)


def _model(cls: type, **values: object) -> object:
    try:
        return cls(**values)
    except PydanticValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise UsageError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


# ---------------------------------------------------------------------- run actions


def _on_run(request: Request, run_id: str, do: Callable[[ServerState, Viewer, dict[str, str]], str]) -> Handler:
    """A run action: done → back to the run page with a message; refused → the run page with the reason and the status."""

    def handler(state: ServerState, viewer: Viewer, form: dict[str, str]) -> Response:
        try:
            message = do(state, viewer, form)
        except RunbookError as exc:
            try:
                ctx = run_context(state, viewer, run_id)
            except RunbookError:
                raise exc from None
            reason = state.redactor.text(exc.message + (f"; {exc.hint}" if exc.hint else ""))
            return page(request, viewer, ("run.html", {**ctx, "error": reason}, status_for(exc)))
        return done(viewer, f"/runs/{state.api_engine.resolve_id(run_id)}", message)

    return handler


def _decision(request: Request, run_id: str, approve: bool) -> Handler:
    from runbook_server.api_runs import approve_run, deny_run
    from runbook_server.models import Decide

    def do(state: ServerState, viewer: Viewer, form: dict[str, str]) -> str:
        body = _model(Decide, comment=form.get("comment", ""), step=form.get("step") or None)
        view = (approve_run if approve else deny_run)(request, run_id, body, viewer.principal)  # type: ignore[arg-type]
        verb = "Approved" if approve else "Denied"
        return f"{verb} as {viewer.name}" + (
            "; the server's workers continue the run." if view.state == "waiting" else f"; the run is {view.state}."
        )

    return _on_run(request, run_id, do)


@router.post("/runs/{run_id}/approve")
async def approve(request: Request, run_id: RunId) -> Response:
    return await act(request, "approve", _decision(request, run_id, True))


@router.post("/runs/{run_id}/deny")
async def deny(request: Request, run_id: RunId) -> Response:
    return await act(request, "approve", _decision(request, run_id, False))


@router.post("/runs/{run_id}/pause")
async def pause(request: Request, run_id: RunId) -> Response:
    from runbook_server.api_runs import pause_run
    from runbook_server.models import Reason

    def do(state: ServerState, viewer: Viewer, form: dict[str, str]) -> str:
        view = pause_run(request, run_id, _model(Reason, reason=form.get("reason", "")), viewer.principal)  # type: ignore[arg-type]
        return f"Pause requested by {viewer.name}; the run is {view.state}."

    return await act(request, "run", _on_run(request, run_id, do))


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: RunId) -> Response:
    from runbook_server.api_runs import cancel_run
    from runbook_server.models import Reason

    def do(state: ServerState, viewer: Viewer, form: dict[str, str]) -> str:
        view = cancel_run(request, run_id, _model(Reason, reason=form.get("reason", "")), viewer.principal)  # type: ignore[arg-type]
        return f"Cancel requested by {viewer.name}; the run is {view.state}."

    return await act(request, "run", _on_run(request, run_id, do))


@router.post("/runs/{run_id}/resume")
async def resume(request: Request, run_id: RunId) -> Response:
    """``mode``: ``resume`` (paused, interrupted), ``retry`` (failed), ``retry_step`` / ``skip_step`` with ``step`` (unknown)."""
    from runbook_server.api_runs import _resume
    from runbook_server.models import Resume

    def do(state: ServerState, viewer: Viewer, form: dict[str, str]) -> str:
        mode, step = form.get("mode", "resume"), form.get("step") or None
        options = {"resume": {}, "retry": {"retry": True}, "retry_step": {"retry_step": step}, "skip_step": {"skip_step": step}}
        if mode not in options:
            raise UsageError(f"unknown resume mode '{mode[:40]}'; one of: {', '.join(options)}")
        view = _resume(request, run_id, _model(Resume, **options[mode]), viewer.principal)  # type: ignore[arg-type]
        return f"Queued again by {viewer.name} ({mode.replace('_', ' ')}); the run is {view.state}."

    return await act(request, "run", _on_run(request, run_id, do))


# ---------------------------------------------------------------------- starting a run


@router.post("/runbooks/{name}/start")
async def start(request: Request, name: Annotated[str, Path(max_length=200)]) -> Response:
    from runbook_server.api_runs import _start
    from runbook_server.models import StartRun

    def handler(state: ServerState, viewer: Viewer, form: dict[str, str]) -> Response:
        rb = visible_runbook(state, viewer, name)
        values = {k.removeprefix("param."): v for k, v in form.items() if k.startswith("param.")}
        params, errors = params_from_form(rb.params_model.model_json_schema(), form)
        try:
            if errors:
                raise ParamsError(name, [f"{k}: {v}" for k, v in errors.items()])
            body = _model(StartRun, runbook=name, params=params)
            key = form.get("request_id", "")[:100] or None  # a form submitted twice starts one run
            view = _start(state, Response(), body, viewer.principal, f"console:{key}" if key else None)  # type: ignore[arg-type]
        except (ParamsError, AuthError) as exc:
            problems = exc.problems if isinstance(exc, ParamsError) else []
            by_field = {p.partition(":")[0]: p.partition(":")[2].strip() for p in problems}
            message = state.redactor.text(exc.message)
            return page(request, viewer, runbook_page(state, viewer, name, values, by_field, message, status_for(exc)))
        return done(viewer, f"/runs/{view.run_id}", f"Started run {view.run_id} of {name} as {viewer.name}.")

    return await act(request, "run", handler)


# ---------------------------------------------------------------------- storm guard


@router.post("/decisions/reset")
async def reset(request: Request) -> Response:
    from runbook_server.api_alerts import reset_breaker

    def handler(state: ServerState, viewer: Viewer, form: dict[str, str]) -> Response:
        route = form.get("route", "")
        reset_breaker(request, route, viewer.principal)
        return done(viewer, f"/decisions?route={route}", f"Circuit breaker of route '{route}' reset by {viewer.name}.")

    return await act(request, "admin", handler)


# ---------------------------------------------------------------------- login and logout


@router.post("/login")
async def login(request: Request) -> Response:
    """Trade a token for a session: a new session id (the pre-login one is dropped), the token's name and scopes."""
    state = get_state(request)
    sessions = sessions_of(request)
    pending = sessions.get(request.cookies.get(COOKIE))
    form: dict[str, str] = {}
    try:
        form = await read_form(request)
        check_form(request, pending, form)
        token = form.get("token", "").strip()
        if not token:
            raise AuthError("enter an API token")
        principal = state.tokens.authenticate(f"Bearer {token}")
    except Exception as exc:
        message = state.redactor.text(exc.message) if isinstance(exc, RunbookError) else "the form could not be read"
        cookie = None
        if pending is None:  # expired (or cookies were off): a fresh form that can be submitted
            cookie, pending = sessions.new(None)
        ctx = {**context(request, None), "csrf": pending.csrf, "next": local_path(form.get("next")), "error": message}
        refused = renderer_of(request).html("login.html", ctx, status=status_for(exc))
        set_cookie(state, request, refused, cookie)
        return refused
    if pending is not None:
        sessions.drop(pending)
    cookie, _session = sessions.new(principal)
    response = RedirectResponse(local_path(form.get("next")), status_code=303)
    set_cookie(state, request, response, cookie)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (and remove its cookie)."""

    def handler(state: ServerState, viewer: Viewer, form: dict[str, str]) -> Response:
        if viewer.session is not None:
            sessions_of(request).drop(viewer.session)
        response = RedirectResponse("/login" if state.tokens.enabled else "/", status_code=303)
        set_cookie(state, request, response, None, clear=True)
        return response

    return await act(request, "read", handler)
