"""Request limits as a pure ASGI middleware, before any handler runs, and counters of long-lived requests.

For every POST/PUT/PATCH with a body: size (413), media type (415: only ``application/json``, optionally with
parameters such as ``; charset=utf-8``) and JSON sanity (400: invalid, or nested deeper than
``max_json_depth``). The body is read here (up to the limit) and replayed to the application, so a handler
never sees more than ``max_body_bytes``, and the parsed document is left in ``request.state.json_body`` for
the alert intake. Requiring JSON also means a browser cannot send these requests cross-site without a CORS
preflight (an HTML form can only send ``text/plain``, ``multipart/form-data`` or form-encoded bodies).
The web console's paths (``form_paths``) also take form-encoded bodies (its forms carry a CSRF token instead).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["LimitsMiddleware", "Slots", "is_json_media_type", "json_depth", "send_error"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting no further than ``limit + 1`` (iterative: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def is_json_media_type(value: str | None) -> bool:
    """True for ``application/json``, with or without parameters (``; charset=utf-8``)."""
    media = (value or "").partition(";")[0].strip().lower()
    return media == "application/json"


async def send_error(send: Send, status: int, kind: str, message: str, hint: str | None = None,
                     headers: dict[str, str] | None = None) -> None:  # fmt: skip
    """Answer with the API's JSON error body (for middleware, which runs outside the exception handlers)."""
    body = json.dumps({"error": {"type": kind, "message": message, "hint": hint, "status": status}}).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """Enforces ``max_body_bytes``, the JSON media type and ``max_json_depth`` for requests with a body."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int, form_paths: Callable[[str], bool] | None = None) -> None:
        self.app, self.max_body, self.max_depth = app, max_body_bytes, max_json_depth
        self.form_paths = form_paths

    def _form(self, scope: Scope, content_type: str | None) -> bool:
        """A form-encoded body sent to a console path (size-checked, not JSON)."""
        media = (content_type or "").partition(";")[0].strip().lower()
        return media == "application/x-www-form-urlencoded" and self.form_paths is not None and self.form_paths(str(scope.get("path", "")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await send_error(send, 413, "PayloadTooLarge", f"request body of {declared} bytes is over the limit of {self.max_body}")
            return
        body = await self._read(receive, send)
        if body is None:
            return
        if body and not self._form(scope, headers.get("content-type")):
            if not is_json_media_type(headers.get("content-type")):
                got = headers.get("content-type") or "none"
                await send_error(send, 415, "UnsupportedMediaType", f"request bodies must be JSON (Content-Type: application/json); got {got}",
                                 hint="send the header `Content-Type: application/json`")  # fmt: skip
                return
            problem = self._check_json(body, scope)
            if problem:
                await send_error(send, 400, "InvalidJSON", problem)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once a 413 was sent or the client went away."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_error(send, 413, "PayloadTooLarge", f"request body is over the limit of {self.max_body} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _check_json(self, body: bytes, scope: Scope) -> str | None:
        try:
            doc = json.loads(body)
        except RecursionError:
            return f"JSON body is nested too deeply (limit {self.max_depth})"
        except ValueError as exc:
            return f"request body is not valid JSON: {exc}"
        # A document cannot nest deeper than it has brackets: most deliveries are checked by two byte counts
        if body.count(b"{") + body.count(b"[") > self.max_depth and json_depth(doc, self.max_depth) > self.max_depth:
            return f"JSON body is nested deeper than {self.max_depth} levels"
        scope.setdefault("state", {})["json_body"] = doc
        return None


class Slots:
    """At most ``limit`` concurrent holders of something long-lived (waiting requests, event streams)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what = limit, what
        self.used = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a slot; False if all are taken."""
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self.used = max(0, self.used - 1)
