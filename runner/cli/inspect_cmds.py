"""``runbook status | runs | events | logs``: reading runs (nothing is changed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from runner.cli.app import AppState, existing_journal, json_option, pass_state, settle_startup
from runner.cli.complete import complete_run_id, complete_runbook, complete_step
from runner.cli.run_cmds import agent_options, control_engine, max_steps_option, render_view, with_options

if TYPE_CHECKING:
    from runner.store.records import Event

__all__ = ["COMMANDS", "event_json"]


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from runner.cli.run_cmds import _duration as check

    return check(_ctx, _param, value)


@click.command("status")
@click.argument("run_id", shell_complete=complete_run_id)
@click.option("--budget", callback=_duration, metavar="DURATION", help="Spell next.command with this budget (nothing runs).")
@max_steps_option
@with_options(agent_options("read"))
@json_option
@pass_state
@existing_journal
def status_cmd(state: AppState, run_id: str, budget: str | None, max_steps: int | None, actor: str | None, as_agent: bool,
               policy_file: str | None) -> int:  # fmt: skip
    """Show a run: state, every step (with the tail of its output), and what to do next."""
    if as_agent:
        state.as_agent(policy_file, actor)
    engine = control_engine(state, budget, max_steps)
    view = engine.status(engine.resolve_id(run_id))
    render_view(state, view, engine.notices, steps=True)
    return 0


def _time(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from runner.durations import parse_time

    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it is below it (``.runbook/journal.db``)."""
    import os

    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return path if rel.startswith("..") else rel


@click.command("runs")
@click.option("--runbook", metavar="NAME", shell_complete=complete_runbook, help="Only runs of this runbook.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["queued", "running", "paused", "waiting", "succeeded", "failed", "cancelled", "interrupted"]),
    help="Only runs in this state (repeatable).",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--before", metavar="RUN_ID", shell_complete=complete_run_id, help="Page: runs older than this one.")
@click.option("--since", callback=_time, metavar="DURATION|TIME", help="Only runs created since then: '2h' (ago) or an ISO date/time.")
@click.option("--until", callback=_time, metavar="DURATION|TIME", help="Only runs created before then: '1d' (ago) or an ISO date/time.")
@click.option("--started-by", metavar="NAME", help="Only runs started by NAME (exactly; 'alert:*' for a prefix).")
@json_option
@pass_state
@existing_journal
def runs_cmd(state: AppState, runbook: str | None, states: tuple[str, ...], limit: int, before: str | None, since: float | None,
             until: float | None, started_by: str | None) -> int:  # fmt: skip
    """List runs, newest first."""
    from runner.errors import JournalNotFound
    from runner.listings import RunList, run_summary
    from runner.store.records import RunState

    try:
        if before is not None:
            before = control_engine(state).resolve_id(before)  # an unknown id is an error, not a listing from the newest run
        runs = state.store.list_runs(runbook=runbook, states=[RunState(s) for s in states], limit=limit, before=before,
                                     since=since, until=until, started_by=started_by)  # fmt: skip
    except JournalNotFound as exc:
        if exc.missing_dir is not None:
            raise  # a store URL naming a directory that does not exist is a mistake, not an empty journal
        runs, empty = [], f"no runs yet: no journal at {_relative(exc.where)} (the first `runbook run` creates it)"
    else:
        filtered = runbook or states or since is not None or until is not None or started_by or before
        empty = "no runs match" if filtered else "no runs"
    rows = [run_summary(r) for r in runs]
    if state.json:
        from runner.cli.output import emit_json

        emit_json(RunList(runs=rows, next_before=rows[-1].run_id if len(rows) == limit else None).model_dump(mode="json"))
        return 0
    from rich.table import Table

    from runner.cli.output import console

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("RUN", "RUNBOOK", "STATE", "CREATED", "STARTED BY", "REASON"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.run_id, r.runbook, r.state, r.created_at, r.started_by, r.reason)
    console().print(table if rows else empty)
    return 0


def event_json(ev: Any) -> dict[str, Any]:
    """The JSON shape of one event."""
    from runner.listings import event_view

    return event_view(ev).model_dump(mode="json")


def event_line(ev: Event) -> str:
    """One human line for an event: number, time, type (a probe's kind), step (and fan-out target), the attempt when it
    is not the first (or failed), who, then what it says: a probe's verdict, which check and what it saw; a
    recovery's decision; a retry's delay. Text from the journal is escaped, never read as markup."""
    from rich.markup import escape

    from runner.views import iso

    data = ev.data
    head = ev.type + (f" {data['kind']}" if ev.type == "probe" and data.get("kind") else "")
    if ev.step_id:
        head += f" [bold]{escape(ev.step_id)}[/]" + (f"@{escape(str(data['target']))}" if data.get("target") else "")
    if ev.attempt and (ev.attempt > 1 or ev.type == "step.attempt_failed"):
        head += f" attempt {ev.attempt}"
    if ev.actor:
        head += f" by {escape(ev.actor)}"
    said = [f"holds={data['holds']}"] if ev.type == "probe" and "holds" in data else []
    if ev.type == "step.recovered" and data.get("decision"):
        said.append(f"decision={data['decision']}")
    detail = str(data.get("reason") or data.get("detail") or data.get("message") or "")
    if ev.type == "probe" and data.get("check"):
        detail = f"{data['check']}: {detail}" if detail else str(data["check"])
    if ev.type == "step.attempt_failed" and data.get("retry_in") is not None:
        detail += f"; retrying in {data['retry_in']}s"
    if ev.type == "step.output":
        detail = f"{data.get('stream')}: {len(data.get('lines') or [])} line(s) so far"
    if ev.type in ("step.attempt_output", "step.call_output") or (ev.type == "rollback.finished" and data.get("output")):
        value = data.get("output")
        kept: dict[str, Any] = value if isinstance(value, dict) else {}
        counts = ", ".join(f"{s} {len(str(kept[s]).splitlines())} line(s)" for s in ("stdout", "stderr", "body") if kept.get(s))
        kept_note = f"output kept ({counts or 'empty'}): runbook logs"
        detail = f"{detail}; {kept_note}" if detail else f"{data.get('call', '')} {kept_note}".strip()
    said += [escape(detail)] if detail else []
    return f"[dim]{ev.seq:>4} {iso(ev.ts)}[/] {head}" + "".join(f" {s}" for s in said)


@click.command("events")
@click.argument("run_id", shell_complete=complete_run_id)
@click.option("--after", default=0, type=click.IntRange(min=0), help="Only events after this sequence number.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events (JSON lines with --json) until the run stops.")
@with_options(agent_options("read"))
@json_option
@pass_state
@existing_journal
def events_cmd(state: AppState, run_id: str, after: int, follow: bool, actor: str | None, as_agent: bool, policy_file: str | None) -> int:
    """Show a run's journal of events."""
    import json
    import sys
    import time

    from runner.store.records import RunState

    if as_agent:
        state.as_agent(policy_file, actor)
    engine = control_engine(state)
    rid = engine.resolve_id(run_id)
    engine.status(rid)  # who may not read the run may not read its events
    settled = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.PAUSED, RunState.WAITING, RunState.INTERRUPTED}

    def show(batch: list[Any]) -> None:
        from runner.cli.output import console

        for ev in batch:
            if state.json:
                sys.stdout.write(json.dumps(event_json(ev), default=str) + "\n")
            else:
                console().print(event_line(ev), highlight=False)
        sys.stdout.flush()

    batch = state.store.events(rid, after=after, limit=100000)
    if not follow:
        if state.json:
            from runner.cli.output import emit_json

            emit_json({"run_id": rid, "events": [event_json(e) for e in batch]})
        else:
            show(batch)
        return 0
    settle_startup()  # following may last hours
    show(batch)
    last = batch[-1].seq if batch else after
    while True:
        batch = state.store.events(rid, after=last)
        show(batch)
        last = batch[-1].seq if batch else last
        if not batch and state.store.get_run(rid).state in settled:
            return 0
        time.sleep(0.25)


