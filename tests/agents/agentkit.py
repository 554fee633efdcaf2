"""Agent-side test kit: the MCP SDK's own stdio client talking to a real ``runbook mcp`` process, and CLI helpers."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tests.conftest import Project, Result


@dataclass
class ToolCall:
    """One tool call's result and how long the client waited for it."""

    name: str
    elapsed: float
    is_error: bool
    data: Any
    text: str

    def __repr__(self) -> str:
        return f"<tool {self.name} error={self.is_error} {self.elapsed:.2f}s {self.text[:2000]}>"


class Agent:
    """An MCP client session over stdio to ``python -m runner mcp`` started in a project."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def tools(self) -> dict[str, Any]:
        """Tool name -> tool, as the server lists them."""
        return {t.name: t for t in (await self.session.list_tools()).tools}

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolCall:
        """Call a tool and time it from the client's side."""
        start = time.monotonic()
        result = await self.session.call_tool(name, arguments or {}, read_timeout_seconds=120)
        elapsed = time.monotonic() - start
        text = "".join(getattr(c, "text", "") for c in result.content)
        return ToolCall(name, elapsed, bool(result.is_error), result.structured_content, text)


class MCPServerProcess:
    """Starts ``runbook mcp`` (with extra CLI args) in ``project`` and hands out an :class:`Agent`."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @asynccontextmanager
    async def connect(self, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[Agent]:
        """``python -m runner mcp ARGS`` as a subprocess, initialized through ``ClientSession``."""
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(command=sys.executable, args=["-m", "runner", "mcp", *args],
                                       env={**self.project.env, **(env or {})}, cwd=str(self.project.root))  # fmt: skip
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield Agent(session)


def lines(path: Any) -> list[str]:
    """The lines of a side-effect file (empty if it does not exist)."""
    return path.read_text().split() if path.exists() else []


def dump(value: Any) -> str:
    """Readable JSON for assertion messages."""
    return json.dumps(value, indent=1, default=str)[:4000]


def timed(project: Project, *args: str, env: dict[str, str] | None = None) -> tuple[Result, float]:
    """Run ``runbook ARGS`` as a separate process; return its result and wall time from spawn to exit."""
    start = time.monotonic()
    result = project.run(*args, env=env)
    return result, time.monotonic() - start


def parse_time(value: str | None) -> float | None:
    """Epoch seconds of an ISO time from ``next.not_before`` (None stays None)."""
    from datetime import datetime

    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
