"""Built-in plugin: ``runbook serve`` (HTTP API, alert webhooks, schedules, worker pool), ``runbook worker``, ``runbook alerts``,
``runbook schedules``.

This module stays cheap to import (``runbook --help`` loads it): FastAPI and uvicorn are imported only
when ``serve`` runs. See ``docs/server.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.plugin import hookimpl

if TYPE_CHECKING:
    import click

__all__ = ["runbook_add_commands"]


@hookimpl
def runbook_add_commands(cli: click.Group) -> None:
    """Add ``serve``, ``worker``, ``alerts`` and ``schedules``."""
    from runbook_server.cli import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)