@click.command("logs")
@click.argument("run_id", shell_complete=complete_run_id)
@click.argument("step", required=False, shell_complete=complete_step)
@click.option("--target", metavar="HOST", help="Only this fan-out target.")
@click.option(
    "--stream",
    type=click.Choice(["stdout", "stderr", "body", "log"]),
    help="Only this stream (body: an http step's response; log: ctx.log messages).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing output as steps finish, until the run stops.")
@with_options(agent_options("read"))
@json_option
@pass_state
@existing_journal
def logs_cmd(state: AppState, run_id: str, step: str | None, target: str | None, stream: str | None, follow: bool, actor: str | None,
             as_agent: bool, policy_file: str | None) -> int:  # fmt: skip
    """Print the output steps captured (stdout, stderr, ctx.log messages), complete up to the capture cap."""
    import json
    import sys
    import time

    from runner.logs import collect
    from runner.store.records import RunState

    if as_agent:
        state.as_agent(policy_file, actor)
    engine = control_engine(state)
    rid = engine.resolve_id(run_id)
    engine.status(rid)  # who may not read the run may not read its output
    settled = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.PAUSED, RunState.WAITING, RunState.INTERRUPTED}
    seen: set[tuple[str, str | None, int | None, str, str, int]] = set()
    lines_json: list[dict[str, Any]] = []

    def emit(done_only: bool) -> None:
        from runner.cli.output import console

        for line in collect(state.store, rid, step=step, target=target, stream=stream, finished_only=done_only):
            key = line.key()
            if key in seen:
                continue
            seen.add(key)
            if state.json and follow:
                sys.stdout.write(json.dumps(line.as_json()) + "\n")
            elif state.json:
                lines_json.append(line.as_json())
            else:
                console().print(line.human(), highlight=False, markup=False)
        sys.stdout.flush()

    if not follow:
        emit(False)
        if state.json:
            from runner.cli.output import emit_json

            emit_json({"run_id": rid, "lines": lines_json})
        return 0
    settle_startup()
    while True:  # what running steps wrote so far (their journaled chunks), then the rest as each finishes
        emit(False)
        if state.store.get_run(rid).state in settled:
            emit(False)
            return 0
        time.sleep(0.25)


COMMANDS = (status_cmd, runs_cmd, events_cmd, logs_cmd)
