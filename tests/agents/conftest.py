"""Fixtures for the agent surface tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.agents.agentkit import MCPServerProcess
from tests.conftest import Project, require


@pytest.fixture
def mcp_server(project: Project) -> Iterator[MCPServerProcess]:
    """A way to start the real MCP server in the test project (skipped locally without the mcp SDK; fails in CI)."""
    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK (pip install 'runbook[agent]')")
    yield MCPServerProcess(project)
