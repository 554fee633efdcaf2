"""The MCP server, on the official SDK's low-level ``Server``: one set of handlers for stdio and Streamable HTTP.

The low-level server is used (rather than ``MCPServer``) because the tool list is dynamic (the runbooks the
caller may start) and results carry the project's own schemas. Who acts is a :class:`Backend`'s business:
stdio has one client (``runbook mcp``), HTTP one per API token (:mod:`runbook_mcp.http`); the handlers,
the tool table (:mod:`runbook_mcp.tools`), resources and prompt (:mod:`runbook_mcp.resources`) and the
driving of runs (:mod:`runbook_mcp.driving`) are shared.

Engine work is blocking, so it runs in worker threads. Each connection gets a watcher from its initialization
(:mod:`runbook_mcp.watch`) that sends ``notifications/tools/list_changed`` (and resources') when the catalog
or the agent policy changes and ``notifications/resources/updated`` when a subscribed run changes state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError as PydanticValidationError

from runbook_mcp import driving, resources
from runbook_mcp.schemas import error_body, input_schema, output_schema
from runbook_mcp.tools import INSTRUCTIONS, Call, ToolSpec, summary, tool_specs
from runbook_mcp.watch import Watch, stop_all, watch_of
from runner._version import __version__
from runner.errors import RunbookError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runner.api import Client

__all__ = ["SHUTDOWN_WAIT", "Backend", "RunbookMCP", "StdioBackend", "serve_stdio"]

log = logging.getLogger("runbook.mcp")

SHUTDOWN_WAIT = 60.0
"""Seconds to let in-flight drives reach a step boundary when the server stops."""
NOTIFY = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
RESOURCE_NOT_FOUND = -32002
"""The spec's error code for a resource that does not exist."""


class Backend(Protocol):
    """Who acts for a request, and what changes the tool list."""

    default_budget: float
    budget_text: str

    def client(self, ctx: Any) -> Client:
        """The client acting for the request in ``ctx`` (raises :class:`~runner.errors.AuthError` if none may)."""

    def stamp(self) -> object:
        """Something that changes when the tool list may change (runbook files, the policy file); cheap."""

    def redact(self, text: str) -> str:
        """``text`` with the server's own secrets masked."""


class StdioBackend:
    """``runbook mcp``: one client, its runbook files and policy file watched."""

    def __init__(self, client: Client, *, default_budget: float, budget_text: str) -> None:
        self._client, self.default_budget, self.budget_text = client, default_budget, budget_text
        self._last: object = None

    def client(self, ctx: Any) -> Client:
        """The one client (the stdio peer is the agent that started the process)."""
        return self._client

    def stamp(self) -> object:
        """File stamps of the runbook search path and the policy file; a change reloads the catalog."""
        from runbook_mcp.watch import files_stamp
        from runner.authority import LivePolicy
        from runner.catalog import search_path

        session = self._client.session
        dirs = search_path(session.settings.paths, session.host.runbook_sources.directories())
        policy = session.policy.path if isinstance(session.policy, LivePolicy) else None
        now = files_stamp([*dirs, *([policy] if policy else [])])
        if self._last is not None and now != self._last:
            self._client.reload()
        self._last = now
        return now

    def redact(self, text: str) -> str:
        """Nothing to mask beyond what the engine masks."""
        return text


class _Server(Server[Any]):
    """The low-level server, advertising ``listChanged`` on every transport (the HTTP session manager asks it)."""

    def create_initialization_options(self, notification_options: NotificationOptions | None = None,
                                      experimental_capabilities: dict[str, dict[str, Any]] | None = None,
                                      extensions: dict[str, dict[str, Any]] | None = None) -> Any:  # fmt: skip
        return super().create_initialization_options(notification_options or NOTIFY, experimental_capabilities, extensions)


