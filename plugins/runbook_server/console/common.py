"""What every console route shares: who is asking, the common page context, error pages, redirects."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from fastapi.responses import RedirectResponse

from runbook_server.app import get_state, status_for
from runbook_server.console.session import Viewer, identify, set_cookie
from runner.errors import AuthError, RunbookError

if TYPE_CHECKING:
    from fastapi import Request, Response

    from runbook_server.console.render import Renderer
    from runbook_server.state import ServerState

__all__ = ["Built", "error_page", "local_path", "login_redirect", "page", "renderer_of", "respond"]

log = logging.getLogger("runbook.server")

Built = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], int]
"""A page to render: (template, context[, status])."""


def renderer_of(request: Request) -> Renderer:
    """The console's renderer of the app serving ``request``."""
    return request.app.state.console_renderer  # type: ignore[no-any-return]


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this server (``/...``, not ``//host``), else ``default``: no open redirects."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


def login_redirect(request: Request) -> RedirectResponse:
    """Send a visitor who is not logged in to the login page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def context(request: Request, viewer: Viewer | None, **extra: Any) -> dict[str, Any]:
    """The context every template gets: the viewer, its CSRF token, pending messages and the current path."""
    flash: list[tuple[str, str]] = []
    if viewer is not None and viewer.session is not None:
        flash, viewer.session.flash = viewer.session.flash, []
    state = get_state(request)
    return {"viewer": viewer, "csrf": viewer.csrf if viewer else "", "flash": flash, "path": request.url.path,
            "tokens_enabled": state.tokens.enabled, "error": None, **extra}  # fmt: skip


def error_page(request: Request, viewer: Viewer | None, exc: BaseException) -> Response:
    """An HTML page for an error, with the status the API would answer (messages masked, never a traceback)."""
    state = get_state(request)
    status = status_for(exc)
    if isinstance(exc, RunbookError):
        message, hint = state.redactor.text(exc.message), state.redactor.text(exc.hint) if exc.hint else None
    else:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
        message, hint = "internal error; see the server log", None
    kind = type(exc).__name__ if isinstance(exc, RunbookError) else "InternalError"
    ctx = context(request, viewer, status=status, kind=kind, message=message, hint=hint)
    return renderer_of(request).html("error.html", ctx, status=status)


def respond(request: Request, scope: str, build: Callable[[ServerState, Viewer], Built | Response]) -> Response:
    """Identify the viewer, require ``scope``, build the page; errors become HTML error pages with the API's status."""
    state = get_state(request)
    try:
        viewer, cookie = identify(state, request)
    except AuthError as exc:
        return error_page(request, None, exc)
    if viewer is None:
        return login_redirect(request)
    try:
        if not viewer.can(scope):
            raise AuthError(f"token '{viewer.name}' lacks the '{scope}' scope", status=403)
        built = build(state, viewer)
    except Exception as exc:
        return error_page(request, viewer, exc)
    response = built if not isinstance(built, tuple) else page(request, viewer, built)
    set_cookie(state, request, response, cookie)
    return response


def page(request: Request, viewer: Viewer, built: Built) -> Response:
    """Render a built page."""
    template, ctx = built[0], built[1]
    status = built[2] if len(built) == 3 else 200
    return renderer_of(request).html(template, context(request, viewer, **ctx), status=status)
