"""``runbook run | resume | step | plan | pause | cancel | approve | deny | status | runs | events``."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runner.cli.app import AppState, json_option, pass_state, settle_startup

if TYPE_CHECKING:
    from runner.engine import DriveOptions, Engine, RunView

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from runner.durations import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0  # malformed or negative ("-1s"): the same message as zero
    if seconds <= 0:  # a zero budget fits no step: every `resume` would pause at once, forever
        raise click.BadParameter(f"expected a duration greater than zero such as '30s', '5m' or '1h30m', got {value!r}")
    return value


budget_option = click.option("--budget", callback=_duration, metavar="DURATION",
                             help="Stop (paused, exit 3) before a step that cannot finish in this time, counted from process start.")  # fmt: skip
max_steps_option = click.option("--max-steps", type=click.IntRange(min=1), metavar="N", help="Stop (paused, exit 3) after N steps.")


def _engine(state: AppState, budget: str | None = None, max_steps: int | None = None) -> Engine:
    from runner.engine import CommandHint

    engine = state.engine
    engine.hint = CommandHint(prefix=state.cli_prefix(), json=state.json, budget=budget, max_steps=max_steps)
    return engine


def _options(state: AppState, budget: str | None, max_steps: int | None, **kw: Any) -> DriveOptions:
    import time

    from runner.durations import parse_duration
    from runner.engine import DriveOptions
    from runner.engine.runtime import process_age

    seconds = parse_duration(budget) if budget else None
    deadline = time.monotonic() - process_age() + seconds if seconds is not None else None
    return DriveOptions(deadline=deadline, budget=seconds, max_steps=max_steps, actor=kw.pop("actor", None) or state.settings.actor, **kw)


@contextmanager
def _signals(engine: Engine) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the current step and stop; second: stop the step now."""
    from runner.cli.render import stderr_line

    count = 0

    def handler(signum: int, _frame: Any) -> None:
        nonlocal count
        if not engine._active:
            raise KeyboardInterrupt
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
            stderr_line(f"{name}: finishing the current step, then stopping (send again to stop the step now)")
        else:
            stderr_line(f"{name}: stopping the current step")
        engine.interrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _drive(state: AppState, engine: Engine, fn: Any) -> int:
    """Run ``fn()`` (which drives a run) with signals handled and progress shown; print the result."""
    from runner.cli.output import console, emit_json
    from runner.cli.render import Progress, print_run

    settle_startup()  # start-up is over: what it built is frozen, not walked again by every full collection

    if state.json:
        with _signals(engine):
            view: RunView = fn()
        emit_json(view_json(view, engine))
    else:
        with Progress(console()) as progress, _signals(engine):
            engine.observers.append(progress)
            view = fn()
        print_run(console(), view, notices=engine.notices)
    _notify_after(state, view.run_id)
    return view.exit_code


def _notify_after(state: AppState, run_id: str) -> None:
    """Notifications: send this run's now, bounded by ``delivery.cli_wait`` (runner/notify/after.py)."""
    from runner.notify.after import send_after

    send_after(state, [run_id])


def _params(state: AppState, name: str, pairs: tuple[str, ...], params_file: str | None) -> dict[str, Any]:
    from runner.params import parse_cli_params

    base: dict[str, Any] = {}
    if params_file:
        base = _load_params_file(params_file)
    return parse_cli_params(name, state.catalog.get(name).params_model, list(pairs), base)


def _load_params_file(path: str) -> dict[str, Any]:
    import json

    from runner.errors import Problem, ValidationError
    from runner.yamlsafe import load_yaml

    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationError([Problem(f"invalid JSON: {exc}", file=path)]) from None
    else:
        data = load_yaml(text, path).data
    if not isinstance(data, dict):
        raise ValidationError([Problem("expected a mapping of param names to values", file=path)])
    return data


params_options = [
    click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="A param (repeatable), typed by the runbook."),
    click.option("--params-file", type=click.Path(exists=True, dir_okay=False), help="Params from a JSON or YAML file."),
]


