"""``runbook schedules``: the server config's schedules with their next slot and their newest decision and run."""

from __future__ import annotations

import click

from runner.cli.app import AppState, existing_journal, json_option, pass_state

__all__ = ["schedules_cmd"]


@click.command("schedules")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="The server configuration (the file `runbook serve --config` reads).")  # fmt: skip
@json_option
@pass_state
@existing_journal
def schedules_cmd(state: AppState, config_file: str | None) -> int:
    """List the schedules of a server config: next slot (and fire time), last decision and last run from the journal
    (it creates none: without one, nothing has fired yet)."""
    from runbook_server.clock import clock_from_env
    from runbook_server.config import load_config
    from runbook_server.schedules import check_schedules, describe
    from runner.errors import JournalNotFound, UsageError
    from runner.templating import Renderer

    if config_file is None:
        raise UsageError("runbook schedules needs the server config that holds them", hint="pass --config FILE (the file given to "
                         "`runbook serve --config`)")  # fmt: skip
    config = load_config(config_file)
    clock = clock_from_env()
    now = clock.now()
    compiled = check_schedules(config, state.catalog, Renderer(dict(state.host.template_filters.items())), now)
    try:
        store = state.store
    except JournalNotFound as exc:  # never creates one; without one, nothing has fired yet
        if exc.missing_dir is not None:
            raise  # a store URL naming a directory that does not exist is a mistake, not an empty journal
        store = None
    listing = describe(compiled, store, now)
    if state.json:
        from runner.cli.output import emit_json

        emit_json(listing.model_dump(mode="json"))
        return 0
    from rich.table import Table

    from runner.cli.output import console

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "RUNBOOK", "CRON", "TIMEZONE", "NEXT SLOT", "LAST SLOT", "DECISION", "LAST RUN", "STATE"):
        table.add_column(col, overflow="fold")
    for s in listing.schedules:
        nxt = s.next_slot or "disabled"
        if s.next_slot and s.next_fire_at and s.next_fire_at != s.next_slot:
            nxt += f" (fires {s.next_fire_at[11:19]})"
        table.add_row(s.name, s.runbook, s.cron, s.timezone, nxt, s.last_slot or "-", s.last_decision or "-", s.last_run_id or "-",
                      s.last_run_state or "-")  # fmt: skip
    console().print(table if listing.schedules else f"no schedules in {config_file}")
    return 0
