"""Sub-runbooks: a ``runbook:`` step starts its child run once and drives it within the parent's limits.

The child has its own journal and ``parent_run_id``; it inherits the parent's principal, agent flag (so the
agent policy applies to it and to its params), its approval gates from that policy, and what is left of the
parent's budget. Nesting is limited (:data:`MAX_DEPTH`) and a runbook that calls itself, directly or through
others, is refused before the child is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.errors import UsageError
from runner.store.progress import ChildLink, RunOptions
from runner.store.records import TERMINAL_STATES, RunRecord, RunState, StepState

if TYPE_CHECKING:
    from runner.catalog import Catalog
    from runner.context import Context
    from runner.engine.engine import Engine
    from runner.engine.execution import Execution

__all__ = ["MAX_DEPTH", "child_run", "refuse_static_cycle"]

MAX_DEPTH = 8
"""Sub-runbook runs nest at most this deep (a top-level run is depth 0)."""


def child_run(exe: Execution, ctx: Context, runbook: str, params: dict[str, Any]) -> dict[str, Any]:
    """Start the sub-runbook of ``ctx``'s step once (idempotently) and drive it within the parent's limits."""
    from runner.engine.execution import DriveOptions

    engine = exe.engine
    unit = exe.unit_of(ctx)
    progress = unit.rec.progress if unit is not None else exe.steps[ctx.step_id].progress
    if progress.child is None:
        options = RunOptions.from_json(exe.run.options)
        _refuse_cycle(engine, exe.run, runbook, options.depth)
        from runner.authority import Principal

        who = Principal.from_json(options.principal, agent=options.agent, default=exe.run.started_by)
        view = engine.start(runbook, params, started_by=exe.run.started_by, trigger=exe.run.trigger,
                            idempotency_key=f"child:{exe.run.id}:{ctx.step_id}", parent=(exe.run.id, ctx.step_id), execute=False,
                            principal=who, run_options={"depth": options.depth + 1})  # fmt: skip
        progress.child = ChildLink(run_id=view.run_id, attempt=ctx.attempt)
        exe.services.persist_state(ctx)
    link = progress.child
    child = engine.store.get_run(link.run_id)
    retry = child.state == RunState.FAILED and ctx.attempt > link.attempt
    if retry:
        link.attempt = ctx.attempt
    if child.state in TERMINAL_STATES or (child.state == RunState.FAILED and not retry):
        return engine.view(link.run_id).model_dump(mode="json")
    if child.state == RunState.WAITING and child.wake_at is None and not _has_news(engine, child):
        return engine.view(link.run_id).model_dump(mode="json")
    in_process = exe.opts.wait_in_process and exe.opts.max_steps is None  # `step`/--max-steps never sleep in a child
    opts = DriveOptions(deadline=exe.opts.deadline, budget=exe.opts.budget, retry_failed=retry, actor=exe.opts.actor,
                        wait_in_process=in_process, detach=exe.opts.detach)  # fmt: skip
    result = engine.drive(link.run_id, opts)
    if result.next.budget_fits:
        exe.child_fits[ctx.step_id] = int(result.next.budget_fits)
    return result.model_dump(mode="json")


def _refuse_cycle(engine: Engine, run: RunRecord, runbook: str, depth: int) -> None:
    """Refuse a child that would nest too deep or call a runbook already running above it."""
    if depth + 1 > MAX_DEPTH:
        raise UsageError(f"sub-runbook '{runbook}' would nest {depth + 1} levels deep; the limit is {MAX_DEPTH}")
    chain = [run.runbook]
    parent = run.parent_run_id
    while parent is not None and len(chain) <= MAX_DEPTH:
        above = engine.store.get_run(parent)
        chain.append(above.runbook)
        parent = above.parent_run_id
    if runbook in chain:
        path = " -> ".join([*reversed(chain), runbook])
        raise UsageError(f"sub-runbook cycle: {path}; a runbook cannot run itself, directly or through others")


def _has_news(engine: Engine, child: RunRecord) -> bool:
    """Decisions (approvals, step decisions) recorded for a waiting child since it last ran."""
    from runner.engine.approvals import find_point, votes_for
    from runner.engine.decisions import pending

    if pending(engine.store, child.id):
        return True
    steps = engine.store.get_steps(child.id)
    point = find_point(engine, child, [s for s in steps if s.state == StepState.WAITING])
    return point is not None and bool(votes_for(engine, point))


def refuse_static_cycle(catalog: Catalog, name: str) -> None:
    """Refuse, before a run is created, a runbook whose sub-runbook steps (literal names) lead back to one of them.

    A runbook that calls itself directly or through others would otherwise act, then nest until the depth limit.
    (Names given by a template are checked when the child starts.)
    """
    from runner.errors import RunbookNotFound
    from runner.steptypes import is_template

    def callees(runbook: str) -> list[str]:
        try:
            spec = catalog.get(runbook).spec
        except RunbookNotFound:
            return []  # reported when the step runs (and by `runbook validate`)
        out = []
        for step in spec.steps:
            target = step.action.config.get("name") if step.action.type == "runbook" else None
            if isinstance(target, str) and not is_template(target):
                out.append(target)
        return out

    path: list[str] = []

    def visit(runbook: str) -> list[str] | None:
        if runbook in path:
            return [*path[path.index(runbook) :], runbook]
        if len(path) > MAX_DEPTH:
            return None
        path.append(runbook)
        for callee in callees(runbook):
            found = visit(callee)
            if found:
                return found
        path.pop()
        return None

    cycle = visit(name)
    if cycle:
        raise UsageError(f"runbook '{name}' cannot start: sub-runbook cycle {' -> '.join(cycle)}; a runbook cannot run itself, "
                         "directly or through others", hint="`runbook validate` reports every cycle")  # fmt: skip
