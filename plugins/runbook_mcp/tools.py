"""The MCP tool table, shared by both transports (stdio and Streamable HTTP), with no MCP SDK import.

One table (:func:`tool_specs`) says, per tool: its name, description, input schema (from a pydantic model),
output schema (the result shape *or* the error document, see :mod:`runbook_mcp.schemas`), annotations and
what it does with a :class:`~runner.api.Client`. Results are the documented ``--json`` shapes
(:mod:`runner.views`). Driving tools (``start_run``, ``resume_run``) take a budget; the server makes it
hard and reports progress per step boundary (:mod:`runbook_mcp.driving`).

There is no ``run_<name>`` tool per runbook: ``start_run`` takes the runbook's name from an enum of the
runbooks the caller may start (docs/agents.md, "Why one start_run"). Every tool name is a fixed identifier
matching :data:`TOOL_NAME`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runner.api import Client, EventList, PlanView, RunbookDetail, RunbookList, RunList, RunResult

if TYPE_CHECKING:
    from runner.views import RunView

__all__ = ["INSTRUCTIONS", "TOOL_NAME", "Call", "Hints", "LogList", "ToolSpec", "run_line", "summary", "tool_specs"]

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What every tool name matches (the names clients accept everywhere)."""

INSTRUCTIONS = """\
Executable runbooks, run durably. Never improvise an operation: start the runbook that does it
(start_run) and follow the run's `next` until `next.action` is "none" or "handoff":
- resume: call resume_run(run_id) (at or after next.not_before when it is set);
- wait: call resume_run(run_id) at or after next.not_before;
- await_approval: people must decide; tell them next.human_command, then resume_run at next.not_before;
- decide: a step's effect is unknown; ask a person (next.options) or, if allowed, resume_run with
  retry_step/skip_step;
- fix_and_retry: the run failed; report next.reason; a person fixes it and records the retry; poll get_run;
- wait_elsewhere: another executor drives it; call get_run at next.not_before, never resume it;
- conflict: its lock is held by another run (next.holder); start again when that run is over, never act on it;
- handoff: the next step needs a longer budget (next.budget_fits) than you gave: hand it over;
- none: over (`state` says how).
A person's approve/decide/retry only records a decision: you continue with resume_run. Act only on runs you
started. Calls that run steps return before their budget: a run not finished is paused or waiting, never
lost; completed steps never run again.
"""


@dataclass
class Call:
    """One tool call: its hard deadline (``time.monotonic()``), budget, and the run it drives once known."""

    deadline: float
    budget: str
    run_id: str | None = None
    observers: list[Callable[..., None]] = field(default_factory=list)
    """In-process observers of the drive's committed events (progress)."""
    cancelled: bool = False
    """The client cancelled the call: do not start driving (a run already created is paused instead)."""


@dataclass(frozen=True)
class Hints:
    """MCP tool annotations (hints for the client; see the spec's ToolAnnotations)."""

    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


@dataclass(frozen=True)
class ToolSpec:
    """One MCP tool."""

    name: str
    title: str
    description: str
    args: type[BaseModel]
    output: type[BaseModel]
    fn: Callable[[Client, Any, Call], BaseModel]
    hints: Hints
    drives: bool = False
    """Runs steps under a budget (progress, cancellation, the hard deadline)."""
    input_schema: dict[str, Any] = field(default_factory=dict)

    def call(self, client: Client, raw: dict[str, Any], c: Call) -> BaseModel:
        """Validate ``raw`` against the arguments model and run the tool."""
        return self.fn(client, self.args.model_validate(raw), c)


# ---------------------------------------------------------------------- arguments


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


RunId = Field(description="the run's id (or its first 6+ characters)")
BudgetArg = Field(default=None, description="how long this call may run steps (seconds, or '20s'); default: the server's")


class NoArgs(_Args):
    """No arguments."""


class NameArgs(_Args):
    name: str = Field(description="the runbook's name")


class PlanArgs(_Args):
    runbook: str = Field(description="the runbook's name (list_runbooks)")
    params: dict[str, Any] = Field(default_factory=dict, description="as its params_schema says (describe_runbook)")


class StartArgs(PlanArgs):
    budget: float | str | None = BudgetArg
    idempotency_key: str | None = Field(default=None, description="a repeated key returns its run, never a second one")


class RunArgs(_Args):
    run_id: str = RunId


class ResumeArgs(RunArgs):
    budget: float | str | None = BudgetArg
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many steps")
    retry: bool = Field(default=False, description="retry a failed run's failed steps (cause fixed)")
    retry_step: str | None = Field(default=None, description="unknown step: run its action again")
    skip_step: str | None = Field(default=None, description="unknown step: treat it as done")


class ListRunsArgs(_Args):
    runbook: str | None = Field(default=None, description="only runs of this runbook")
    states: list[Literal["queued", "running", "paused", "waiting", "succeeded", "failed", "cancelled", "interrupted"]] = Field(
        default_factory=list, description="only runs in these states")  # fmt: skip
    limit: int = Field(default=20, ge=1, le=200)
    before: str | None = Field(default=None, description="runs older than this run id (next_before)")


