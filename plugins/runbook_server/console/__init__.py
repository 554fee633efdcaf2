"""The web console of ``runbook serve``: server-rendered pages at ``/`` over the same engine, store and checks as ``/v1``.

Pages (:mod:`.pages`) and form actions (:mod:`.actions`) are plain FastAPI routes rendering Jinja2 templates
(autoescaped) shipped in this package, with one small JavaScript file for live updates (Server-Sent Events).
Who a request is comes from :mod:`.session`: an ``Authorization: Bearer`` token, or a console login that traded
a token for a server-side session (HttpOnly, SameSite=Strict cookie; every form carries the session's CSRF
token). Every action calls the same functions as the HTTP API, so scopes, the agent policy and the approval
rules hold alike. See ``docs/console.md``.

Imported only by :func:`runbook_server.app.create_app` (``runbook serve``), never at CLI start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from runbook_server.state import ServerState

__all__ = ["CONSOLE_PREFIXES", "is_console_path", "mount"]

CONSOLE_PREFIXES = ("/login", "/logout", "/runs", "/runbooks", "/decisions", "/schedules", "/static/")
"""Paths the console serves besides ``/`` (the API is under ``/v1``; nothing here starts with it)."""


def is_console_path(path: str) -> bool:
    """True for a path of the console (its forms may be form-encoded and posted by its own pages)."""
    return path == "/" or path.startswith(CONSOLE_PREFIXES)


def mount(app: FastAPI, state: ServerState) -> None:
    """Add the console's routes to ``app`` (sessions live in this process's memory)."""
    from runbook_server.console import actions, pages
    from runbook_server.console.render import Renderer
    from runbook_server.console.session import Sessions

    spec = state.config.console
    app.state.console_sessions = Sessions(ttl=spec.session_ttl, idle=spec.idle_timeout)
    app.state.console_renderer = Renderer()
    app.include_router(pages.router)
    app.include_router(actions.router)
