"""Who is asking the console: bearer tokens, console logins (server-side sessions) and CSRF checks.

A login trades an API token for a session: a random id (256 bits) in an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` on HTTPS, or always with ``console.secure_cookie: always``). The server keeps only the
SHA-256 of the id, the token's name and scopes (never the token), a CSRF token, and the times that end the
session (``console.session_ttl`` after login, ``console.idle_timeout`` after last use). Sessions live in the
memory of the server process: a restart logs everybody out.

The identity a session acts as is the token's name: a person who logs in with their own token approves as
that name, exactly as the API records it. A request with ``Authorization: Bearer`` needs no session and no
CSRF token (a browser never adds that header on its own). Without any configured token (loopback only) the
console acts, like the API, as the server's actor, and still uses a session for its CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runbook_server.auth import ANONYMOUS, Principal
from runner.errors import AuthError

if TYPE_CHECKING:
    from fastapi import Request, Response

    from runbook_server.state import ServerState

__all__ = ["COOKIE", "Session", "Sessions", "Viewer", "check_form", "identify", "set_cookie"]

COOKIE = "runbook_console"
MAX_SESSIONS = 10000
"""Logged-in sessions kept at most (the oldest is dropped beyond): each needs a valid token to create."""
MAX_PENDING = 2000
"""Sessions not logged in yet (a login form's CSRF token) kept at most, apart from logged-in ones."""
PENDING_TTL = 1800.0


@dataclass
class Session:
    """One browser's session: who it is (None until login), its CSRF token, its age and its pending messages."""

    key: str
    csrf: str
    principal: Principal | None
    created: float
    seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)


def _key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "replace")).hexdigest()


class Sessions:
    """The console's sessions in this process (thread-safe)."""

    def __init__(self, *, ttl: float, idle: float) -> None:
        self.ttl, self.idle = ttl, idle
        self._lock = threading.Lock()
        self._by_key: dict[str, Session] = {}

    def new(self, principal: Principal | None) -> tuple[str, Session]:
        """A new session (its cookie value, never stored, and the session)."""
        cookie = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(_key(cookie), secrets.token_urlsafe(32), principal, now, now)
        with self._lock:
            self._evict(now, pending=principal is None)
            self._by_key[session.key] = session
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """The live session of ``cookie`` (its last use is now), or None."""
        if not cookie or len(cookie) > 200:
            return None
        now = time.time()
        with self._lock:
            session = self._by_key.get(_key(cookie))
            if session is None:
                return None
            if self._expired(session, now):
                del self._by_key[session.key]
                return None
            session.seen = now
            return session

    def drop(self, session: Session) -> None:
        """End ``session`` (logout, or replaced at login)."""
        with self._lock:
            self._by_key.pop(session.key, None)

    def __len__(self) -> int:
        return len(self._by_key)

    def _expired(self, session: Session, now: float) -> bool:
        if session.principal is None:
            return now - session.created > PENDING_TTL
        return now - session.created > self.ttl or now - session.seen > self.idle

    def _evict(self, now: float, *, pending: bool) -> None:
        """Drop expired sessions, then the oldest of the new one's kind while that kind is full."""
        for key in [k for k, s in self._by_key.items() if self._expired(s, now)]:
            del self._by_key[key]
        cap = MAX_PENDING if pending else MAX_SESSIONS
        same = sorted((s for s in self._by_key.values() if (s.principal is None) == pending), key=lambda s: s.seen)
        for old in same[: max(0, len(same) - cap + 1)]:
            del self._by_key[old.key]


@dataclass
class Viewer:
    """Who a console request is: the identity recorded for its actions, its scopes, and how it proved it."""

    name: str
    principal: Principal
    via: str
    """``session`` (a console login), ``bearer`` (an Authorization header) or ``open`` (no tokens configured)."""
    session: Session | None = None

    def can(self, scope: str) -> bool:
        """True if this viewer holds ``scope`` (``admin`` holds all; ``agent`` reads, runs and approves per policy)."""
        return self.principal.allows(scope)

    @property
    def csrf(self) -> str:
        """The CSRF token every form of this viewer carries (empty for bearer requests, which need none)."""
        return self.session.csrf if self.session is not None else ""


def sessions_of(request: Request) -> Sessions:
    """The console's session store of the app serving ``request``."""
    return request.app.state.console_sessions  # type: ignore[no-any-return]


def identify(state: ServerState, request: Request) -> tuple[Viewer | None, str | None]:
    """Who ``request`` is (None: must log in), and a new session cookie to set, if one was made.

    An ``Authorization`` header that is present must be valid (401 otherwise), as for the API.
    """
    header = request.headers.get("authorization")
    if header is not None and state.tokens.enabled:
        principal = state.tokens.authenticate(header)
        return Viewer(principal.name, principal, "bearer"), None
    sessions = sessions_of(request)
    session = sessions.get(request.cookies.get(COOKIE))
    if not state.tokens.enabled:
        cookie = None
        if session is None:
            cookie, session = sessions.new(ANONYMOUS)
        return Viewer(state.settings.actor, ANONYMOUS, "open", session), cookie
    if session is None or session.principal is None:
        return None, None
    return Viewer(session.principal.name, session.principal, "session", session), None


def own_origin(request: Request) -> str:
    """This server's origin as the browser sees it (scheme and the already checked ``Host``)."""
    return f"{request.url.scheme}://{request.headers.get('host', '').lower()}"


def check_form(request: Request, session: Session | None, form: dict[str, str], *, bearer: bool = False) -> None:
    """Refuse (403) a form POST that a page of another site could have made: CSRF token, ``Origin``, ``Sec-Fetch-Site``."""
    if bearer:
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise AuthError(f"form posts not made by this console's own pages are refused (Sec-Fetch-Site: {site[:40]})", status=403)
    origin = request.headers.get("origin")
    if origin is not None and origin.strip().lower().rstrip("/") != own_origin(request):
        raise AuthError(f"form posts from pages of origin '{origin[:100]}' are refused", status=403)
    sent = form.get("csrf_token", "")
    if session is None or not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise AuthError("the form's CSRF token is missing or does not match this session", status=403,
                        hint="reload the page and submit the form again")  # fmt: skip


def set_cookie(state: ServerState, request: Request, response: Response, cookie: str | None, *, clear: bool = False) -> None:
    """Set (or, ``clear``, remove) the session cookie on ``response``."""
    secure = request.url.scheme == "https" or state.config.console.secure_cookie == "always"
    if clear:
        response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
    elif cookie is not None:
        response.set_cookie(COOKIE, cookie, max_age=int(state.config.console.session_ttl), path="/", secure=secure, httponly=True,
                            samesite="strict")  # fmt: skip
