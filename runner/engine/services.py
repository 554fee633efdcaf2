"""What the engine offers step types while they run (:class:`runner.context.Services`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner.engine.steprunner import Unit
from runner.store.records import NewEvent

if TYPE_CHECKING:
    from runner.context import Context
    from runner.engine.execution import Execution
    from runner.model import Check
    from runner.steptypes import ActionResult, Wait

__all__ = ["StepServices"]


class StepServices:
    """The services of one drive, bound to its execution."""

    def __init__(self, exe: Execution) -> None:
        self.exe = exe
        self._calls: dict[int, str] = {}
        """Contexts (by id) inside a call of another step type (``ctx.shell``), and what it is: their lines' part."""

    def run_action(self, ctx: Context, type_name: str, config: dict[str, Any]) -> ActionResult | Wait:
        """``ctx.shell(...)`` and friends: run another step type with concrete values, if this executor still holds the run."""
        exe = self.exe
        exe.fence()  # an executor stopped past its lease (SIGSTOP) and taken over must not act again
        ctx.raise_if_cancelled()
        step_type = exe.host.step_types.get(type_name)
        model = step_type.Config.model_validate(step_type.shorthand(config), context={"rendered": True})
        previous, ctx.raw_config = ctx.raw_config, config  # these values are the caller's own, not templates
        outer = self._calls.get(id(ctx))
        self._calls[id(ctx)] = f"ctx.{type_name}"
        try:
            result: ActionResult | Wait = exe.host.execute_action(step_type, model, ctx)
        finally:
            ctx.raw_config = previous
            if outer is None:
                self._calls.pop(id(ctx), None)
            else:
                self._calls[id(ctx)] = outer
        if outer is None and ctx.streaming:
            self._keep_output(ctx, type_name, result)
        return result

    def _keep_output(self, ctx: Context, type_name: str, result: ActionResult | Wait) -> None:
        """Journal what a call of the action (``ctx.shell``) captured, like a step's output (redacted, capped by the
        called step type's ``max_output``), so ``runbook logs`` shows it after the step ended (``step.call_output``)."""
        from runner.engine.output import has_streams
        from runner.steptypes import ActionResult

        if not isinstance(result, ActionResult):
            return
        output = result.as_output() if result.output is None else None  # a step type's own value is not captured output
        if not has_streams(output):
            return
        payload: dict[str, Any] = {"call": f"ctx.{type_name}", "kind": ctx.kind, "output": self.exe.redactor.value(output)}
        if ctx.unit is not None:
            payload["target"] = ctx.unit
        self.exe.journal.commit([NewEvent("step.call_output", step_id=ctx.step_id, attempt=ctx.attempt, data=payload)])

    def evaluate_checks(self, ctx: Context, checks: list[Check], kind: str) -> tuple[bool, list[dict[str, Any]]]:
        """Evaluate compiled checks for the step of ``ctx`` (used by ``wait`` conditions)."""
        exe = self.exe
        unit = exe.unit_of(ctx) or Unit(exe.spec.step(ctx.step_id), exe.steps[ctx.step_id], ctx.target)
        return exe.prober.evaluate(checks, exe.template_ctx(unit.target), lambda: exe.probe_ctx(unit), kind)

    def approvals(self, ctx: Context) -> list[dict[str, Any]]:
        """Decisions recorded for the step of ``ctx`` since its approval request was made (``since`` in its state)."""
        since = int(ctx.state.get("since_seq", 0))
        events = self.exe.store.events(self.exe.run.id, after=since, types=("request.approve", "request.deny"))
        return [{"actor": e.actor, "decision": e.type.split(".", 1)[1], "comment": e.data.get("comment", ""), "ts": e.ts}
                for e in events if e.step_id == ctx.step_id]  # fmt: skip

    def last_seq(self) -> int:
        """Sequence number of the run's latest event."""
        return self.exe.store.get_run(self.exe.run.id).last_seq

    def child_run(self, ctx: Context, runbook: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start (once) or advance the sub-runbook of the step of ``ctx``; returns its run view."""
        from runner.engine.children import child_run

        return child_run(self.exe, ctx, runbook, params)

    def persist_state(self, ctx: Context) -> None:
        """Write the step-local ``ctx.state`` now (before an irreversible external effect)."""
        unit = self.exe.unit_of(ctx)
        if unit is not None:
            self.exe.save(unit, [])

    def journal(self, ctx: Context, kind: str, data: dict[str, Any]) -> None:
        """Append an informational event about the step of ``ctx``."""
        payload = dict(data)
        if ctx.unit is not None:
            payload["target"] = ctx.unit
        self.exe.journal.commit([NewEvent(f"step.{kind}", step_id=ctx.step_id, attempt=ctx.attempt, data=payload)])

    def output(self, ctx: Context, stream: str, line: str) -> None:
        """A line the step's command wrote: to live views now, and journaled in chunks while a long step runs."""
        self.exe.live_output(ctx, stream, line, self._calls.get(id(ctx), "action"))

    def resource(self, key: str, factory: Callable[[], Any]) -> Any:
        """A run-scoped resource (closed when this drive ends)."""
        return self.exe.resources.get(key, factory)
