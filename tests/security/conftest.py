"""Fixtures of the security suite: real servers in a throwaway project, stopped by PID at teardown."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Project, require
from tests.server.serverkit import ServerProcess, start_server

TOKEN = "sec-suite-api-token-0123456789abcdef"


@pytest.fixture
def serve(project: Project) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``runbook serve`` processes in ``project`` (``serve(config_text, **kw)``); all are stopped at teardown."""
    require(importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("uvicorn") is not None,
            "fastapi and uvicorn (pip install 'runbook[server]')")  # fmt: skip
    started: list[ServerProcess] = []

    def start(config: str = "", **kw: Any) -> ServerProcess:
        server = start_server(project, config, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
