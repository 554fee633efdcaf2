"""One watcher per MCP connection: ``list_changed`` when the catalog or the policy changes, ``resources/updated``
when a subscribed run changes state.

It polls cheaply while the connection is open (the backend's stamp of the runbook files and the policy file
every :data:`STAMP_EVERY` seconds; the state of subscribed runs every :data:`RUNS_EVERY` seconds) and
ends with the connection (the SDK unwinds the connection's exit stack).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio

from runner.livecatalog import files_stamp

if TYPE_CHECKING:
    from runbook_mcp.server import RunbookMCP
    from runner.api import Client

__all__ = ["RUNS_EVERY", "STAMP_EVERY", "Watch", "files_stamp", "stop_all", "watch_of"]

log = logging.getLogger("runbook.mcp")

STAMP_EVERY = 1.0
RUNS_EVERY = 0.25
_KEY = "runbook.watch"


class Watch:
    """What one connection listens to, and the task that tells it."""

    def __init__(self, mcp: RunbookMCP, session: Any) -> None:
        self.mcp, self.session = mcp, session
        self.client: Client | None = None
        self.subs: dict[str, tuple[str, str]] = {}
        """URI → (run id, last state seen)."""
        self.stamp: object = None
        self.task: asyncio.Task[None] | None = None

    def subscribe(self, uri: str, run_id: str, state: str) -> None:
        """Tell the client when the run at ``uri`` leaves ``state``."""
        self.subs[uri] = (run_id, state)

    def unsubscribe(self, uri: str) -> None:
        """Stop telling."""
        self.subs.pop(uri, None)

    async def run(self) -> None:
        """Poll until cancelled (the connection closed)."""
        ticks = 0
        per_stamp = max(1, round(STAMP_EVERY / RUNS_EVERY))
        while True:
            await anyio.sleep(RUNS_EVERY)
            ticks += 1
            try:
                if self.subs:
                    await self._runs()
                if ticks % per_stamp == 0:
                    await self._catalog()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            except Exception as exc:  # never let the watcher take the connection down
                log.warning("MCP watcher: %s: %s", type(exc).__name__, exc)

    async def _catalog(self) -> None:
        stamp = await self.mcp.in_thread(self.mcp.backend.stamp)
        if self.stamp is not None and stamp != self.stamp:
            await self.session.send_tool_list_changed()
            await self.session.send_resource_list_changed()
        self.stamp = stamp

    async def _runs(self) -> None:
        from runbook_mcp.resources import run_state

        client = self.client
        if client is None:
            return
        for uri, (run_id, last) in list(self.subs.items()):
            try:
                state = await self.mcp.in_thread(run_state, client, run_id)
            except Exception:  # gone, or no longer readable (a policy edit): stop telling
                self.subs.pop(uri, None)
                continue
            if state != last and uri in self.subs:
                self.subs[uri] = (run_id, state)
                await self.session.send_resource_updated(uri)


def watch_of(mcp: RunbookMCP, ctx: Any) -> Watch | None:
    """The watcher of the connection ``ctx`` belongs to, started when the session is initialized (or on its first
    request, if that comes first)."""
    connection = getattr(ctx.session, "_connection", None)  # the SDK's per-connection object (state, exit_stack)
    if connection is None:
        return None
    watch: Watch | None = connection.state.get(_KEY)
    if watch is None:
        watch = Watch(mcp, ctx.session)
        connection.state[_KEY] = watch
        watch.task = asyncio.get_running_loop().create_task(watch.run(), name="runbook-mcp-watch")
        mcp.watches.add(watch)

        def stop() -> None:
            mcp.watches.discard(watch)
            if watch.task is not None:
                watch.task.cancel()

        connection.exit_stack.callback(stop)
    return watch


async def stop_all(mcp: RunbookMCP) -> None:
    """Cancel every watcher (the server stops)."""
    for watch in list(mcp.watches):
        if watch.task is not None:
            watch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch.task
