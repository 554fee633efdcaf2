"""``runbook run | resume | step | plan`` (and the hidden ``_detached``): the commands that drive runs."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runner.cli.app import AppState, existing_journal, json_option, pass_state, settle_startup
from runner.cli.complete import complete_param, complete_run_id, complete_runbook

if TYPE_CHECKING:
    from runner.engine import DriveOptions, Engine, RunView

__all__ = ["COMMANDS", "budget_option", "control_engine", "max_steps_option", "render_view"]

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


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    state = ctx.find_object(AppState)
    if state is not None:
        state.quiet = value
    return value


quiet_option = click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=_set_quiet,
                            help="Do not show the lines steps print while they run (they stay in `runbook logs`).")  # fmt: skip


def control_engine(state: AppState, budget: str | None = None, max_steps: int | None = None) -> Engine:
    """The command's engine, its ``next`` commands spelled with the global options, ``--json`` and the budget."""
    from runner.cursor import CommandHint

    engine = state.engine
    engine.hint = CommandHint(prefix=state.cli_prefix(), json=state.json, budget=budget, max_steps=max_steps)
    return engine


_engine = control_engine


def _options(state: AppState, budget: str | None, max_steps: int | None, **kw: Any) -> DriveOptions:
    import time

    from runner.durations import parse_duration
    from runner.engine import DriveOptions
    from runner.engine.runtime import process_age

    seconds = parse_duration(budget) if budget else None
    deadline = time.monotonic() - process_age() + seconds if seconds is not None else None
    return DriveOptions(deadline=deadline, budget=seconds, startup=1.0, max_steps=max_steps,
                        actor=kw.pop("actor", None) or state.settings.actor, **kw)  # fmt: skip


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
    """Run ``fn()`` (which drives a run) with signals handled and progress shown; print the result.

    A lock held by another run is an error that carries ``next`` (``conflict``: which run holds it; see Engine.conflict).
    """
    from runner.cli.output import console
    from runner.cli.render import Progress

    settle_startup()  # start-up is over: what it built is frozen, not walked again by every full collection
    if state.json:
        with _signals(engine):
            view: RunView = fn()
    else:
        with Progress(console()) as progress, _signals(engine):
            engine.observers.append(progress)
            if not state.quiet:
                engine.output_observers.append(progress.output)
            view = fn()
    code = render_view(state, view, engine.notices)
    notify_after(state, view.run_id)
    return code


def render_view(state: AppState, view: RunView, notices: list[str], *, steps: bool = False, what: str | None = None) -> int:
    """Print a run view (JSON, or the human summary) and return its exit code."""
    if state.json:
        from runner.cli.output import emit_view

        view.notices = list(dict.fromkeys([*view.notices, *notices]))
        emit_view(view)
        return view.exit_code
    from runner.cli.output import console
    from runner.cli.render import print_run

    if what:
        console().print(what)
    print_run(console(), view, notices=list(dict.fromkeys([*view.notices, *notices])), steps=steps)
    return view.exit_code


def notify_after(state: AppState, run_id: str) -> None:
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
    from runner.safeio import read_input_text
    from runner.yamlsafe import load_yaml

    text = read_input_text(path, what="params file")
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
    click.option(
        "-p",
        "--param",
        "pairs",
        multiple=True,
        metavar="KEY=VALUE",
        shell_complete=complete_param,
        help="A param (repeatable), typed by the runbook.",
    ),
    click.option("--params-file", type=click.Path(exists=True, dir_okay=False), help="Params from a JSON or YAML file."),
]


