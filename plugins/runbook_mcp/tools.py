"""The MCP tools: names, input and output schemas, and what each does, with no MCP SDK import.

Results are the documented ``--json`` shapes (``RunView`` and friends from
:mod:`runner.api`). Driving tools (``start_run``, ``run_<name>``, ``resume_run``)
take a budget; the server makes it hard (see :mod:`runbook_mcp.server`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runner.api import Client, EventList, PlanView, RunbookDetail, RunbookList, RunList, RunResult

__all__ = ["RUN_PREFIX", "Call", "ToolSpec", "tool_specs"]

RUN_PREFIX = "run_"
MAX_TOOL_NAME = 128

INSTRUCTIONS = """\
Executable runbooks, run durably. Never improvise an operation: start the runbook that does it and
follow the run's `next` cursor until `next.action` is "none":
- "resume": call resume_run(run_id) (a budget, pause or max_steps stopped it at a step boundary);
- "wait": call resume_run(run_id) at or after `next.not_before` (a wait step or another executor);
- "await_approval": a human must approve; tell them `next.human_command`, then call resume_run at or
  after `next.not_before`;
- "decide": a step's outcome is unknown; pick one of `next.options` (resume_run with retry_step or
  skip_step) or ask a human;
- "fix_and_retry": the run failed; report `next.reason` to a human (resume_run with retry=true after a fix);
- "none": the run is over (`state` says how).
Every call that runs steps returns before its budget (default: the server's --budget): a run that
is not finished is paused or waiting, never lost; completed steps never run again.
"""


@dataclass
class Call:
    """One tool call: its hard deadline (``time.monotonic()``) and the run it drives, once known."""

    deadline: float
    budget: str
    run_id: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """One MCP tool."""

    name: str
    description: str
    input_schema: dict[str, Any]
    output: type[BaseModel]
    call: Callable[[Client, dict[str, Any], Call], BaseModel]
    read_only: bool = False
    destructive: bool = False
    drives: bool = False
    """Runs steps under a budget."""


# ---------------------------------------------------------------------- arguments


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


RunId = Field(description="the run's id (or an unambiguous prefix of at least 6 characters)")
BudgetArg = Field(default=None, description="how long this call may run steps: seconds or e.g. '20s'; default: the server's --budget")


class NoArgs(_Args):
    """No arguments."""


class NameArgs(_Args):
    name: str = Field(description="the runbook's name")


class PlanArgs(_Args):
    runbook: str = Field(description="the runbook's name")
    params: dict[str, Any] = Field(default_factory=dict, description="params, as the runbook's params_schema says")


class StartArgs(PlanArgs):
    budget: float | str | None = BudgetArg
    idempotency_key: str | None = Field(default=None, description="a repeated key returns the run it started instead of another")


class RunArgs(_Args):
    run_id: str = RunId


class ResumeArgs(RunArgs):
    budget: float | str | None = BudgetArg
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many steps")
    retry: bool = Field(default=False, description="retry the failed steps of a failed run (after the cause was fixed)")
    retry_step: str | None = Field(default=None, description="decide an unknown step: run its action again")
    skip_step: str | None = Field(default=None, description="decide an unknown step: treat it as done")


class ListRunsArgs(_Args):
    runbook: str | None = Field(default=None, description="only runs of this runbook")
    states: list[Literal["queued", "running", "paused", "waiting", "succeeded", "failed", "cancelled", "interrupted"]] = Field(
        default_factory=list, description="only runs in these states")  # fmt: skip
    limit: int = Field(default=20, ge=1, le=200)
    before: str | None = Field(default=None, description="page on: runs older than this run id (a previous next_before)")


class EventsArgs(RunArgs):
    after: int = Field(default=0, ge=0, description="only events with a sequence number above this")
    limit: int = Field(default=200, ge=1, le=1000)


class ControlArgs(RunArgs):
    reason: str = Field(default="", description="why (recorded in the journal)")


class DecideArgs(RunArgs):
    comment: str = Field(default="", description="recorded with the decision")
    step: str | None = Field(default=None, description="the approval step (default: the one waiting)")


# ---------------------------------------------------------------------- what tools do


def _start(client: Client, name: str, params: dict[str, Any], call: Call, key: str | None = None) -> RunResult:
    queued = client.start(name, params, idempotency_key=key, execute=False)
    call.run_id = queued.run_id
    fresh = str(queued.state) == "queued" and not any(s.attempts for s in queued.steps)
    if not fresh:  # a repeated idempotency key: the run it started, as it is
        return queued
    return client.resume(queued.run_id, budget=call.budget, deadline=call.deadline)


def _resume(client: Client, a: ResumeArgs, call: Call) -> RunResult:
    call.run_id = client.engine().resolve_id(a.run_id)
    return client.resume(call.run_id, budget=call.budget, deadline=call.deadline, max_steps=a.max_steps, retry=a.retry,
                         retry_step=a.retry_step, skip_step=a.skip_step)  # fmt: skip


def _spec(name: str, description: str, args: type[_Args], output: type[BaseModel], fn: Callable[[Client, Any, Call], BaseModel],
          **flags: bool) -> ToolSpec:  # fmt: skip
    def call(client: Client, raw: dict[str, Any], c: Call) -> BaseModel:
        return fn(client, args.model_validate(raw), c)

    return ToolSpec(name, description, args.model_json_schema(), output, call, **flags)


def _fixed_tools(may_decide: bool) -> list[ToolSpec]:
    tools = [
        _spec("list_runbooks", "List the runbooks an agent may start, each with its params JSON Schema (runbook list --json).",
              NoArgs, RunbookList, lambda c, a, _: _startable(c), read_only=True),
        _spec("describe_runbook", "One runbook: description, params schema, steps with their checks (runbook show --json).",
              NameArgs, RunbookDetail, lambda c, a, _: c.describe(a.name), read_only=True),
        _spec("plan_run", "What a run would do, from read-only probes only (runbook plan --json); nothing is changed.",
              PlanArgs, PlanView, lambda c, a, _: c.plan(a.runbook, a.params), read_only=True),
        _spec("start_run", "Start a run of a runbook with params and drive it within the budget; returns the run with its "
              "`next` cursor (runbook run --json). The agent policy applies.", StartArgs, RunResult,
              lambda c, a, call: _start(c, a.runbook, a.params, call, a.idempotency_key), drives=True, destructive=True),
        _spec("resume_run", "Advance a run within the budget from where it stopped; completed steps never run again "
              "(runbook resume --json). Call it as `next` says.", ResumeArgs, RunResult, _resume, drives=True, destructive=True),
        _spec("get_run", "A run's state, steps and `next` cursor (runbook status --json).",
              RunArgs, RunResult, lambda c, a, _: c.status(a.run_id), read_only=True),
        _spec("list_runs", "Runs, newest first (runbook runs --json).", ListRunsArgs, RunList,
              lambda c, a, _: c.list_runs(runbook=a.runbook, states=a.states, limit=a.limit, before=a.before), read_only=True),
        _spec("read_events", "A run's journal events after a sequence number (runbook events --json).", EventsArgs, EventList,
              lambda c, a, _: c.events(a.run_id, after=a.after, limit=a.limit), read_only=True),
        _spec("pause_run", "Ask a run to stop at its next step boundary.", ControlArgs, RunResult,
              lambda c, a, _: c.pause(a.run_id, reason=a.reason)),
        _spec("cancel_run", "Stop a run for good (a step in flight has its process stopped).", ControlArgs, RunResult,
              lambda c, a, _: c.cancel(a.run_id, reason=a.reason), destructive=True),
    ]  # fmt: skip
    if may_decide:
        tools += [
            _spec("approve_run", "Approve the approval step a run waits on (only runbooks the agent policy lets agents approve; "
                  "never a run this agent started when the step needs someone else).", DecideArgs, RunResult,
                  lambda c, a, _: c.approve(a.run_id, comment=a.comment, step=a.step)),
            _spec("deny_run", "Deny the approval step a run waits on (the step fails).", DecideArgs, RunResult,
                  lambda c, a, _: c.deny(a.run_id, comment=a.comment, step=a.step), destructive=True),
        ]  # fmt: skip
    return tools


def _startable(client: Client) -> RunbookList:
    listing = client.runbooks()
    listing.runbooks = [rb for rb in listing.runbooks if _may_start(client, rb.name)]
    return listing


def _may_start(client: Client, name: str) -> bool:
    return not client.agent or client.policy is None or client.policy.may_start(name)


def _runbook_tool(name: str, summary: str, schema: dict[str, Any]) -> ToolSpec:
    def call(client: Client, raw: dict[str, Any], c: Call) -> BaseModel:
        return _start(client, name, raw, c)

    text = f"Run the runbook '{name}'" + (f": {summary.rstrip('.')}" if summary else "") + (
        ". Arguments are its params. Runs within the server's --budget and returns the run with its `next` cursor; "
        "continue with resume_run as `next` says.")  # fmt: skip
    return ToolSpec(RUN_PREFIX + name, text, schema, RunResult, call, drives=True, destructive=True)


def tool_specs(client: Client) -> list[ToolSpec]:
    """Every tool, for the runbooks the client's catalog holds now (and its agent policy allows)."""
    names = [rb.name for rb in client.catalog]
    may_decide = client.agent and any(client.agent_may_decide(n) for n in names)
    tools = _fixed_tools(may_decide)
    for rb in client.catalog:
        if _may_start(client, rb.name) and len(RUN_PREFIX + rb.name) <= MAX_TOOL_NAME:
            summary = rb.spec.description.strip().splitlines()[0] if rb.spec.description.strip() else ""
            tools.append(_runbook_tool(rb.name, summary, rb.params_model.model_json_schema()))
    return tools
