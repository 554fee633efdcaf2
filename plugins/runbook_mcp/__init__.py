"""Built-in plugin ``runbook_mcp``: the Model Context Protocol server, over stdio (``runbook mcp``) and over
Streamable HTTP (``/mcp`` in ``runbook serve``, :mod:`runbook_mcp.http`).

Agents list runbooks (each with its params JSON Schema), plan, start and advance runs under a budget (with
progress per step and cancellation), read state, events, logs and the ``next`` cursor, pause and cancel, all
as agent runs under the agent policy; runbooks, runs and step logs are resources, and ``operate-runbook`` a
prompt. See docs/agents.md.

This module is imported whenever the CLI is built (``runbook --help``), so it
defines only the click command; the ``mcp`` SDK (``pip install 'runbook[agent]'``)
and the server are imported when the command runs.
"""

from __future__ import annotations

import click

from runner.cli.app import AppState, pass_state, settle_startup
from runner.plugin import hookimpl

__all__ = ["mcp_cmd", "runbook_add_commands"]

DEFAULT_BUDGET = "20s"


@hookimpl
def runbook_add_commands(cli: click.Group) -> None:
    """Add ``runbook mcp``."""
    cli.add_command(mcp_cmd)


def _check_duration(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from runner.durations import parse_duration

    try:
        if parse_duration(value) <= 0:
            raise ValueError(f"expected a positive duration, got {value!r}")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("mcp")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), help="Agent policy file (default: RUNBOOK_AGENT_POLICY).")
@click.option("--as", "actor", metavar="NAME", help="Who the agent is in the journal (default: agent:RUNBOOK_ACTOR or agent:user@host).")
@click.option("--budget", default=DEFAULT_BUDGET, show_default=True, callback=_check_duration, metavar="DURATION",
              help="Budget of a tool call that runs steps when the call gives none.")  # fmt: skip
@pass_state
def mcp_cmd(state: AppState, policy_file: str | None, actor: str | None, budget: str) -> int:
    """Serve runbooks to an agent over MCP (stdio): list, plan, start, advance, inspect, pause, cancel.

    Every run it starts is an agent run: the agent policy applies. Needs the
    `agent` extra (pip install 'runbook[agent]'). See docs/agents.md.
    """
    try:
        import mcp  # noqa: F401  (only to fail early with a clear message)
    except ImportError:
        from runner.errors import MissingExtra

        raise MissingExtra("`runbook mcp`", "agent", "mcp") from None
    from runbook_mcp.server import serve_stdio
    from runner.api import Client
    from runner.durations import parse_duration

    settings = state.settings
    client = Client(paths=settings.paths, store=settings.store_url, policy=policy_file, actor=actor, agent=True,
                    inventory=settings.inventory, known_hosts=settings.known_hosts, holder_kind="mcp", host=state.host)  # fmt: skip
    _ = client.store  # open (and create) the journal now, so a bad --store fails before serving
    settle_startup()  # a long-lived process from here on
    try:
        serve_stdio(client, default_budget=parse_duration(budget), budget_text=budget)
    finally:
        client.close()
    return 0
