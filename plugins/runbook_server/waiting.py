"""Long-lived requests without threads: waiting for a run to settle, and the caps on waiters and streams.

A request with ``wait`` awaits :meth:`RunWatch.changed <runbook_server.state.RunWatch.changed>` on the event
loop and reads the run's state in short thread-pool calls, so waiting clients never hold the threads that serve
``/healthz``, the API and the webhooks. At most ``limits.max_waiters`` requests wait and ``limits.max_streams``
event streams are open at once; beyond that the answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException

from runner.store.records import RunState

if TYPE_CHECKING:
    from runbook_server.limits import Receive, Scope, Send, Slots
    from runbook_server.state import ServerState
    from runner.engine import RunView

__all__ = ["SETTLED", "HeldStream", "busy", "settled", "waiter_slot"]

SETTLED = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.PAUSED, RunState.WAITING, RunState.INTERRUPTED})
_POLL = 0.5  # runs driven by another process are noticed by polling at this interval
_COALESCE = 0.05  # a burst of events (a step starting and finishing) costs one read, not one per event


def busy(slots: Slots) -> HTTPException:
    """The 429 answer when every slot of ``slots`` is taken."""
    return HTTPException(429, f"too many {slots.what}: {slots.limit} already; retry later", headers={"Retry-After": "1"})


@contextlib.asynccontextmanager
async def waiter_slot(state: ServerState) -> AsyncIterator[None]:
    """Hold one of ``limits.max_waiters`` slots for the duration (429 if none is free)."""
    if not state.waiters.try_acquire():
        raise busy(state.waiters)
    try:
        yield
    finally:
        state.waiters.release()


async def settled(state: ServerState, run_id: str, seconds: float | None) -> RunView:
    """The run's view once it settles, or after ``seconds`` (capped by ``limits.max_wait``), or at shutdown."""
    engine = state.api_engine
    end = time.monotonic() + min(seconds or 0.0, state.config.limits.max_wait)
    run_state = (await run_in_threadpool(state.store.get_run, run_id)).state
    while run_state not in SETTLED and not state.shutdown.is_set():
        left = end - time.monotonic()
        if left <= 0:
            break
        await state.watch.changed(min(_POLL, left))
        await asyncio.sleep(min(_COALESCE, max(0.0, end - time.monotonic())))
        run_state = (await run_in_threadpool(state.store.get_run, run_id)).state
    return await run_in_threadpool(engine.view, run_id)


class HeldStream(StreamingResponse):
    """A streaming response that gives its slot back when it ends, however it ends (done, error, disconnect)."""

    def __init__(self, content: Any, *, release: Callable[[], None], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
