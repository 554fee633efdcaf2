"""Driving tool calls: progress per step boundary, cancellation at the next boundary, the hard deadline.

A driving call (``start_run``, ``resume_run``) runs in a worker thread. While it runs:

- every step boundary of the driven run (a ``step.finished`` event, told by the engine's in-process observers,
  or read from the journal once a detached executor holds the step) becomes a ``notifications/progress``
  (``n`` of ``m`` steps done, the step and the seconds elapsed) when the client gave a ``progressToken``;
- a ``notifications/cancelled`` for the call cancels the waiting handler: the run is asked to pause as the
  agent (journaled as a pause by the agent), the drive stops at the next step boundary, and the call
  ends at once (a cancelled request gets no result);
- the call returns by its deadline even if a step without a declared duration still runs (see ``overran``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import anyio

from runner.errors import RunbookError
from runner.store.records import DONE_STEP_STATES

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runbook_mcp.tools import Call, ToolSpec
    from runner.api import Client
    from runner.store.records import Event, RunRecord

__all__ = ["MARGIN", "drive", "overran_view", "pause_quietly"]

log = logging.getLogger("runbook.mcp")

MARGIN = 0.05
"""Seconds before the deadline at which a call that is still executing returns the run's state instead."""
_POLL = 0.2
"""Seconds between reads of the journal while a detached executor (another process) runs the step."""

Report = Callable[[float, float | None, str], Awaitable[None]]
InThread = Callable[..., Awaitable[Any]]


class Progress:
    """Turns the drive's step boundaries into progress reports, in order, on the event loop."""

    def __init__(self, client: Client, call: Call, report: Report | None, in_thread: InThread) -> None:
        self.client, self.call, self.report, self.in_thread = client, call, report, in_thread
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, str, str] | None] = asyncio.Queue()
        self.seen: set[int] = set()
        self.polling = False
        self.last_seq = 0
        self.sent = 0.0
        self.began = time.monotonic()

    def observe(self, event: Event, _run: RunRecord) -> None:
        """An engine observer (called in the drive's thread)."""
        if event.run_id != self.call.run_id:
            return
        if event.type == "run.handed_over":  # a detached executor (another process) runs the step: read the journal
            self.polling = True
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (event.seq, "", ""))
        elif event.type == "step.finished" and event.step_id and "target" not in event.data:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (event.seq, event.step_id, str(event.data.get("state", ""))))

    async def run(self, done: anyio.Event) -> None:
        """Send a report per boundary until ``done``; then send what is left."""
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), _POLL)
            except TimeoutError:
                item = None
            if item is not None:
                await self._boundary(*item)
            if self.polling:
                for ev in await self.in_thread(self._journal_boundaries):
                    await self._boundary(ev.seq, ev.step_id or "", str(ev.data.get("state", "")))
            if done.is_set() and self.queue.empty():
                return

    def _journal_boundaries(self) -> list[Event]:
        if self.call.run_id is None:
            return []
        events = self.client.store.events(self.call.run_id, after=self.last_seq, types=("step.finished",), limit=1000)
        if events:
            self.last_seq = events[-1].seq
        return [e for e in events if "target" not in e.data]

    async def _boundary(self, seq: int, step: str, state: str) -> None:
        self.last_seq = max(self.last_seq, seq)
        if not step or seq in self.seen or self.report is None or self.call.run_id is None:
            return
        self.seen.add(seq)
        steps = await self.in_thread(self.client.store.get_steps, self.call.run_id)
        done = sum(1 for s in steps if s.state in DONE_STEP_STATES)
        progress = float(done) if done > self.sent else self.sent + 1
        self.sent = progress
        elapsed = time.monotonic() - self.began
        await self.report(progress, float(max(len(steps), progress)),
                          f"step '{step}' {state} ({done} of {len(steps)} steps done, {elapsed:.1f}s elapsed)")  # fmt: skip


async def drive(client: Client, spec: ToolSpec, args: dict[str, Any], call: Call, *, submit: Callable[..., Future[Any]],
                in_thread: InThread, report: Report | None, inflight: dict[Future[Any], tuple[Client, Call]]) -> BaseModel:  # fmt: skip
    """Run the driving tool ``spec``; progress, cancellation and the hard deadline as the module doc says."""
    progress = Progress(client, call, report, in_thread)
    call.observers.append(progress.observe)
    future = submit(spec.call, client, args, call)
    inflight[future] = (client, call)
    future.add_done_callback(lambda f: inflight.pop(f, None))
    finished = anyio.Event()
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(progress.run, finished)
            try:
                result = await _result(client, future, call, in_thread)
            except Exception as exc:  # raised out of the task group, it would arrive wrapped in an ExceptionGroup
                failure = exc
            finally:
                finished.set()
    except anyio.get_cancelled_exc_class():
        call.cancelled = True
        with anyio.CancelScope(shield=True):
            await in_thread(pause_quietly, client, call, "the MCP client cancelled the call")
        raise
    if failure is not None:
        raise failure
    return result


async def _result(client: Client, future: Future[Any], call: Call, in_thread: InThread) -> BaseModel:
    wrapped = asyncio.wrap_future(future)
    with anyio.move_on_after(max(0.0, call.deadline - MARGIN - time.monotonic())):
        result: BaseModel = await asyncio.shield(wrapped)
        return result
    if call.run_id is None:  # still creating the run: nothing to report yet but the wait
        late: BaseModel = await wrapped
        return late
    overran: BaseModel = await in_thread(overran_view, client, call.run_id)
    return overran


def overran_view(client: Client, run_id: str) -> BaseModel:
    """The budget is spent while a step is still running: pause the run after it and report where it is."""
    view = client.status(run_id)
    if str(view.state) != "running":
        return view
    step = view.next.step
    reason = f"budget spent while step '{step}' (no timeout or expected duration) was running"
    view = client.pause(run_id, reason=reason)
    view.notices.append(f"{reason}; it goes on in this server and the run pauses after it: call get_run at or after next.not_before")
    return view


def pause_quietly(client: Client, call: Call, reason: str) -> None:
    """Ask the run ``call`` drives to pause at its next step boundary, as the caller (journaled as its pause)."""
    call.cancelled = True
    if call.run_id is None:
        return
    try:
        client.pause(call.run_id, reason=reason)
    except RunbookError as exc:  # already over, or failed: nothing to stop
        log.debug("run %s not paused: %s", call.run_id, exc)
