"""``runbook pause | cancel | approve | deny | decide | retry``: requests that *record*; none runs a step here.

(``cancel --rollback`` of an idle run runs its rollback actions: that is what was asked.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from runner.cli.app import AppState, existing_journal, json_option, pass_state
from runner.cli.complete import complete_run_id, complete_step
from runner.cli.run_cmds import control_engine, notify_after, render_view

__all__ = ["COMMANDS"]

_as_option = click.option("--as", "actor", metavar="NAME", help="Who asks (default: RUNBOOK_ACTOR or user@host).")
_agent_options = [
    click.option("--as-agent", is_flag=True, help="Act as an agent: the agent policy (--policy / RUNBOOK_AGENT_POLICY) applies."),
    click.option("--policy", "policy_file", type=click.Path(dir_okay=False), help="Agent policy file (default: RUNBOOK_AGENT_POLICY)."),
]


def _with(options: list[Any]) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return deco


def _who(state: AppState, actor: str | None, as_agent: bool, policy_file: str | None) -> str:
    if as_agent:
        state.as_agent(policy_file, actor)
    return actor or state.settings.actor


@click.command("pause")
@click.argument("run_id", shell_complete=complete_run_id)
@click.option("--reason", default="", help="Why (recorded in the journal).")
@_as_option
@_with(_agent_options)
@json_option
@pass_state
@existing_journal
def pause_cmd(state: AppState, run_id: str, reason: str, actor: str | None, as_agent: bool, policy_file: str | None) -> int:
    """Pause a run at its next step boundary."""
    who = _who(state, actor, as_agent, policy_file)
    engine = control_engine(state)
    view = engine.pause(engine.resolve_id(run_id), actor=who, reason=reason)
    render_view(state, view, engine.notices, what="pause requested: the run stops at its next step boundary")
    return 0


@click.command("cancel")
@click.argument("run_id", shell_complete=complete_run_id)
@click.option("--reason", default="", help="Why (recorded in the journal).")
@click.option("--rollback", is_flag=True, help="Run the rollback actions of completed steps first, last first (journaled, resumable).")
@_as_option
@_with(_agent_options)
@json_option
@pass_state
@existing_journal
def cancel_cmd(state: AppState, run_id: str, reason: str, rollback: bool, actor: str | None, as_agent: bool,
               policy_file: str | None) -> int:  # fmt: skip
    """Cancel a run; a step in flight has its process stopped."""
    who = _who(state, actor, as_agent, policy_file)
    engine = control_engine(state)
    view = engine.cancel(engine.resolve_id(run_id), actor=who, reason=reason, rollback=rollback)
    render_view(state, view, engine.notices, what="cancel requested" + (" with rollback" if rollback else ""))
    notify_after(state, view.run_id)
    return 0


_decision_options = [
    click.option("--by", metavar="NAME", help="Who decides (default: RUNBOOK_ACTOR or user@host)."),
    click.option("--comment", default="", help="Recorded with the decision."),
    click.option("--step", metavar="STEP", help="The approval step (default: the one waiting)."),
    *_agent_options,
]


def _vote(state: AppState, run_id: str, by: str | None, comment: str, step: str | None, approve: bool, as_agent: bool,
          policy_file: str | None) -> int:  # fmt: skip
    who = _who(state, by, as_agent, policy_file)
    engine = control_engine(state)
    view = engine.decide(engine.resolve_id(run_id), actor=who, approve=approve, comment=comment, step_id=step)
    verb = "approved" if approve else "denied"
    render_view(state, view, engine.notices, what=f"{verb}; the run goes on when its driver resumes it (`runbook resume {view.run_id}`)")
    return 0


@click.command("approve")
@click.argument("run_id", shell_complete=complete_run_id)
@_with(_decision_options)
@json_option
@pass_state
@existing_journal
def approve_cmd(state: AppState, run_id: str, by: str | None, comment: str, step: str | None, as_agent: bool,
                policy_file: str | None) -> int:  # fmt: skip
    """Approve the approval step a run is waiting on (records the decision; runs nothing)."""
    return _vote(state, run_id, by, comment, step, True, as_agent, policy_file)


@click.command("deny")
@click.argument("run_id", shell_complete=complete_run_id)
@_with(_decision_options)
@json_option
@pass_state
@existing_journal
def deny_cmd(state: AppState, run_id: str, by: str | None, comment: str, step: str | None, as_agent: bool,
             policy_file: str | None) -> int:  # fmt: skip
    """Deny the approval step a run is waiting on (the step fails when the run is resumed)."""
    return _vote(state, run_id, by, comment, step, False, as_agent, policy_file)


@click.command("decide")
@click.argument("run_id", shell_complete=complete_run_id)
@click.option("--retry-step", metavar="STEP", shell_complete=complete_step, help="Run the step's action again.")
@click.option("--skip-step", metavar="STEP", shell_complete=complete_step, help="Treat the step as done and go on.")
@_as_option
@_with(_agent_options)
@json_option
@pass_state
@existing_journal
def decide_cmd(state: AppState, run_id: str, retry_step: str | None, skip_step: str | None, actor: str | None, as_agent: bool,
               policy_file: str | None) -> int:  # fmt: skip
    """Record a decision on a step whose outcome is unknown (or that failed); the run's driver applies it on resume."""
    if (retry_step is None) == (skip_step is None):
        raise click.UsageError("give exactly one of --retry-step STEP or --skip-step STEP")
    who = _who(state, actor, as_agent, policy_file)
    engine = control_engine(state)
    step, choice = (retry_step, "retry") if retry_step is not None else (skip_step or "", "skip")
    view = engine.decide_step(engine.resolve_id(run_id), step, choice, actor=who)
    render_view(state, view, engine.notices, what=f"decision recorded ({choice} step '{step}'); the run goes on when it is resumed")
    return 0


@click.command("retry")
@click.argument("run_id", shell_complete=complete_run_id)
@_as_option
@_with(_agent_options)
@json_option
@pass_state
@existing_journal
def retry_cmd(state: AppState, run_id: str, actor: str | None, as_agent: bool, policy_file: str | None) -> int:
    """Record that a failed run's cause is fixed: its driver retries the failed steps on resume."""
    who = _who(state, actor, as_agent, policy_file)
    engine = control_engine(state)
    view = engine.retry(engine.resolve_id(run_id), actor=who)
    render_view(state, view, engine.notices, what="retry recorded; the failed steps run again when the run is resumed")
    return 0


COMMANDS = (pause_cmd, cancel_cmd, approve_cmd, deny_cmd, decide_cmd, retry_cmd)
