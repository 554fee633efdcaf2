"""``runbook notify``: send a test message, list the outbox, deliver what is due."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from runner.cli.app import AppState, existing_journal, json_option, pass_state

if TYPE_CHECKING:
    from runner.notify.config import NotifySettings
    from runner.notify.deliver import Report

__all__ = ["notify_group"]

_STATES = ("pending", "delivered", "failed", "skipped")

config_option = click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
    help="Read notify: from FILE (e.g. the server config) instead of RUNBOOK_CONFIG, .runbook/config.yaml or "
         "~/.config/runbook/config.yaml.",
)  # fmt: skip


@click.group("notify")
def notify_group() -> None:
    """Notifications: send a test message, list the outbox, deliver what is due (see docs/notifications.md)."""


def load(state: AppState, config_file: str | None) -> NotifySettings:
    """The notification settings in effect (``--config`` wins); a ConfigError if there are none."""
    from runner.errors import ConfigError, Problem, ValidationError
    from runner.notify.config import load_notify
    from runner.notify.files import config_files

    section = None
    if config_file is not None:
        from runner.yamlsafe import load_yaml

        with open(config_file, "rb") as f:
            located = load_yaml(f.read(), config_file)
        if not isinstance(located.data, dict) or located.data.get("notify") is None:
            raise ValidationError([Problem("no 'notify:' section in this file", file=config_file, line=1)])
        section = (located.data["notify"], located, config_file)
    notify = load_notify(state.host.notifiers, state.host.secret_providers, state.settings, server_section=section)
    if notify is None:
        looked = ", ".join(str(p) for p in config_files(state.settings))
        raise ConfigError(f"notifications are not configured (looked in {looked})",
                          hint="add a notify: section to .runbook/config.yaml; see docs/notifications.md")  # fmt: skip
    return notify


@notify_group.command("test")
@click.option("--channel", "channels", multiple=True, metavar="NAME", help="Only this channel (repeatable; default: every channel).")
@config_option
@json_option
@pass_state
def test_cmd(state: AppState, channels: tuple[str, ...], config_file: str | None) -> int:
    """Send a test message to the configured channels now (not through the outbox); exit 1 if any failed."""
    from runner.engine.runtime import new_run_id
    from runner.errors import NotifyError, UsageError
    from runner.notify.message import test_message

    notify = load(state, config_file)
    names = list(channels) or list(notify.channels)
    unknown = [n for n in names if n not in notify.channels]
    if unknown or not names:
        raise UsageError(f"no channel named {', '.join(repr(n) for n in unknown)} in {notify.file}" if unknown else
                         f"{notify.file} configures no channels", hint=f"channels: {', '.join(notify.channels) or 'none'}")  # fmt: skip
    key = f"test:{new_run_id()}"
    message = test_message(notify.config, key, time.time(), notify.redactor)
    results: dict[str, dict[str, str]] = {}
    for name in names:
        channel = notify.channels[name]
        try:
            detail = channel.notifier.send(message, channel.config, delivery_id=f"{key}:{name}", timeout=notify.config.delivery.timeout)
            results[name] = {"state": "sent", "type": channel.notifier.name, "detail": notify.redactor.text(str(detail))}
        except NotifyError as exc:
            results[name] = {"state": "failed", "type": channel.notifier.name, "detail": notify.redactor.text(str(exc)),
                             "retryable": "yes" if exc.retryable else "no"}  # fmt: skip
    failed = [n for n, r in results.items() if r["state"] != "sent"]
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"file": notify.file, "key": key, "channels": results, "ok": not failed})
    else:
        click.echo(f"notification settings: {notify.file}")
        for name, r in results.items():
            click.echo(f"{'sent  ' if r['state'] == 'sent' else 'FAILED'} {name} ({r['type']}): {r['detail']}")
    return 1 if failed else 0


@notify_group.command("list")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this run's notifications.")
@click.option("--state", "states", multiple=True, type=click.Choice(_STATES), help="Only these states (repeatable).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--before", type=float, metavar="TS", help="Page: notifications created before this time (next_before of --json).")
@json_option
@pass_state
@existing_journal
def list_cmd(state: AppState, run_id: str | None, states: tuple[str, ...], limit: int, before: float | None) -> int:
    """List notifications (the outbox), newest first, with each channel's outcome."""
    from runner.engine.views import iso
    from runner.errors import JournalNotFound

    empty = "no notifications"
    try:
        rid = state.engine.resolve_id(run_id) if run_id else None
        rows = state.store.list_notifications(run_id=rid, states=states, limit=limit, before=before)
    except JournalNotFound as exc:  # never creates one; without one, nothing was notified yet
        if exc.missing_dir is not None or run_id:
            raise  # a store URL naming a directory that does not exist is a mistake; a named run cannot exist
        rows, empty = [], f"no notifications: no journal at {exc.where} (the first `runbook run` creates it)"
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"notifications": [r.model_dump(mode="json") for r in rows],
                   "next_before": rows[-1].created_at if len(rows) == limit else None})  # fmt: skip
        return 0
    from rich.table import Table

    from runner.cli.output import console

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("CREATED", "KEY", "KIND", "RUNBOOK", "STATE", "CHANNELS", "NOTE"):
        table.add_column(col, overflow="fold")
    for r in rows:
        chans = ", ".join(f"{n}:{s.state}" for n, s in r.channels.items()) or "-"
        table.add_row(iso(r.created_at) or "", r.key, r.kind, r.runbook or "-", r.state, chans, r.last_error)
    console().print(table if rows else empty)
    return 0


@notify_group.command("deliver")
@click.option("--wait", default="0s", show_default=True, metavar="DURATION",
              help="Keep delivering (retries that fall due included) for this long.")  # fmt: skip
@config_option
@json_option
@pass_state
def deliver_cmd(state: AppState, wait: str, config_file: str | None) -> int:
    """Deliver the notifications that are due now (for setups without runbook serve or worker: run it from cron)."""
    from runner.durations import parse_duration
    from runner.notify.deliver import Budget, Deliverer, holder_name

    notify = load(state, config_file)
    deliverer = Deliverer(state.store, notify, holder=holder_name("cli"))
    stop_at = time.monotonic() + parse_duration(wait)
    reports: dict[str, Report] = {}
    while True:
        batch = deliverer.deliver_due(limit=20, budget=Budget())
        reports.update((r.key, r) for r in batch)
        if not batch:
            if time.monotonic() >= stop_at:
                break
            time.sleep(min(notify.config.delivery.poll, max(stop_at - time.monotonic(), 0.01)))
    _print_reports(state, list(reports.values()))
    return 0


def _print_reports(state: AppState, reports: list[Report]) -> None:
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"delivered": [r.as_dict() for r in reports]})
        return
    if not reports:
        click.echo("nothing due")
    for r in reports:
        chans = ", ".join(f"{n}:{s.state}" for n, s in r.channels.items())
        note: Any = f" ({r.note})" if r.note else ""
        click.echo(f"{r.key} {r.kind}: {r.state}{' [' + chans + ']' if chans else ''}{note}")
