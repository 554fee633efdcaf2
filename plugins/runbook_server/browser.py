"""Defences against web pages the operator's browser visits: DNS rebinding (Host) and cross-site requests (Origin).

A page on ``https://evil.example`` can make the browser send requests to ``http://127.0.0.1:8080``, and with
DNS rebinding (``evil.example`` re-resolved to 127.0.0.1) even read the answers. The default server has no
tokens, so the request itself is the only thing to check:

- ``Host`` must name this server: a loopback name or address, the listen address, or an entry of
  ``allowed_hosts`` — a rebound page sends ``Host: evil.example`` (400);
- a request carrying an ``Origin`` header comes from a browser page; it is served only if that origin is in
  ``allowed_origins`` (default: none), whatever its method (403).

API clients (curl, SDKs, Alertmanager, agents) send no ``Origin`` and the address they connect to as
``Host``, so they are unaffected. The web console's own pages post their forms to the console's paths
(``same_origin_paths``): there, a request whose ``Origin`` is this server's own origin (the request's scheme
and its ``Host``, already checked) is served too; the API under ``/v1`` still needs ``allowed_origins``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from runbook_server.config import is_loopback
from runbook_server.limits import ASGIApp, Receive, Scope, Send, send_error

__all__ = ["BrowserGuard", "host_name"]


def host_name(value: str) -> str:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower-case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


class BrowserGuard:
    """Refuses requests for other host names (400) and from browser origins not configured (403)."""

    def __init__(self, app: ASGIApp, *, listen_host: str, allowed_hosts: Collection[str], allowed_origins: Collection[str],
                 same_origin_paths: Callable[[str], bool] | None = None) -> None:  # fmt: skip
        self.app = app
        self.same_origin_paths = same_origin_paths
        self.any_host = "*" in allowed_hosts
        self.hosts = {h for h in allowed_hosts if not h.startswith("*")} | {host_name(listen_host)}
        self.suffixes = tuple(h[1:] for h in allowed_hosts if h.startswith("*."))
        self.origins = frozenset(allowed_origins)

    def host_allowed(self, raw: str | None) -> bool:
        """True if the ``Host`` header names this server."""
        if self.any_host:
            return True
        if not raw:
            return False
        host = host_name(raw)
        return is_loopback(host) or host in self.hosts or (bool(self.suffixes) and host.endswith(self.suffixes))

    def _own(self, scope: Scope, origin: str, host: str) -> bool:
        """True for a console path requested by a page of this server itself (its own scheme and ``Host``)."""
        if self.same_origin_paths is None or not self.same_origin_paths(str(scope.get("path", ""))):
            return False
        return origin.strip().lower().rstrip("/") == f"{scope.get('scheme', 'http')}://{host.strip().lower()}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host")
        if not self.host_allowed(host):
            shown = host_name(host)[:100] if host else "none"
            await send_error(send, 400, "InvalidHost", f"Host '{shown}' is not a name of this server",
                             hint="clients must use a loopback address or the listen address; add other names to allowed_hosts "
                                  "in the server config")  # fmt: skip
            return
        origin = headers.get("origin")
        if origin is not None and origin.strip().lower().rstrip("/") not in self.origins and not self._own(scope, origin, host or ""):
            await send_error(send, 403, "ForbiddenOrigin", f"requests from browser pages of origin '{origin[:100]}' are refused",
                             hint="add the origin to allowed_origins in the server config if that page may use this API")  # fmt: skip
            return
        await self.app(scope, receive, send)
