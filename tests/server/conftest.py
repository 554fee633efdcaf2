"""Fixtures for the server tests: real ``runbook serve`` processes in a throwaway project."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Project, require
from tests.server.serverkit import ServerProcess, start_server

TOKEN = "test-api-token-0123456789"
AM_TOKEN = "test-am-bearer-token"

HELLO = """
name: hello
params:
  who: {type: string, pattern: '^[A-Za-z0-9.:_-]+$'}
  out: {type: string, default: "OUT"}
steps:
  - id: greet
    shell: [sh, -c, 'echo "$1" >> "$2"', sh, "{{ params.who }}", "{{ params.out }}"]
"""


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


def hello_runbook(project: Project) -> str:
    """Write the ``hello`` runbook (appends ``who`` to ``hits.log``); returns the log path."""
    out = project.root / "hits.log"
    project.write("hello.yaml", HELLO.replace("OUT", str(out)))
    return str(out)
