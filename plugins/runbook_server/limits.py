"""Request limits as a pure ASGI middleware: body size (413) and JSON sanity (400) before any handler runs.

The body is read here (up to the limit) and replayed to the application, so a handler never sees more than
``max_body_bytes``; a JSON body that is invalid or nested deeper than ``max_json_depth`` is refused with a
clear 400, and the parsed document is left in ``request.state.json_body`` for the alert intake.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["LimitsMiddleware", "json_depth"]

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


async def _error(send: Send, status: int, kind: str, message: str) -> None:
    body = json.dumps({"error": {"type": kind, "message": message, "hint": None, "status": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """Enforces ``max_body_bytes`` and ``max_json_depth`` for requests with a body."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app, self.max_body, self.max_depth = app, max_body_bytes, max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await _error(send, 413, "PayloadTooLarge", f"request body of {declared} bytes is over the limit of {self.max_body}")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _error(send, 413, "PayloadTooLarge", f"request body is over the limit of {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body.strip() and "json" in headers.get("content-type", "json"):
            problem = self._check_json(body, scope)
            if problem:
                await _error(send, 400, "InvalidJSON", problem)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _check_json(self, body: bytes, scope: Scope) -> str | None:
        try:
            doc = json.loads(body)
        except RecursionError:
            return f"JSON body is nested too deeply (limit {self.max_depth})"
        except ValueError as exc:
            return f"request body is not valid JSON: {exc}"
        if json_depth(doc, self.max_depth) > self.max_depth:
            return f"JSON body is nested deeper than {self.max_depth} levels"
        scope.setdefault("state", {})["json_body"] = doc
        return None
