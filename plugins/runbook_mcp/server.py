"""The MCP server over stdio, on the official SDK's low-level ``Server``.

The low-level server is used (rather than ``MCPServer``) because the tool list
is dynamic and each ``run_<name>`` tool's input schema must be exactly that
runbook's params JSON Schema, not one derived from a Python signature.

Engine work is blocking, so each call runs in a worker thread. A driving call is
*hard*-budgeted: the engine stops at the last step boundary that fits, and if a
step with no declared duration is still running when the budget is spent, the
call returns the run's state anyway (and asks the run to pause after that step).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import mcp.types as types
from mcp.server.lowlevel import Server
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from runbook_mcp.tools import INSTRUCTIONS, Call, ToolSpec, tool_specs
from runner._version import __version__
from runner.api import RunResult
from runner.errors import RunbookError

if TYPE_CHECKING:
    from runner.api import Client

__all__ = ["RunbookMCP", "serve_stdio"]

log = logging.getLogger("runbook.mcp")

MARGIN = 0.05
"""Seconds before the deadline at which a call that is still executing returns the run's state instead."""
SHUTDOWN_WAIT = 60.0
"""Seconds to let in-flight drives reach a step boundary when the client goes away."""


class RunbookMCP:
    """Tools over a :class:`~runner.api.Client`, served with the MCP SDK."""

    def __init__(self, client: Client, *, default_budget: float, budget_text: str) -> None:
        self.client, self.default_budget, self.budget_text = client, default_budget, budget_text
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="runbook-mcp")
        self.inflight: dict[Future[Any], Call] = {}
        self.server: Server[Any] = Server("runbook", version=__version__, instructions=INSTRUCTIONS,
                                          on_list_tools=self._list_tools, on_call_tool=self._call_tool)  # fmt: skip

    # ------------------------------------------------------------------ handlers

    def _tools(self) -> dict[str, ToolSpec]:
        self.client.reload()  # runbooks added or edited since the last call are seen
        return {t.name: t for t in tool_specs(self.client)}

    async def _list_tools(self, _ctx: Any, _params: Any) -> types.ListToolsResult:
        specs = await self._in_thread(self._tools)
        return types.ListToolsResult(tools=[_describe(t) for t in specs.values()])

    async def _call_tool(self, _ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        received = time.monotonic()
        try:
            specs = await self._in_thread(self._tools)
            spec = specs.get(params.name)
            if spec is None:
                return _error_result(f"unknown tool '{params.name}'; tools: {', '.join(specs)}", "UsageError")
            args = dict(params.arguments or {})
            budget, text = self._budget(spec, args)
            call = Call(deadline=received + budget, budget=text)
            if spec.drives:
                result = await self._drive(spec, args, call)
            else:
                result = await self._in_thread(spec.call, self.client, args, call)
            return _ok(result)
        except RunbookError as exc:
            from runner.views import error_document

            return _error_result(str(exc), type(exc).__name__, error_document(exc, nxt=getattr(exc, "next", None)))
        except PydanticValidationError as exc:
            return _error_result(f"invalid arguments for tool '{params.name}': {_pydantic_text(exc)}", "UsageError")
        except Exception as exc:  # a bug: one line to the agent, the traceback to the server's stderr
            log.exception("tool %s failed", params.name)
            return _error_result(f"internal error in tool '{params.name}': {type(exc).__name__}: {exc}", "InternalError")

    def _budget(self, spec: ToolSpec, args: dict[str, Any]) -> tuple[float, str]:
        """The call's budget (seconds, text); a per-runbook tool's arguments are all params, so it uses the default."""
        from runner.durations import parse_duration
        from runner.errors import UsageError

        raw = args.get("budget") if spec.drives and not spec.name.startswith("run_") else None
        if raw is None:
            return self.default_budget, self.budget_text
        try:
            return parse_duration(raw), raw if isinstance(raw, str) else f"{raw:g}s"
        except ValueError as exc:
            raise UsageError(f"budget: {exc}") from None

    # ------------------------------------------------------------------ threads and budgets

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self.pool.submit(fn, *args))

    async def _drive(self, spec: ToolSpec, args: dict[str, Any], call: Call) -> BaseModel:
        """Run a driving tool; return by the deadline even if a step without a declared duration is still running."""
        future = self.pool.submit(spec.call, self.client, args, call)
        self.inflight[future] = call
        future.add_done_callback(lambda f: self.inflight.pop(f, None))
        done, _ = await asyncio.wait({asyncio.wrap_future(future)}, timeout=max(0.0, call.deadline - MARGIN - time.monotonic()))
        if done:
            result: BaseModel = done.pop().result()
            return result
        if call.run_id is None:  # still creating the run: nothing to report yet but the wait
            late: BaseModel = await asyncio.wrap_future(future)
            return late
        overran: BaseModel = await self._in_thread(self._overran, call.run_id)
        return overran

    def _overran(self, run_id: str) -> RunResult:
        """The budget is spent while a step is still running: pause the run after it and report where it is."""
        view = self.client.status(run_id)
        if str(view.state) != "running":
            return view
        step = view.next.step
        reason = f"budget spent while step '{step}' (no timeout or expected duration) was running"
        view = self.client.pause(run_id, reason=reason)
        view.notices.append(f"{reason}; it goes on in this server and the run pauses after it: call get_run at or after next.not_before")
        return view

    def shutdown(self) -> None:
        """The client went away: let drives in flight stop at their next step boundary, then stop."""
        for call in list(self.inflight.values()):
            if call.run_id is not None:
                try:
                    self.client.pause(call.run_id, reason="the MCP server is stopping")
                except RunbookError as exc:
                    log.warning("could not pause run %s: %s", call.run_id, exc)
        deadline = time.monotonic() + SHUTDOWN_WAIT
        for future in list(self.inflight):
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                log.warning("a run drive ended with %s", exc)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def run_stdio(self) -> None:
        """Serve one client over stdin/stdout until it disconnects."""
        from mcp.server.stdio import stdio_server

        try:
            async with stdio_server() as (read_stream, write_stream):
                await self.server.run(read_stream, write_stream, self.server.create_initialization_options())
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.shutdown)


def serve_stdio(client: Client, *, default_budget: float, budget_text: str) -> None:
    """Run the MCP server on stdio (blocks until the client disconnects)."""
    import anyio

    anyio.run(RunbookMCP(client, default_budget=default_budget, budget_text=budget_text).run_stdio)


# ---------------------------------------------------------------------- results


def _describe(spec: ToolSpec) -> types.Tool:
    annotations = types.ToolAnnotations(read_only_hint=spec.read_only, destructive_hint=spec.destructive,
                                        idempotent_hint=spec.read_only, open_world_hint=spec.drives)  # fmt: skip
    return types.Tool(name=spec.name, description=spec.description, input_schema=spec.input_schema,
                      output_schema=spec.output.model_json_schema(mode="serialization"), annotations=annotations)  # fmt: skip


def _ok(result: BaseModel) -> types.CallToolResult:
    data = result.model_dump(mode="json")
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=data, is_error=False)


def _error_result(message: str, kind: str, document: dict[str, Any] | None = None) -> types.CallToolResult:
    body = document or {"error": {"type": kind, "message": message, "hint": None, "exit_code": 2}}
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"error: {message}")], structured_content=body, is_error=True)


def _pydantic_text(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = f"unknown argument '{where}'" if err["type"] == "extra_forbidden" else f"{where}: {err['msg']}"
        parts.append(msg)
    return "; ".join(parts)