class EventsArgs(RunArgs):
    after: int = Field(default=0, ge=0, description="events after this seq")
    limit: int = Field(default=200, ge=1, le=1000)


class LogsArgs(RunArgs):
    step: str | None = Field(default=None, description="only this step's output")
    target: str | None = Field(default=None, description="only this fan-out target's output")
    stream: Literal["stdout", "stderr", "body", "log"] | None = Field(default=None, description="only this stream")


class ControlArgs(RunArgs):
    reason: str = Field(default="", description="why (recorded in the journal)")


class CancelArgs(ControlArgs):
    rollback: bool = Field(default=False, description="undo completed steps first")


class DecideArgs(RunArgs):
    comment: str = Field(default="", description="recorded with the decision")
    step: str | None = Field(default=None, description="the approval step (default: the one waiting)")


class LogLineView(BaseModel):
    """One captured line (``runbook logs --json``)."""

    step: str
    target: str | None
    stream: str
    n: int
    line: str
    attempt: int | None = None
    """The attempt that wrote it, counted over the run; None for a rollback's output."""
    part: str = "action"
    """``action``, ``rollback``, or a call the action made (``ctx.shell``, ``ctx.ssh``, ``ctx.http``)."""


class LogList(BaseModel):
    """``runbook logs --json``: every captured line of a run (or of one step)."""

    run_id: str
    lines: list[LogLineView]


# ---------------------------------------------------------------------- what tools do


def _start(client: Client, a: StartArgs, call: Call) -> RunResult:
    """Create the run already held by this call (no worker of a server can claim it first) and drive it within the
    budget; a repeated idempotency key returns its run as it is."""

    def created(run_id: str) -> None:
        call.run_id = run_id
        if call.cancelled:  # cancelled while the run was being created: its drive pauses it before any step
            client.pause(run_id, reason="the MCP client cancelled the call")

    return client.start(a.runbook, a.params, idempotency_key=a.idempotency_key, budget=call.budget, deadline=call.deadline,
                        observers=call.observers, on_created=created)  # fmt: skip


def _resume(client: Client, a: ResumeArgs, call: Call) -> RunResult:
    call.run_id = client.engine().resolve_id(a.run_id)
    return client.resume(call.run_id, budget=call.budget, deadline=call.deadline, max_steps=a.max_steps, retry=a.retry,
                         retry_step=a.retry_step, skip_step=a.skip_step, observers=call.observers)  # fmt: skip


def _readable_runs(client: Client, a: ListRunsArgs) -> RunList:
    """Up to ``a.limit`` runs the caller may read, newest first (:meth:`Client.list_runs`: an agent's page is filled
    with runs its policy lets it read)."""
    return client.list_runs(runbook=a.runbook, states=a.states, limit=a.limit, before=a.before)


def _logs(client: Client, a: LogsArgs) -> LogList:
    rid = client.engine().resolve_id(a.run_id)
    lines = client.logs(rid, step=a.step, target=a.target, stream=a.stream)
    return LogList(run_id=rid, lines=[LogLineView(**line.as_json()) for line in lines])


def _startable(client: Client) -> RunbookList:
    return client.runbooks()  # an agent client lists what its policy lets it start


READ = Hints(read_only=True, idempotent=True)


def _spec(name: str, title: str, description: str, args: type[_Args], output: type[BaseModel], fn: Callable[[Client, Any, Call], BaseModel],
          hints: Hints, *, drives: bool = False) -> ToolSpec:  # fmt: skip
    return ToolSpec(name, title, description, args, output, fn, hints, drives, args.model_json_schema())