def _with(options: list[Any]) -> Callable[[F], F]:
    """Apply a list of click decorators (shared option sets)."""

    def deco(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return deco


# ---------------------------------------------------------------------- run, resume, step, plan


@click.command("run")
@click.argument("name")
@_with(params_options)
@budget_option
@max_steps_option
@click.option("--idempotency-key", metavar="KEY", help="Return the existing run for a repeated key instead of starting another.")
@click.option("--as", "actor", metavar="NAME", help="Who starts the run (default: RUNBOOK_ACTOR or user@host).")
@click.option("--as-agent", is_flag=True, help="Start the run as an agent: the agent policy (--policy / RUNBOOK_AGENT_POLICY) applies.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), help="Agent policy file (default: RUNBOOK_AGENT_POLICY).")
@json_option
@pass_state
def run_cmd(state: AppState, name: str, pairs: tuple[str, ...], params_file: str | None, budget: str | None,
            max_steps: int | None, idempotency_key: str | None, actor: str | None, as_agent: bool, policy_file: str | None) -> int:  # fmt: skip
    """Start a run of runbook NAME and execute it."""
    params = _params(state, name, pairs, params_file)
    engine = _engine(state, budget, max_steps)
    if as_agent:
        from runner.policy import load_policy

        engine.policy = load_policy(policy_file)
    opts = _options(state, budget, max_steps, actor=actor)
    return _drive(state, engine, lambda: engine.start(name, params, started_by=opts.actor, idempotency_key=idempotency_key,
                                                      options=opts, agent=as_agent))  # fmt: skip


@click.command("resume")
@click.argument("run_id")
@budget_option
@max_steps_option
@click.option("--retry", "retry_failed", is_flag=True, help="Retry the failed or blocked steps of a failed run.")
@click.option("--retry-step", metavar="STEP", help="Decide an unknown step: run its action again.")
@click.option("--skip-step", metavar="STEP", help="Decide an unknown step: treat it as done and go on.")
@click.option("--accept-changes", is_flag=True, help="Continue with a runbook whose completed steps were edited.")
@click.option("--force", is_flag=True, help="Take the run over from another executor whose lease has not expired.")
@click.option("--as", "actor", metavar="NAME", help="Who resumes (recorded in the journal).")
@json_option
@pass_state
def resume_cmd(state: AppState, run_id: str, budget: str | None, max_steps: int | None, retry_failed: bool, retry_step: str | None,
               skip_step: str | None, accept_changes: bool, force: bool, actor: str | None) -> int:  # fmt: skip
    """Continue run RUN_ID from where it stopped."""
    if retry_step is not None and retry_step == skip_step:
        raise click.UsageError(f"--retry-step and --skip-step both name step '{retry_step}': decide it one way")
    engine = _engine(state, budget, max_steps)
    rid = engine.resolve_id(run_id)
    opts = _options(state, budget, max_steps, actor=actor, retry_failed=retry_failed, retry_step=retry_step, skip_step=skip_step,
                    accept_changes=accept_changes, force=force)  # fmt: skip
    return _drive(state, engine, lambda: engine.resume(rid, opts))


@click.command("step")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Take the run over from another executor whose lease has not expired.")
@json_option
@pass_state
def step_cmd(state: AppState, run_id: str, force: bool) -> int:
    """Execute exactly one step of run RUN_ID, then stop."""
    engine = _engine(state, None, None)
    rid = engine.resolve_id(run_id)
    engine.hint.resume_verb = "step"
    opts = _options(state, None, 1, force=force)
    return _drive(state, engine, lambda: engine.resume(rid, opts))


@click.command("plan")
@click.argument("name")
@_with(params_options)
@json_option
@pass_state
def plan_cmd(state: AppState, name: str, pairs: tuple[str, ...], params_file: str | None) -> int:
    """Show what a run of NAME would do, using read-only probes only (nothing is changed or recorded)."""
    from runner.engine.planner import plan

    params = _params(state, name, pairs, params_file)
    view = plan(state.engine, name, params)
    if state.json:
        from runner.cli.output import emit_json

        emit_json(view.model_dump(mode="json"))
    else:
        from runner.cli.output import console
        from runner.cli.render import print_plan

        print_plan(console(), view)
    return 0


# ---------------------------------------------------------------------- control


def view_json(view: RunView, engine: Engine) -> dict[str, Any]:
    """A run's documented ``--json`` shape: the view and the engine's notices (``[]`` when it has none)."""
    return {**view.model_dump(mode="json"), "notices": list(engine.notices)}


def _control(state: AppState, view: RunView, what: str) -> int:
    if state.json:
        from runner.cli.output import emit_json

        emit_json(view_json(view, state.engine))
    else:
        from runner.cli.output import console
        from runner.cli.render import print_run

        console().print(what)
        print_run(console(), view)
    return 0


@click.command("pause")
@click.argument("run_id")
@click.option("--reason", default="", help="Why (recorded in the journal).")
@click.option("--as", "actor", metavar="NAME", help="Who pauses.")
@json_option
@pass_state
def pause_cmd(state: AppState, run_id: str, reason: str, actor: str | None) -> int:
    """Pause a run at its next step boundary."""
    engine = _engine(state)
    view = engine.pause(engine.resolve_id(run_id), actor=actor or state.settings.actor, reason=reason)
    return _control(state, view, "pause requested: the run stops at its next step boundary")


@click.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="", help="Why (recorded in the journal).")
@click.option("--as", "actor", metavar="NAME", help="Who cancels.")
@json_option
@pass_state
def cancel_cmd(state: AppState, run_id: str, reason: str, actor: str | None) -> int:
    """Cancel a run; a step in flight has its process stopped."""
    engine = _engine(state)
    view = engine.cancel(engine.resolve_id(run_id), actor=actor or state.settings.actor, reason=reason)
    code = _control(state, view, "cancel requested")
    _notify_after(state, view.run_id)
    return code


def _decide(state: AppState, run_id: str, by: str | None, comment: str, step: str | None, approve: bool) -> int:
    engine = _engine(state)
    view = engine.decide(engine.resolve_id(run_id), actor=by or state.settings.actor, approve=approve, comment=comment, step_id=step)
    verb = "approved" if approve else "denied"
    return _control(state, view, f"{verb}; the run continues when it is resumed (`runbook resume {view.run_id}`) or by a worker")


_decision_options = [
    click.option("--by", metavar="NAME", help="Who decides (default: RUNBOOK_ACTOR or user@host)."),
    click.option("--comment", default="", help="Recorded with the decision."),
    click.option("--step", metavar="STEP", help="The approval step (default: the one waiting)."),
]


@click.command("approve")
@click.argument("run_id")
@_with(_decision_options)
@json_option
@pass_state
def approve_cmd(state: AppState, run_id: str, by: str | None, comment: str, step: str | None) -> int:
    """Approve the approval step a run is waiting on."""
    return _decide(state, run_id, by, comment, step, True)


@click.command("deny")
@click.argument("run_id")
@_with(_decision_options)
@json_option
@pass_state
def deny_cmd(state: AppState, run_id: str, by: str | None, comment: str, step: str | None) -> int:
    """Deny the approval step a run is waiting on (the step fails)."""
    return _decide(state, run_id, by, comment, step, False)


# ---------------------------------------------------------------------- inspection


@click.command("status")
@click.argument("run_id")
@click.option("--budget", callback=_duration, metavar="DURATION", help="Spell next.command with this budget (nothing runs).")
@max_steps_option
@json_option
@pass_state
def status_cmd(state: AppState, run_id: str, budget: str | None, max_steps: int | None) -> int:
    """Show a run: state, every step, and what to do next."""
    engine = _engine(state, budget, max_steps)
    view = engine.view(engine.resolve_id(run_id))
    if state.json:
        from runner.cli.output import emit_json

        emit_json(view_json(view, engine))
    else:
        from runner.cli.output import console
        from runner.cli.render import print_run

        print_run(console(), view, steps=True)
    return 0


@click.command("runs")
@click.option("--runbook", metavar="NAME", help="Only runs of this runbook.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["queued", "running", "paused", "waiting", "succeeded", "failed", "cancelled", "interrupted"]),
    help="Only runs in this state (repeatable).",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--before", metavar="RUN_ID", help="Page: runs older than this one.")
@json_option
@pass_state
def runs_cmd(state: AppState, runbook: str | None, states: tuple[str, ...], limit: int, before: str | None) -> int:
    """List runs, newest first."""
    from runner.engine.views import iso
    from runner.store.records import RunState

    if before is not None:
        before = _engine(state).resolve_id(before)  # an unknown id is an error, not a listing from the newest run
    runs = state.store.list_runs(runbook=runbook, states=[RunState(s) for s in states], limit=limit, before=before)
    rows = [{"run_id": r.id, "runbook": r.runbook, "state": str(r.state), "reason": r.reason, "started_by": r.started_by,
             "created_at": iso(r.created_at), "updated_at": iso(r.updated_at), "parent_run_id": r.parent_run_id} for r in runs]  # fmt: skip
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"runs": rows, "next_before": rows[-1]["run_id"] if len(rows) == limit else None})
        return 0
    from rich.table import Table

    from runner.cli.output import console

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("RUN", "RUNBOOK", "STATE", "CREATED", "REASON"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["run_id"], r["runbook"], r["state"], r["created_at"], r["reason"])
    console().print(table if rows else "no runs")
    return 0


