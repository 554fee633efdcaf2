"""The FastAPI application: routers, auth dependencies, error mapping, limits, health and metrics.

Every error reaches the client as ``{"error": {type, message, hint, status, problems?}}``; an unexpected
exception is logged (secrets masked) and answered 500 without a stack trace.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from runbook_server.auth import Principal
from runbook_server.browser import BrowserGuard
from runbook_server.limits import LimitsMiddleware
from runner._version import __version__
from runner.alerts import AuthError
from runner.errors import ConflictError, ParamsError, PolicyDenied, RunbookError, RunbookNotFound, RunNotFound, StoreError, ValidationError

if TYPE_CHECKING:
    from runbook_server.state import ServerState

__all__ = ["create_app", "get_state", "scope"]

log = logging.getLogger("runbook.server")
_bearer = HTTPBearer(auto_error=False, description="API token (see `tokens:` in the server config)")
_BEARER = Depends(_bearer)  # declares the scheme in /openapi.json; the token itself is checked by TokenBook


def get_state(request: Request) -> ServerState:
    """The server state of the app handling ``request``."""
    return request.app.state.runbook  # type: ignore[no-any-return]


def scope(name: str) -> Any:
    """A dependency that authenticates the bearer token and requires scope ``name``."""

    def dependency(request: Request, _creds: HTTPAuthorizationCredentials | None = _BEARER) -> Principal:
        state = get_state(request)
        principal = state.tokens.authenticate(request.headers.get("authorization"))
        state.tokens.authorize(principal, name)
        return principal

    return Depends(dependency)


def status_for(exc: BaseException) -> int:
    """HTTP status of an error."""
    if isinstance(exc, AuthError):
        return exc.status
    if isinstance(exc, PolicyDenied):
        return 403
    if isinstance(exc, RunNotFound | RunbookNotFound):
        return 404
    if isinstance(exc, ParamsError | ValidationError):
        return 422
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, RunbookError):
        return 400 if exc.exit_code == 2 else 500
    return 500


def error_response(exc: BaseException, state: ServerState | None = None) -> JSONResponse:
    """The JSON error answer for ``exc``."""
    status = status_for(exc)
    if isinstance(exc, RunbookError):
        message, hint = exc.message, exc.hint
    else:
        message, hint = "internal error; see the server log", None
    if state is not None:
        message = state.redactor.text(message)
        hint = state.redactor.text(hint) if hint else hint
    body: dict[str, Any] = {"type": type(exc).__name__ if isinstance(exc, RunbookError) else "InternalError",
                            "message": message, "hint": hint, "status": status}  # fmt: skip
    if isinstance(exc, ParamsError):
        body["problems"] = exc.problems
    elif isinstance(exc, ValidationError):
        body["problems"] = [p.as_dict() for p in exc.problems]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    doc: dict[str, Any] = {"error": body}
    nxt = getattr(exc, "next", None)
    if nxt is not None:  # a conflict says what to do about it (which run holds the lock), like every surface
        doc["next"] = nxt.model_dump(mode="json")
    return JSONResponse(doc, status_code=status, headers=headers)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RunbookError)
    async def runbook_error(request: Request, exc: RunbookError) -> JSONResponse:
        if status_for(exc) >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(exc, get_state(request))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        first = problems[0] if problems else {"where": "", "message": "invalid request"}
        body = {"type": "InvalidRequest", "message": f"{first['where']}: {first['message']}", "hint": None, "status": 422,
                "problems": problems}  # fmt: skip
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"type": {404: "NotFound", 429: "TooManyRequests"}.get(exc.status_code, "HTTPError"), "message": str(exc.detail), "hint": None,
                "status": exc.status_code}  # fmt: skip
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RecursionError):  # a structure too deep for some parser or model: the request's fault
            body = {"type": "InvalidJSON", "message": "the request is nested too deeply", "hint": None, "status": 400}
            return JSONResponse({"error": body}, status_code=400)
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
        return error_response(exc, get_state(request))


def create_app(state: ServerState) -> FastAPI:
    """The application serving ``state``."""
    from runbook_server import api_alerts, api_runs, api_schedules

    app = FastAPI(title="runbook", version=__version__, description="Executable runbooks over HTTP: start, watch and steer "
                  "durable runs; alert webhooks start routed runbooks. See docs/server.md.",
                  responses={401: {"model": _error_model()}, 403: {"model": _error_model()}})  # fmt: skip
    app.state.runbook = state
    _handlers(app)
    app.include_router(api_alerts.make_router(state))  # first: routes are matched in order, and webhooks are the busiest
    app.include_router(api_runs.router)
    app.include_router(api_schedules.router)
    _ops(app)
    _mcp(app, state)
    config = state.config
    console = None
    if config.console.enabled:  # the web console at / (docs/console.md): its forms are form-encoded and same-origin
        from runbook_server.console import is_console_path, mount

        mount(app, state)
        console = is_console_path
    app.add_middleware(LimitsMiddleware, max_body_bytes=config.limits.max_body_bytes, max_json_depth=config.limits.max_json_depth,
                       form_paths=console)  # fmt: skip
    app.add_middleware(BrowserGuard, listen_host=state.listen[0], allowed_hosts=config.allowed_hosts,  # outermost: first check
                       allowed_origins=config.allowed_origins, same_origin_paths=console)  # fmt: skip
    return app


def _mcp(app: FastAPI, state: ServerState) -> None:
    """MCP over Streamable HTTP at ``/mcp`` (docs/agents.md), when the ``agent`` extra (the mcp SDK) is installed."""
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        log.info("no /mcp endpoint: the mcp SDK is not installed (pip install 'runbook[agent]')")
        return
    from runbook_mcp.http import mount

    mount(app, state)


def _error_model() -> type:
    from runbook_server.models import ErrorBody

    return ErrorBody


def _ops(app: FastAPI) -> None:
    @app.get("/healthz", tags=["ops"], summary="Liveness and store reachability")
    def healthz(request: Request) -> dict[str, Any]:
        state = get_state(request)
        try:
            depth = state.store.queue_depth()
        except Exception as exc:  # any driver error means the store is not reachable: 503, not 500
            raise StoreError(f"the journal store does not answer: {type(exc).__name__}") from None
        pool = state.pool
        return {"status": "ok", "version": __version__, "queue_depth": depth, "workers": pool.size if pool else 0,
                "workers_busy": pool.busy if pool else 0, "stopping": state.shutdown.is_set()}  # fmt: skip

    metrics_dep: Any = scope("read")

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (text format 0.0.4)", response_class=PlainTextResponse,
             dependencies=[metrics_dep])  # fmt: skip
    def metrics(request: Request) -> PlainTextResponse:
        state = get_state(request)
        pool = state.pool
        text = state.metrics.render(state.store, busy=pool.busy if pool else 0, workers=pool.size if pool else 0)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
