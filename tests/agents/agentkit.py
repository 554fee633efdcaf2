"""Agent-side test kit: the MCP SDK's own stdio client talking to a real ``runbook mcp`` process (through
:mod:`tests.agents.mcpkit`, so every server message is validated against the spec's schema), and CLI helpers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.agents.mcpkit import Called, Capture, McpAgent, connect_stdio
from tests.conftest import Project, Result

Agent = McpAgent
"""An MCP client session (the SDK's ``ClientSession``) whose server messages are captured and validated."""
ToolCall = Called
"""One tool call's result and how long the client waited for it."""


class MCPServerProcess:
    """Starts ``runbook mcp`` (with extra CLI args) in ``project`` and hands out an :class:`Agent`."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @asynccontextmanager
    async def connect(self, *args: str, env: dict[str, str] | None = None, capture: Capture | None = None) -> AsyncIterator[Agent]:
        """``python -m runner mcp ARGS`` as a subprocess through :func:`~tests.agents.mcpkit.connect_stdio`: every
        message the server sends is checked against the MCP spec's schema when the connection closes."""
        async with connect_stdio(self.project, *args, env=env, capture=capture) as agent:
            yield agent


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
