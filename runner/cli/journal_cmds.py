"""``runbook prune``: delete finished history from the journal (rules in :mod:`runner.store.retention`)."""

from __future__ import annotations

from typing import Any

import click

from runner.cli.app import AppState, existing_journal, json_option, pass_state

__all__ = ["COMMANDS"]

_STATES = ("succeeded", "failed", "cancelled")


def _seconds(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from runner.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@click.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    callback=_seconds,
    metavar="DURATION",
    help="Delete runs that finished longer ago than this (e.g. 30d, 12h).",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_STATES),
    help="Only runs in this state (repeatable; default: succeeded, failed and cancelled).",
)
@click.option(
    "--keep-last",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    metavar="N",
    help="Keep the newest N finished runs of each runbook, however old.",
)
@click.option(
    "--idempotency-window",
    callback=_seconds,
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="Keep runs created with an idempotency key this recently (a repeated request must find them).",
)
@click.option(
    "--alert-window",
    callback=_seconds,
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="Keep alert runs whose alert fired this recently and is not resolved.",
)
@click.option(
    "--notification-window",
    callback=_seconds,
    default="7d",
    show_default=True,
    metavar="DURATION",
    help="A notification still to send is kept this long after its event.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    metavar="N",
    help="Runs examined per transaction (other writers run between batches).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--no-vacuum", is_flag=True, help="Keep the freed space in the journal for reuse instead of shrinking the file.")
@json_option
@pass_state
@existing_journal
def prune_cmd(state: AppState, older_than: float, states: tuple[str, ...], keep_last: int, idempotency_window: float,
              alert_window: float, notification_window: float, batch: int, dry_run: bool, no_vacuum: bool) -> int:  # fmt: skip
    """Delete finished runs older than --older-than, keeping what is still referenced.

    Never deleted: active runs (queued, running, paused, waiting, interrupted), the parents of active runs and
    the sub-runbook runs of kept ones, the newest --keep-last runs of each runbook, runs whose idempotency key is
    inside its window, and runs of alerts that are still firing. See docs/durability.md, "Retention".
    """
    from runner.errors import JournalNotFound
    from runner.store.records import RunState
    from runner.store.retention import FINISHED_STATES, PruneReport, PruneRules

    rules = PruneRules(older_than=older_than, states=frozenset(RunState(s) for s in states) or FINISHED_STATES, keep_last=keep_last,
                       idempotency_window=idempotency_window, alert_window=alert_window,
                       notification_window=notification_window)  # fmt: skip
    try:
        store = state.store
    except JournalNotFound as exc:  # never creates one; without one, there is nothing to prune
        if exc.missing_dir is not None:
            raise  # a store URL naming a directory that does not exist is a mistake, not an empty journal
        if state.json:
            from runner.cli.output import emit_json

            emit_json({"store": None, "journal": False, **PruneReport(dry_run=dry_run).as_dict()})
            return 0
        click.echo(f"nothing to prune: no journal at {exc.where} (the first `runbook run` creates it)")
        return 0
    report = store.prune(rules, dry_run=dry_run, batch=batch, vacuum="none" if no_vacuum else "auto")
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"store": store.url, **report.as_dict()})
        return 0
    click.echo(_summary(report.as_dict()))
    return 0


def _summary(r: dict[str, Any]) -> str:
    verb = "would delete" if r["dry_run"] else "deleted"
    lines = [f"{verb} {r['runs']} run(s) ({r['events']} events, {r['steps']} steps, {r['decisions']} alert decisions, "
             f"{r['deliveries']} deliveries, {r['notifications']} notifications) in {r['batches']} batch(es)"]  # fmt: skip
    if r["kept"]:
        lines.append("kept, though old enough: " + ", ".join(f"{n} ({rule.replace('_', ' ')})" for rule, n in sorted(r["kept"].items())))
    if not r["dry_run"] and r["bytes_before"] is not None:
        how = {"full": "switched to incremental vacuum with a one-time VACUUM", "incremental": "incremental vacuum"}.get(
            r["vacuum"], "no vacuum"
        )
        lines.append(f"journal: {_size(r['bytes_before'])} -> {_size(r['bytes_after'])} ({how})")
    if r["stopped"]:
        lines.append("stopped before the end; run it again to continue")
    return "\n".join(lines)


COMMANDS = (prune_cmd,)