class RunbookMCP:
    """The handlers, over a :class:`Backend`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="runbook-mcp")
        self.inflight: dict[Future[Any], tuple[Client, Call]] = {}
        self.watches: set[Watch] = set()
        self.server: Server[Any] = _Server(
            "runbook", version=__version__, title="runbook", instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools, on_call_tool=self._call_tool,
            on_list_resources=self._list_resources, on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource, on_subscribe_resource=self._subscribe, on_unsubscribe_resource=self._unsubscribe,
            on_list_prompts=self._list_prompts, on_get_prompt=self._get_prompt,
        )  # fmt: skip
        self.server.add_notification_handler("notifications/initialized", types.NotificationParams, self._initialized)

    # ------------------------------------------------------------------ threads and connections

    async def in_thread(self, fn: Any, *args: Any) -> Any:
        """Run blocking ``fn(*args)`` in the server's worker threads."""
        return await asyncio.wrap_future(self.pool.submit(fn, *args))

    async def _client(self, ctx: Any) -> Client:
        client: Client = await self.in_thread(self.backend.client, ctx)
        watch = await self._watch(ctx)
        if watch is not None:
            watch.client = client
        return client

    async def _initialized(self, ctx: Any, _params: Any) -> None:
        """The session is open: its watcher starts now, from the catalog and policy as they are (whatever it asks
        first, or if it asks nothing, it hears of a change after this)."""
        await self._watch(ctx)

    async def _watch(self, ctx: Any) -> Watch | None:
        watch = watch_of(self, ctx)
        if watch is not None and watch.stamp is None:
            watch.stamp = await self.in_thread(self.backend.stamp)
        return watch

    def _tools(self, client: Client, watch: Watch | None = None) -> dict[str, ToolSpec]:
        stamp = self.backend.stamp()  # runbooks added or edited since the last call are seen
        if watch is not None:  # what this connection listed: the watcher tells it about changes after this
            watch.stamp = stamp
        return {t.name: t for t in tool_specs(client)}

    # ------------------------------------------------------------------ tools

    async def _list_tools(self, ctx: Any, _params: Any) -> types.ListToolsResult:
        client = await self._client(ctx)
        specs = await self.in_thread(self._tools, client, watch_of(self, ctx))
        return types.ListToolsResult(tools=[_describe(t) for t in specs.values()])

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        received = time.monotonic()
        try:
            client = await self._client(ctx)
            specs = await self.in_thread(self._tools, client)
        except RunbookError as exc:
            return self._error(exc)
        spec = specs.get(params.name)
        if spec is None:  # the spec: an unknown tool is a protocol error, not a tool error
            raise MCPError(-32602, f"unknown tool '{params.name}'; tools: {', '.join(specs)}")
        try:
            args = dict(params.arguments or {})
            budget, text = self._budget(spec, args)
            call = Call(deadline=received + budget, budget=text)
            if spec.drives:
                meta = ctx.meta if isinstance(ctx.meta, dict) else {}
                token = meta.get("progress_token", meta.get("progressToken"))
                report = _reporter(ctx) if token is not None else None
                result = await driving.drive(client, spec, args, call, submit=self.pool.submit, in_thread=self.in_thread,
                                             report=report, inflight=self.inflight)  # fmt: skip
            else:
                result = await self.in_thread(spec.call, client, args, call)
            return _ok(result)
        except RunbookError as exc:
            return self._error(exc)
        except PydanticValidationError as exc:
            message = f"invalid arguments for tool '{params.name}': {_pydantic_text(exc)}"
            return _error_result(f"error: {message}", error_body(message, "UsageError", hint="the tool's inputSchema says what it takes"))
        except Exception as exc:  # a bug: one line to the agent, the traceback to the server's log
            log.exception("tool %s failed", params.name)
            message = self.backend.redact(f"internal error in tool '{params.name}': {type(exc).__name__}: {exc}")
            return _error_result(f"error: {message}", error_body(message, "InternalError", exit_code=1))

    def _error(self, exc: RunbookError) -> types.CallToolResult:
        from runner.views import error_document

        doc = error_document(exc, nxt=getattr(exc, "next", None))
        err = doc["error"]
        err["message"] = self.backend.redact(err["message"])
        if err.get("hint"):
            err["hint"] = self.backend.redact(err["hint"])
        return _error_result(f"error: {err['message']}" + (f" (hint: {err['hint']})" if err.get("hint") else ""), doc)

    def _budget(self, spec: ToolSpec, args: dict[str, Any]) -> tuple[float, str]:
        """The call's budget (seconds, text): its ``budget`` argument or the server's default."""
        from runner.durations import parse_duration
        from runner.errors import UsageError

        raw = args.get("budget") if spec.drives else None
        if raw is None:
            return self.backend.default_budget, self.backend.budget_text
        try:
            return parse_duration(raw), raw if isinstance(raw, str) else f"{raw:g}s"
        except ValueError as exc:
            raise UsageError(f"budget: {exc}") from None

    # ------------------------------------------------------------------ resources and prompts

    async def _list_resources(self, ctx: Any, _params: Any) -> types.ListResourcesResult:
        client = await self._client(ctx)
        listed = await self.in_thread(resources.list_resources, client)
        return types.ListResourcesResult(resources=[types.Resource(uri=r.uri, name=r.name, description=r.description or None,
                                                                   mime_type=r.mime_type) for r in listed])  # fmt: skip

    async def _list_templates(self, ctx: Any, _params: Any) -> types.ListResourceTemplatesResult:
        await self._watch(ctx)
        return types.ListResourceTemplatesResult(resource_templates=[
            types.ResourceTemplate(name=name, uri_template=uri, description=text, mime_type=mime) for name, uri, text, mime in resources.TEMPLATES
        ])  # fmt: skip

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        client = await self._client(ctx)
        uri = str(params.uri)
        try:
            mime, text = await self.in_thread(resources.read, client, uri)
        except RunbookError as exc:
            raise _resource_error(uri, exc, self.backend.redact) from None
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type=mime, text=text)])

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        client = await self._client(ctx)
        uri = str(params.uri)
        parsed = resources.parse_uri(uri)
        if parsed is None or parsed.run_id is None or parsed.step is not None:
            raise MCPError(-32602, f"only runs can be subscribed to (runbook://runs/{{run_id}}), not '{uri}'")
        try:
            state = await self.in_thread(resources.run_state, client, parsed.run_id)
        except RunbookError as exc:
            raise _resource_error(uri, exc, self.backend.redact) from None
        watch = watch_of(self, ctx)
        if watch is not None:
            watch.subscribe(uri, parsed.run_id, state)
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        watch = watch_of(self, ctx)
        if watch is not None:
            watch.unsubscribe(str(params.uri))
        return types.EmptyResult()

    async def _list_prompts(self, ctx: Any, _params: Any) -> types.ListPromptsResult:
        await self._watch(ctx)
        return types.ListPromptsResult(prompts=[types.Prompt(
            name=resources.PROMPT, title="Operate a runbook", description="How to drive a runbook to the end: the heartbeat loop.",
            arguments=[types.PromptArgument(name="runbook", description="the runbook's name (list_runbooks)", required=True),
                       types.PromptArgument(name="params", description="its params, as JSON", required=False)],
        )])  # fmt: skip

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        if params.name != resources.PROMPT:
            raise MCPError(-32602, f"unknown prompt '{params.name}'; prompts: {resources.PROMPT}")
        await self._watch(ctx)
        arguments = dict(params.arguments or {})
        if not arguments.get("runbook"):  # declared required in prompts/list
            raise MCPError(-32602, f"prompt '{resources.PROMPT}' needs the argument 'runbook' (the runbook's name, from list_runbooks)")
        text = resources.prompt_text(arguments)
        return types.GetPromptResult(description="The heartbeat loop for one runbook",
                                     messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))])  # fmt: skip

    # ------------------------------------------------------------------ life

    def shutdown(self) -> None:
        """The server stops: drives in flight stop at their next step boundary (paused), then the threads end."""
        for future, (client, call) in list(self.inflight.items()):
            if not future.done():
                driving.pause_quietly(client, call, "the MCP server is stopping")
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
            await stop_all(self)
            await asyncio.get_running_loop().run_in_executor(None, self.shutdown)