def with_options(options: list[Any]) -> Callable[[F], F]:
    """Apply a list of click decorators (shared option sets)."""

    def deco(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return deco


def agent_options(verb: str) -> list[Any]:
    """``--as``, ``--as-agent`` and ``--policy`` for a command that ``verb``s a run (the agent policy decides it)."""
    return [
        click.option("--as", "actor", metavar="NAME", help="Who asks (default: RUNBOOK_ACTOR or user@host); with --as-agent, the agent's name."),
        click.option("--as-agent", is_flag=True, help=f"{verb.capitalize()} as an agent: the agent policy (--policy / RUNBOOK_AGENT_POLICY) applies."),
        click.option("--policy", "policy_file", type=click.Path(dir_okay=False), help="Agent policy file (default: RUNBOOK_AGENT_POLICY)."),
    ]  # fmt: skip


# ---------------------------------------------------------------------- run, resume, step, plan


@click.command("run")
@click.argument("name", shell_complete=complete_runbook)
@with_options(params_options)
@budget_option
@max_steps_option
@click.option("--idempotency-key", metavar="KEY", help="Return the existing run for a repeated key instead of starting another.")
@click.option("--as", "actor", metavar="NAME", help="Who starts the run (default: RUNBOOK_ACTOR or user@host).")
@click.option("--as-agent", is_flag=True, help="Start the run as an agent: the agent policy (--policy / RUNBOOK_AGENT_POLICY) applies.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), help="Agent policy file (default: RUNBOOK_AGENT_POLICY).")
@quiet_option
@json_option
@pass_state
def run_cmd(state: AppState, name: str, pairs: tuple[str, ...], params_file: str | None, budget: str | None,
            max_steps: int | None, idempotency_key: str | None, actor: str | None, as_agent: bool, policy_file: str | None) -> int:  # fmt: skip
    """Start a run of runbook NAME and execute it."""
    if as_agent:
        state.as_agent(policy_file, actor)
    params = _params(state, name, pairs, params_file)
    engine = _engine(state, budget, max_steps)
    opts = _options(state, budget, max_steps, actor=actor)
    return _drive(state, engine, lambda: engine.start(name, params, started_by=opts.actor, idempotency_key=idempotency_key,
                                                      options=opts))  # fmt: skip


@click.command("resume")
@click.argument("run_id", shell_complete=complete_run_id)
@budget_option
@max_steps_option
@click.option("--retry", "retry_failed", is_flag=True, help="Retry the failed or blocked steps of a failed run.")
@click.option("--retry-step", metavar="STEP", help="Decide an unknown step: run its action again.")
@click.option("--skip-step", metavar="STEP", help="Decide an unknown step: treat it as done and go on.")
@click.option("--accept-changes", is_flag=True, help="Continue with a runbook whose completed steps were edited.")
@click.option("--force", is_flag=True, help="Take the run over from another executor whose lease has not expired.")
@click.option("--as", "actor", metavar="NAME", help="Who resumes (recorded in the journal).")
@click.option("--as-agent", is_flag=True, help="Resume as an agent: the agent policy (--policy / RUNBOOK_AGENT_POLICY) applies.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), help="Agent policy file (default: RUNBOOK_AGENT_POLICY).")
@quiet_option
@json_option
@pass_state
@existing_journal
def resume_cmd(state: AppState, run_id: str, budget: str | None, max_steps: int | None, retry_failed: bool, retry_step: str | None,
               skip_step: str | None, accept_changes: bool, force: bool, actor: str | None, as_agent: bool,
               policy_file: str | None) -> int:  # fmt: skip
    """Continue run RUN_ID from where it stopped."""
    if retry_step is not None and retry_step == skip_step:
        raise click.UsageError(f"--retry-step and --skip-step both name step '{retry_step}': decide it one way")
    if as_agent:
        state.as_agent(policy_file, actor)
    engine = _engine(state, budget, max_steps)
    rid = engine.resolve_id(run_id)
    opts = _options(state, budget, max_steps, actor=actor, retry_failed=retry_failed, retry_step=retry_step, skip_step=skip_step,
                    accept_changes=accept_changes, force=force)  # fmt: skip
    return _drive(state, engine, lambda: engine.resume(rid, opts))


@click.command("step")
@click.argument("run_id", shell_complete=complete_run_id)
@click.option("--force", is_flag=True, help="Take the run over from another executor whose lease has not expired.")
@with_options(agent_options("step"))
@quiet_option
@json_option
@pass_state
@existing_journal
def step_cmd(state: AppState, run_id: str, force: bool, actor: str | None, as_agent: bool, policy_file: str | None) -> int:
    """Execute exactly one step of run RUN_ID, then stop."""
    if as_agent:
        state.as_agent(policy_file, actor)
    engine = _engine(state, None, None)
    rid = engine.resolve_id(run_id)
    engine.hint.resume_verb = "step"
    opts = _options(state, None, 1, force=force)
    return _drive(state, engine, lambda: engine.resume(rid, opts))


@click.command("plan")
@click.argument("name", shell_complete=complete_runbook)
@with_options(params_options)
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
        from runner.cli.plan_render import print_plan

        print_plan(console(), view)
    return 0


@click.command("_detached", hidden=True)
@click.argument("run_id")
@click.option("--step", "step_id", required=True, help="The step to run.")
@click.option("--as", "actor", metavar="NAME", help="Who the caller was (recorded in the journal).")
@pass_state
def detached_cmd(state: AppState, run_id: str, step_id: str, actor: str | None) -> int:
    """Run one step of RUN_ID for a caller whose budget could not hold it (see runner.engine.detach)."""
    import time

    from runner.engine import DriveOptions
    from runner.engine.detach import DETACHED
    from runner.errors import LeaseHeld

    settle_startup()
    engine = state.session.engine(holder_kind=DETACHED)
    opts = DriveOptions(actor=actor or state.settings.actor, detached_step=step_id, wait_in_process=False, detach=False)
    deadline = time.monotonic() + 10.0
    with _signals(engine):  # a signal finishes (first) or interrupts (second) the step, resumably, as for `run`
        while True:  # the caller lets go of the run right after starting this process
            try:
                engine.drive(run_id, opts)
                return 0
            except LeaseHeld:
                if time.monotonic() > deadline:
                    return 6
                time.sleep(0.02)


COMMANDS = (run_cmd, resume_cmd, step_cmd, plan_cmd, detached_cmd)
