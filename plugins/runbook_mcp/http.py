"""MCP over Streamable HTTP at ``/mcp`` in ``runbook serve``: the SDK's transport, the server's tokens and wiring.

- **Transport**: the SDK's :class:`StreamableHTTPSessionManager` (stateful sessions, ``Mcp-Session-Id``; SSE
  streams resumable with ``Last-Event-ID`` from a bounded in-memory :class:`MemoryEventStore`), started on the
  first request (``runbook serve`` runs uvicorn without a lifespan) and stopped with the server.
- **Auth**: the ``Authorization: Bearer`` token of every request, checked by the server's
  :class:`~runbook_server.auth.TokenBook` (401 without a valid one); ``/mcp`` needs the ``agent`` scope (or
  ``admin``): 403 otherwise. A session is bound to the token that opened it (another token gets 404).
  The token's principal (:meth:`~runbook_server.auth.Principal.acting`) acts through the server's engines
  (:meth:`~runbook_server.state.ServerState.make_engine`), store, catalog and live agent policy, exactly as on
  ``/v1``. The Host/Origin defences (:mod:`runbook_server.browser`) wrap the whole app, ``/mcp`` included.
- **Tools, resources, prompt**: the same :class:`~runbook_mcp.server.RunbookMCP` handlers as stdio. The catalog
  is the server's, shared with ``/v1`` and the workers, and live (:class:`~runner.livecatalog.LiveCatalog`): a
  runbook file added, edited or removed is served from the next call, and open sessions hear
  ``tools/list_changed`` (their watchers look at most every second), as they do after a policy edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from runbook_mcp.server import RunbookMCP
from runbook_mcp.watch import files_stamp
from runner.session import Session

if TYPE_CHECKING:
    from mcp.types import JSONRPCMessage
    from runbook_server.state import ServerState

    from runner.api import Client
    from runner.authority import Principal
    from runner.catalog import Catalog
    from runner.cursor import CommandHint
    from runner.engine import Engine
    from runner.store.base import Store

__all__ = ["MCP_PATH", "McpEndpoint", "MemoryEventStore", "ServedSession", "mount"]

log = logging.getLogger("runbook.mcp")

MCP_PATH = "/mcp"
SCOPE = "agent"
"""The token scope ``/mcp`` needs (``admin`` implies it)."""
_PRINCIPAL = "runbook.principal"


class MemoryEventStore(EventStore):
    """The SSE events of the last :attr:`max_events` messages, for clients that reconnect with ``Last-Event-ID``."""

    def __init__(self, max_events: int = 10_000) -> None:
        self.max_events = max_events
        self._events: OrderedDict[str, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()
        self._streams: dict[StreamId, deque[str]] = {}
        self._next = 0

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Keep ``message`` (None: a priming event) under a new id."""
        self._next += 1
        event_id = f"{self._next}"
        self._events[event_id] = (stream_id, message)
        self._streams.setdefault(stream_id, deque()).append(event_id)
        while len(self._events) > self.max_events:
            _, (old_stream, _) = self._events.popitem(last=False)
            ids = self._streams.get(old_stream)
            if ids:
                ids.popleft()
                if not ids:
                    del self._streams[old_stream]
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        """Send the events of ``last_event_id``'s stream that came after it; None if that id is unknown (or gone)."""
        found = self._events.get(last_event_id)
        if found is None:
            return None
        stream_id = found[0]
        after = False
        for event_id in list(self._streams.get(stream_id, ())):
            if after:
                message = self._events[event_id][1]
                if message is not None:
                    await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream_id


class ServedSession(Session):
    """A :class:`~runner.session.Session` over a running server's pieces: its store, catalog and engines
    (which mask the server's credentials and feed its metrics and waiters), for one token's principal."""

    def __init__(self, state: ServerState, principal: Principal, actor: str) -> None:
        settings = dataclasses.replace(state.settings, actor=actor)
        super().__init__(settings, host=state.host, principal=principal, policy=state.live_policy, holder_kind="mcp")
        self.server = state

    @property
    def store(self) -> Store:
        """The server's store."""
        return self.server.store

    @property
    def catalog(self) -> Catalog:
        """The server's catalog (it notices changed runbook files by itself)."""
        return self.server.catalog

    def reload(self) -> None:
        """Look at the server's runbook files now."""
        from runner.livecatalog import LiveCatalog

        if isinstance(self.server.catalog, LiveCatalog):
            self.server.catalog.refresh()

    def engine(self, hint: CommandHint | None = None, *, holder_kind: str | None = None) -> Engine:
        """One of the server's engines, acting for this session's principal."""
        from runner.cursor import CommandHint

        engine = self.server.make_engine(holder_kind or self.holder_kind)
        engine.principal, engine.policy = self.principal, self.policy
        engine.hint = hint or CommandHint()
        return engine

    def close(self) -> None:
        """The server closes its store."""


