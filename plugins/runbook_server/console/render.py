"""Rendering console pages: the Jinja2 environment (autoescape always on), filters, and the security headers.

Every page is sent with a Content Security Policy that allows scripts, styles and connections from this
server only and no inline script or style at all (the one script is ``static/console.js``), refuses framing,
and is never cached (pages carry CSRF tokens and run data).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from runner._version import __version__

if TYPE_CHECKING:
    from fastapi.responses import HTMLResponse

__all__ = ["CSP", "HEADERS", "STATIC", "Renderer", "page_headers"]

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8", "favicon.svg": "image/svg+xml"}
"""The static files the console serves (by these exact names only)."""

STATE_WORDS = {
    "queued": "queued", "running": "running", "paused": "paused", "waiting": "waiting", "succeeded": "succeeded",
    "failed": "failed", "cancelled": "cancelled", "interrupted": "interrupted", "pending": "pending", "skipped": "skipped",
    "satisfied": "satisfied", "blocked": "blocked", "rolled_back": "rolled back", "unknown": "unknown", "not_started": "not started",
}  # fmt: skip


def page_headers() -> dict[str, str]:
    """The headers every console HTML response carries."""
    return dict(HEADERS)


def when(value: str | float | None) -> str:
    """An ISO time or epoch seconds as ``2026-12-07 12:38:50Z`` (UTC), or an em dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def pretty(value: Any) -> str:
    """A JSON value, indented (strings as they are)."""
    return value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, default=str)


class Renderer:
    """The console's templates and static files, loaded from this package."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,  # every template, whatever its name: nothing reaches a page unescaped
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, pretty=pretty, state_word=lambda s: STATE_WORDS.get(str(s), str(s)))
        self.static = {name: (HERE / "static" / name).read_bytes() for name in STATIC}
        digest = hashlib.sha256(b"".join(self.static.values())).hexdigest()[:12]
        from runbook_server.console.outputs import tail

        self.env.globals.update(version=__version__, asset=digest, tail=tail)

    def html(self, template: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
        """The rendered page with the console's security headers."""
        from fastapi.responses import HTMLResponse

        text = self.env.get_template(template).render(**context)
        return HTMLResponse(text, status_code=status, headers=page_headers())