def _fixed_tools(may_decide: bool) -> list[ToolSpec]:
    tools = [
        _spec("list_runbooks", "List runbooks", "The runbooks you may start, each with its params JSON Schema (runbook list --json).",
              NoArgs, RunbookList, lambda c, a, _: _startable(c), READ),
        _spec("describe_runbook", "Describe a runbook", "A runbook: description, params schema, steps (runbook show --json).", NameArgs, RunbookDetail, lambda c, a, _: c.describe(a.name), READ),
        _spec("plan_run", "Plan a run", "What a run would do, from read-only probes (commands, HTTP, SSH); "
              "nothing changes (runbook plan --json).", PlanArgs, PlanView, lambda c, a, _: c.plan(a.runbook, a.params),
              Hints(read_only=True, idempotent=True, open_world=True)),
        _spec("start_run", "Start a run", "Start a runbook and drive it within the budget; returns the run and its `next` "
              "(runbook run --json). Progress per step if asked.",
              StartArgs, RunResult, _start, Hints(destructive=True, open_world=True), drives=True),
        _spec("resume_run", "Resume a run", "Drive a run you started on from where it stopped, within the budget; done steps "
              "never run again (runbook resume --json).", ResumeArgs, RunResult, _resume,
              Hints(destructive=True, open_world=True), drives=True),
        _spec("get_run", "Get a run", "A run's state, steps (output tails) and `next` (runbook status --json).",
              RunArgs, RunResult, lambda c, a, _: c.status(a.run_id), READ),
        _spec("list_runs", "List runs", "Runs you may read, newest first (runbook runs --json).", ListRunsArgs, RunList,
              lambda c, a, _: _readable_runs(c, a), READ),
        _spec("read_events", "Read a run's events", "A run's journal events (runbook events --json).",
              EventsArgs, EventList, lambda c, a, _: c.events(a.run_id, after=a.after, limit=a.limit), READ),
        _spec("read_logs", "Read a run's output", "A run's whole captured output, as lines (runbook logs --json).", LogsArgs, LogList, lambda c, a, _: _logs(c, a), READ),
        _spec("pause_run", "Pause a run", "Stop a run you started at its next step boundary (runbook pause --json).",
              ControlArgs, RunResult, lambda c, a, _: c.pause(a.run_id, reason=a.reason), Hints(idempotent=True)),
        _spec("cancel_run", "Cancel a run", "Stop a run you started for good; a step in flight is stopped "
              "(runbook cancel --json).", CancelArgs, RunResult,
              lambda c, a, _: c.cancel(a.run_id, reason=a.reason, rollback=a.rollback),
              Hints(destructive=True, idempotent=True, open_world=True)),
    ]  # fmt: skip
    if may_decide:
        tools += [
            _spec("approve_run", "Approve a run's step", "Approve the approval step a run waits on: it lets the step act. Only "
                  "runbooks the agent policy lets agents approve; never a run you started when the step needs someone else. "
                  "Records the decision; resume_run continues.", DecideArgs, RunResult,
                  lambda c, a, _: c.approve(a.run_id, comment=a.comment, step=a.step), Hints(destructive=True)),
            _spec("deny_run", "Deny a run's step", "Deny the approval step a run waits on (the step fails when the run is resumed). "
                  "Records the decision.", DecideArgs, RunResult, lambda c, a, _: c.deny(a.run_id, comment=a.comment, step=a.step),
                  Hints()),
        ]  # fmt: skip
    return tools


def _with_runbook_enum(tool: ToolSpec, names: list[str]) -> ToolSpec:
    """``tool`` with its ``runbook`` argument limited to ``names`` (what the caller may start)."""
    schema = dict(tool.input_schema)
    props = dict(schema.get("properties", {}))
    prop = dict(props["runbook"])
    if names:
        prop["enum"] = names
    props["runbook"] = prop
    schema["properties"] = props
    return ToolSpec(tool.name, tool.title, tool.description, tool.args, tool.output, tool.fn, tool.hints, tool.drives, schema)


def tool_specs(client: Client) -> list[ToolSpec]:
    """Every tool, for the runbooks the client's catalog holds now and its agent policy allows."""
    names = [rb.name for rb in client.runbooks().runbooks]
    may_decide = client.agent and any(client.agent_may_decide(rb.name) for rb in client.catalog)
    tools = [_with_runbook_enum(t, names) if t.name in ("start_run", "plan_run") else t for t in _fixed_tools(may_decide)]
    assert all(TOOL_NAME.match(t.name) for t in tools)
    return tools


def summary(result: BaseModel) -> str:
    """One line for the text content of a result: what a client that shows only text needs to go on."""
    if isinstance(result, RunResult):
        return run_line(result)
    if isinstance(result, RunbookList):
        return f"{len(result.runbooks)} runbook(s): {', '.join(rb.name for rb in result.runbooks) or 'none'}"
    if isinstance(result, RunbookDetail):
        return f"runbook {result.name}: {result.steps} step(s); params: {', '.join(result.params_schema.get('properties', {})) or 'none'}"
    if isinstance(result, PlanView):
        return f"plan of {result.runbook}: " + ", ".join(f"{s.id} {s.verdict}" for s in result.steps)
    if isinstance(result, RunList):
        return f"{len(result.runs)} run(s)" + (f"; more before {result.next_before}" if result.next_before else "")
    if isinstance(result, EventList):
        return f"{len(result.events)} event(s) of run {result.run_id}" + (f", last seq {result.events[-1].seq}" if result.events else "")
    if isinstance(result, LogList):
        return f"{len(result.lines)} line(s) of output of run {result.run_id}"
    return type(result).__name__


def run_line(view: RunView) -> str:
    """``run ID (runbook) STATE; next: ACTION [step S] [not before T]``: the loop's essentials in one line."""
    nxt = view.next
    parts = [f"run {view.run_id} ({view.runbook}) {view.state}", f"next: {nxt.action}"]
    if nxt.step:
        parts.append(f"step {nxt.step}")
    if nxt.not_before:
        parts.append(f"not before {nxt.not_before}")
    line = "; ".join(parts[:1]) + "; " + " ".join(parts[1:])
    return f"{line}; {nxt.reason}" if nxt.reason and nxt.action != "none" else line
