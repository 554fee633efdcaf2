"""MCP test kit: the SDK's own clients (stdio and Streamable HTTP) with every server message captured and checked
against the MCP specification's JSON Schema for the negotiated protocol version.

Every connection made through :func:`connect_stdio` or :func:`connect_http` (and so through
``tests.agents.agentkit.MCPServerProcess``) is validated when it closes normally: each message the server sent
against the spec's schema, each tool result against the ``outputSchema`` the server listed for that tool (the
tools are listed once more before closing when the test never listed them). A test may call
:func:`validate_capture` earlier to check messages mid-connection.

The schema is the specification's artifact (``schema/<version>/schema.json`` of the
modelcontextprotocol/modelcontextprotocol repository, MIT/Apache-2.0), vendored unchanged in
``tests/data/mcp-schema/<version>/schema.json``; ``RUNBOOK_MCP_SCHEMA_DIR`` (a directory holding
``<version>/schema.json``) takes precedence. A version found in neither is skipped locally and fails in CI.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import anyio

from tests.conftest import Project, require

__all__ = ["Capture", "McpAgent", "connect_http", "connect_stdio", "schema_for", "validate_capture"]

REPO = Path(__file__).resolve().parents[2]

RESULTS = {
    "initialize": "InitializeResult", "tools/list": "ListToolsResult", "tools/call": "CallToolResult",
    "resources/list": "ListResourcesResult", "resources/templates/list": "ListResourceTemplatesResult",
    "resources/read": "ReadResourceResult", "resources/subscribe": "EmptyResult", "resources/unsubscribe": "EmptyResult",
    "prompts/list": "ListPromptsResult", "prompts/get": "GetPromptResult", "ping": "EmptyResult",
}  # fmt: skip
NOTIFICATIONS = {
    "notifications/progress": "ProgressNotification", "notifications/tools/list_changed": "ToolListChangedNotification",
    "notifications/resources/list_changed": "ResourceListChangedNotification",
    "notifications/prompts/list_changed": "PromptListChangedNotification",
    "notifications/resources/updated": "ResourceUpdatedNotification", "notifications/message": "LoggingMessageNotification",
}  # fmt: skip


@lru_cache(maxsize=4)
def _schema_file(version: str) -> Path | None:
    candidates = [Path(os.environ["RUNBOOK_MCP_SCHEMA_DIR"]) / version / "schema.json"] if os.environ.get("RUNBOOK_MCP_SCHEMA_DIR") else []
    candidates.append(REPO / "tests" / "data" / "mcp-schema" / version / "schema.json")
    return next((p for p in candidates if p.is_file()), None)


def schema_for(version: str) -> dict[str, Any]:
    """The specification's JSON Schema for protocol ``version`` (skip locally, fail in CI, when absent)."""
    path = _schema_file(version)
    require(path is not None, f"the MCP specification's schema for {version} (RUNBOOK_MCP_SCHEMA_DIR or tests/data/mcp-schema)")
    assert path is not None
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@dataclass
class Capture:
    """Every message the server sent on one connection, and the methods of the client's requests by id."""

    received: list[dict[str, Any]] = field(default_factory=list)
    requests: dict[Any, str] = field(default_factory=dict)
    calls: dict[Any, str] = field(default_factory=dict)
    """Request id → the tool it called (tools/call)."""
    version: str | None = None

    def notifications(self, method: str) -> list[dict[str, Any]]:
        """The notifications of ``method`` the server sent."""
        return [m for m in self.received if m.get("method") == method and "id" not in m]

    def output_schemas(self) -> dict[str, dict[str, Any] | None]:
        """Tool name → the ``outputSchema`` the server's ``tools/list`` results gave it (the last listing wins)."""
        out: dict[str, dict[str, Any] | None] = {}
        for msg in self.received:
            if "result" in msg and self.requests.get(msg.get("id")) == "tools/list":
                out |= {tool["name"]: tool.get("outputSchema") for tool in msg["result"].get("tools", [])}
        return out

    def unlisted_results(self) -> set[str]:
        """Tools whose results were received though no ``tools/list`` result names them."""
        listed = self.output_schemas()
        called = {self.calls[m["id"]] for m in self.received if "result" in m and m.get("id") in self.calls}
        return called - set(listed)


def _dump(message: Any) -> dict[str, Any]:
    inner = getattr(message, "message", message)
    root = getattr(inner, "root", inner)
    return root.model_dump(by_alias=True, mode="json", exclude_unset=True)  # type: ignore[no-any-return]