class HttpBackend:
    """Who acts for an HTTP request: the principal of its token, through the server's wiring."""

    def __init__(self, state: ServerState) -> None:
        from runner.durations import parse_duration

        self.state = state
        self.budget_text = "20s"
        self.default_budget = parse_duration(self.budget_text)
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()

    def client(self, ctx: Any) -> Client:
        """The client of the token that sent the request (authenticated by :class:`McpEndpoint`)."""
        from runner.api import Client
        from runner.errors import AuthError

        request = getattr(ctx, "request", None)
        token = request.scope.get(_PRINCIPAL) if request is not None else None
        if token is None:
            raise AuthError("no authenticated principal for this MCP request")
        with self._lock:
            client = self._clients.get(token.name)
            if client is None:
                actor = token.name if self.state.tokens.enabled else self.state.settings.actor
                client = self._clients[token.name] = Client.over(ServedSession(self.state, token.acting(), actor), holder_kind="mcp")
            return client

    def stamp(self) -> object:
        """The server catalog's generation (it reloads itself, at most every second, when its files change: see
        :class:`~runner.livecatalog.LiveCatalog`) and the policy file's stamp."""
        from runner.livecatalog import LiveCatalog

        catalog = self.state.catalog
        generation = 0
        if isinstance(catalog, LiveCatalog):
            catalog.refresh(now=False)
            generation = catalog.generation
        policy = self.state.live_policy
        return generation, files_stamp([policy.path]) if policy is not None and policy.path else ()

    def redact(self, text: str) -> str:
        """Mask the server's credentials."""
        return self.state.redactor.text(text)


class McpEndpoint:
    """The ASGI app at ``/mcp``: authentication, then the SDK's session manager (started on first use)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.mcp = RunbookMCP(HttpBackend(state))
        self.manager = StreamableHTTPSessionManager(app=self.mcp.server, event_store=MemoryEventStore(), retry_interval=1000,
                                                    max_sessions=1000)  # fmt: skip
        self._started: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from runbook_server.auth import TokenBook
        from runbook_server.limits import send_error

        from runner.alerts import AuthError

        try:
            principal = self.state.tokens.authenticate(_header(scope, b"authorization"))
            TokenBook.authorize(principal, SCOPE)
        except AuthError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            await send_error(send, exc.status, "AuthError", exc.message, exc.hint, headers=headers)
            return
        scope[_PRINCIPAL] = principal
        scope["user"] = _user(principal)  # the SDK binds a session to the credential that opened it
        await self._ensure_started()
        await self.manager.handle_request(scope, receive, send)

    async def _ensure_started(self) -> None:
        if self._started is None:
            loop = asyncio.get_running_loop()
            self._started = loop.create_future()
            self._task = loop.create_task(self._serve(self._started), name="runbook-mcp-sessions")
        await asyncio.shield(self._started)

    async def _serve(self, started: asyncio.Future[None]) -> None:
        """Run the session manager until the server stops; then pause the runs still being driven."""
        try:
            async with self.manager.run():
                started.set_result(None)
                while not self.state.shutdown.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 0.25)
                    if self._stop.is_set():
                        break
                await anyio.to_thread.run_sync(self._pause_inflight)
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
            log.exception("the MCP session manager stopped")

    def _pause_inflight(self) -> None:
        from runbook_mcp.driving import pause_quietly

        for future, (client, call) in list(self.mcp.inflight.items()):
            if not future.done():
                pause_quietly(client, call, "the server is stopping")


def _header(scope: Any, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _user(principal: Any) -> Any:
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken

    return AuthenticatedUser(AccessToken(token="-", client_id=principal.name, scopes=sorted(principal.scopes)))


def mount(app: Any, state: ServerState) -> McpEndpoint:
    """Serve MCP at ``/mcp`` of ``app`` (the FastAPI app of ``runbook serve``)."""
    endpoint = McpEndpoint(state)
    app.router.add_route(MCP_PATH, endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    return endpoint
