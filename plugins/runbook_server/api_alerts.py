"""``/v1/alerts/<source>`` (one route per enabled alert source), ``/v1/alerts/decisions``, breaker reset."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from runbook_server.app import error_response, get_state, scope, status_for
from runbook_server.intake import Intake
from runbook_server.models import DecisionList, DeliveryResult
from runner.alerts import DECISIONS, AuthError, NewDecision
from runner.errors import RunbookError, UsageError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from runbook_server.auth import Principal
    from runbook_server.state import EnabledSource, ServerState

__all__ = ["make_router"]

log = logging.getLogger("runbook.server")

_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


def _outcome(exc: BaseException | None, result: dict[str, Any] | None) -> str:
    if exc is None:
        return "duplicate" if result and result.get("duplicate") else "accepted"
    status = status_for(exc)
    return {401: "unauthorized", 403: "forbidden", 409: "conflict", 413: "too_large"}.get(status, "invalid" if status < 500 else "error")


def _intake_endpoint(name: str, intake: Intake) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def receive_alerts(request: Request) -> JSONResponse:
        state = get_state(request)
        enabled: EnabledSource = state.sources[name]
        result: dict[str, Any] | None = None
        try:
            raw = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            if enabled.auth is not None:
                enabled.source.verify(raw, headers, enabled.auth)
            body = getattr(request.state, "json_body", None)
            if body is None:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise UsageError("the delivery body is not JSON") from None
            result = await run_in_threadpool(intake.handle, enabled, raw, headers, body)
        except Exception as exc:
            state.metrics.delivery(name, _outcome(exc, None))
            if not isinstance(exc, RunbookError):
                log.error("alert delivery to %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=exc)
            if isinstance(exc, AuthError):
                _log_refusal(name, request, exc)
            return error_response(exc, state)
        state.metrics.delivery(name, _outcome(None, result))
        if result.get("duplicate"):  # the first answer, as stored (possibly by an earlier release): in today's shape
            result = DeliveryResult.model_validate(result).model_dump(mode="json")
        return JSONResponse(result)  # built in the DeliveryResult shape by the intake

    receive_alerts.__name__ = f"receive_{name}_alerts"
    return receive_alerts


def _log_refusal(name: str, request: Request, exc: AuthError) -> None:
    """Log a refused delivery (the message never holds a credential)."""
    client = request.client.host if request.client else "?"
    log.warning("refused %s delivery from %s: %s", name, client, exc.message)


def make_router(state: ServerState) -> APIRouter:
    """Routes for every enabled source, the decisions list and the breaker reset."""
    router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
    intake = Intake(state)
    for name, enabled in sorted(state.sources.items()):
        auth = "authenticated by the source's own scheme" if enabled.auth is not None else "no auth configured (loopback only)"
        router.add_api_route(f"/{name}", _intake_endpoint(name, intake), methods=list(enabled.source.methods),
                             response_model=DeliveryResult, summary=f"Webhook for {name} ({auth})", openapi_extra=_BODY)  # fmt: skip
    router.add_api_route("/decisions", list_decisions, methods=["GET"], response_model=DecisionList, dependencies=[scope("read")],
                         summary="Recorded alert decisions, newest first")  # fmt: skip
    router.add_api_route("/routes/{route}/reset", reset_breaker, methods=["POST"], response_model=DecisionList,
                         summary="Close a route's circuit breaker (admin)")  # fmt: skip
    return router


def list_decisions(request: Request, route: str | None = None, source: str | None = None, decision: str | None = None,
                   run_id: str | None = None, before: int | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:  # fmt: skip
    """Decisions filtered by route, source, decision or run."""
    if decision is not None and decision not in DECISIONS:
        raise UsageError(f"unknown decision '{decision}'; one of: {', '.join(DECISIONS)}")
    rows = get_state(request).store.list_decisions(route=route, source=source, decision=decision, run_id=run_id, limit=limit, before=before)
    return {"decisions": rows, "next_before": rows[-1].id if len(rows) == limit else None}


_ADMIN = scope("admin")


def reset_breaker(request: Request, route: str, principal: Principal = _ADMIN) -> dict[str, Any]:
    """Record a ``breaker_reset`` decision: failures before it no longer count."""
    state = get_state(request)
    if route not in state.router.by_name:
        raise UsageError(f"no route named '{route}'", hint=f"routes: {', '.join(state.router.by_name) or 'none'}")
    delivery = f"api:reset:{route}:{time.time_ns()}"
    rows = state.store.record_decisions(
        [NewDecision(delivery, 0, "api", "breaker_reset", route=route, reason=f"reset by {principal.name}")]
    )
    return {"decisions": rows, "next_before": None}