def validate_capture(capture: Capture) -> int:
    """Validate every captured server message against the spec's schema (and tool results, errors included,
    against the ``outputSchema`` the server listed for their tool); returns how many were checked."""
    assert capture.version, "no initialize result was captured"
    schemas = capture.output_schemas()
    for msg in capture.received:
        _check(capture.version, msg, "JSONRPCMessage")
        if "method" in msg and "id" not in msg:
            _check(capture.version, msg, NOTIFICATIONS.get(msg["method"], "ServerNotification"))
            _check(capture.version, msg, "ServerNotification")
        elif "result" in msg:
            method = capture.requests.get(msg["id"])
            _check(capture.version, msg["result"], RESULTS.get(method or "", "Result"))
            if method == "tools/call":
                name = capture.calls[msg["id"]]
                assert name in schemas, f"tool {name!r} was called but never listed: its outputSchema is unknown"
                _check_output(msg["result"], schemas[name], name)
    return len(capture.received)


@lru_cache(maxsize=64)
def _validator(version: str, name: str) -> Any:
    import jsonschema

    spec = schema_for(version)
    ref = {"$ref": f"#/$defs/{name}", "$defs": spec["$defs"]}
    return jsonschema.validators.validator_for(spec)(ref)


def _check(version: str, doc: Any, name: str) -> None:
    errors = sorted(_validator(version, name).iter_errors(doc), key=str)
    assert not errors, f"server message does not validate as {name}: {errors[0].message}\n{json.dumps(doc)[:2000]}"


def _check_output(result: dict[str, Any], schema: dict[str, Any] | None, name: str) -> None:
    """A tool result's structured content (a result or, with ``isError``, the error document) fits the tool's schema."""
    import jsonschema

    assert schema is not None and "structuredContent" in result, (name, result)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(result["structuredContent"]))
    assert not errors, f"structured content of {name} does not fit its outputSchema: {errors[0].message}\n{json.dumps(result)[:2000]}"


@dataclass
class Called:
    """One tool call's result and how long the client waited for it."""

    name: str
    elapsed: float
    is_error: bool
    data: Any
    text: str

    def __repr__(self) -> str:
        return f"<tool {self.name} error={self.is_error} {self.elapsed:.2f}s {self.text[:2000]}>"


class McpAgent:
    """An SDK ``ClientSession`` with the capture of its connection."""

    def __init__(self, session: Any, capture: Capture) -> None:
        self.session, self.capture = session, capture

    async def tools(self) -> dict[str, Any]:
        """Tool name -> tool."""
        return {t.name: t for t in (await self.session.list_tools()).tools}

    async def call(self, name: str, arguments: dict[str, Any] | None = None, progress: Any = None) -> Called:
        """Call a tool and time it from the client's side."""
        start = time.monotonic()
        result = await self.session.call_tool(name, arguments or {}, read_timeout_seconds=120, progress_callback=progress)
        text = "".join(getattr(c, "text", "") for c in result.content)
        return Called(name, time.monotonic() - start, bool(result.is_error), result.structured_content, text)


@asynccontextmanager
async def _session(read: Any, write: Any, capture: Capture) -> AsyncIterator[McpAgent]:
    """An initialized ``ClientSession`` whose traffic is captured; validated when the body ends normally."""
    from mcp import ClientSession

    to_client, from_pump = anyio.create_memory_object_stream[Any](1000)
    to_server, from_client = anyio.create_memory_object_stream[Any](1000)

    async def pump_in() -> None:
        async with to_client:
            async for item in read:
                if not isinstance(item, Exception):
                    capture.received.append(_dump(item))
                    result = capture.received[-1].get("result")
                    if isinstance(result, dict) and "protocolVersion" in result:
                        capture.version = result["protocolVersion"]
                await to_client.send(item)

    async def pump_out() -> None:
        async with from_client:
            async for item in from_client:
                sent = _dump(item)
                if "id" in sent and "method" in sent:
                    capture.requests[sent["id"]] = sent["method"]
                    if sent["method"] == "tools/call":
                        capture.calls[sent["id"]] = sent["params"]["name"]
                await write.send(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump_in)
        tg.start_soon(pump_out)
        async with ClientSession(from_pump, to_server) as session:
            await session.initialize()
            yield McpAgent(session, capture)
            if capture.unlisted_results():  # only errors came back, so the SDK never listed the tools: list them now
                await session.list_tools()
        tg.cancel_scope.cancel()
    validate_capture(capture)


@asynccontextmanager
async def connect_stdio(project: Project, *args: str, capture: Capture | None = None,
                        env: dict[str, str] | None = None) -> AsyncIterator[McpAgent]:  # fmt: skip
    """``python -m runner mcp ARGS`` in ``project`` through the SDK's stdio client."""
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "runner", "mcp", *args], env={**project.env, **(env or {})},
                                   cwd=str(project.root))  # fmt: skip
    async with stdio_client(params) as (read, write), _session(read, write, capture or Capture()) as agent:
        yield agent


@asynccontextmanager
async def connect_http(url: str, token: str | None, *, capture: Capture | None = None) -> AsyncIterator[McpAgent]:
    """The SDK's Streamable HTTP client at ``url`` with a bearer ``token``: one MCP session."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0, read=120.0), trust_env=False)
    async with (
        http,
        streamable_http_client(url, http_client=http) as streams,
        _session(streams[0], streams[1], capture or Capture()) as agent,
    ):
        yield agent