def event_json(ev: Any) -> dict[str, Any]:
    """The JSON shape of one event."""
    from runner.engine.views import iso

    return {
        "seq": ev.seq,
        "ts": iso(ev.ts),
        "type": ev.type,
        "step_id": ev.step_id,
        "attempt": ev.attempt,
        "actor": ev.actor,
        "data": ev.data,
    }


@click.command("events")
@click.argument("run_id")
@click.option("--after", default=0, type=click.IntRange(min=0), help="Only events after this sequence number.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events (JSON lines with --json) until the run stops.")
@json_option
@pass_state
def events_cmd(state: AppState, run_id: str, after: int, follow: bool) -> int:
    """Show a run's journal of events."""
    import json
    import sys
    import time

    from runner.store.records import RunState

    engine = _engine(state)
    rid = engine.resolve_id(run_id)
    settled = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.PAUSED, RunState.WAITING, RunState.INTERRUPTED}

    def show(batch: list[Any]) -> None:
        from runner.cli.output import console

        for ev in batch:
            if state.json:
                sys.stdout.write(json.dumps(event_json(ev), default=str) + "\n")
            else:
                step = f" [bold]{ev.step_id}[/]" if ev.step_id else ""
                who = f" by {ev.actor}" if ev.actor else ""
                detail = ev.data.get("reason") or ev.data.get("detail") or ""
                console().print(f"[dim]{ev.seq:>4} {event_json(ev)['ts']}[/] {ev.type}{step}{who} {detail}", highlight=False)
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


COMMANDS = (run_cmd, resume_cmd, step_cmd, plan_cmd, pause_cmd, cancel_cmd, approve_cmd, deny_cmd, status_cmd, runs_cmd, events_cmd)