def serve_stdio(client: Client, *, default_budget: float, budget_text: str) -> None:
    """Run the MCP server on stdio (blocks until the client disconnects)."""
    import anyio

    backend = StdioBackend(client, default_budget=default_budget, budget_text=budget_text)
    anyio.run(RunbookMCP(backend).run_stdio)


# ---------------------------------------------------------------------- results


def _describe(spec: ToolSpec) -> types.Tool:
    h = spec.hints
    annotations = types.ToolAnnotations(read_only_hint=h.read_only, destructive_hint=h.destructive,
                                        idempotent_hint=h.idempotent, open_world_hint=h.open_world)  # fmt: skip
    return types.Tool(name=spec.name, title=spec.title, description=spec.description, input_schema=input_schema(spec.input_schema),
                      output_schema=output_schema(spec.output), annotations=annotations)  # fmt: skip


def _ok(result: BaseModel) -> types.CallToolResult:
    data = result.model_dump(mode="json")
    return types.CallToolResult(content=[types.TextContent(type="text", text=summary(result))], structured_content=data, is_error=False)


def _error_result(text: str, document: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=document, is_error=True)


def _reporter(ctx: Any) -> driving.Report:
    async def report(progress: float, total: float | None, message: str) -> None:
        await ctx.session.report_progress(progress, total, message)

    return report


def _resource_error(uri: str, exc: RunbookError, redact: Any) -> MCPError:
    from runner.errors import RunbookNotFound, RunNotFound

    code = RESOURCE_NOT_FOUND if isinstance(exc, RunNotFound | RunbookNotFound) else -32602
    return MCPError(code, redact(str(exc)), {"uri": uri, "type": type(exc).__name__})


def _pydantic_text(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = f"unknown argument '{where}'" if err["type"] == "extra_forbidden" else f"{where}: {err['msg']}"
        parts.append(msg)
    return "; ".join(parts)
