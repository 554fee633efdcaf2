"""The engine: start, resume, pause, cancel, approve and inspect runs. One API for CLI, server, MCP and Python."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from runner.engine.execution import STOPPED_BY_CANCEL, DriveOptions, Execution, close_steps
from runner.engine.holder import current_holder, is_alive
from runner.engine.runtime import new_run_id
from runner.engine.views import CommandHint, RunView, build_view
from runner.errors import InvalidState, ParamsError, PolicyDenied, RunNotFound, UsageError, ValidationError
from runner.params import validate_params
from runner.store.records import (
    ACTIVE_STATES,
    IN_FLIGHT_STEP_STATES,
    TERMINAL_STATES,
    NewEvent,
    NewRun,
    RunRecord,
    RunState,
    StepPatch,
    StepState,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.catalog import Catalog, LoadedRunbook
    from runner.context import Context
    from runner.plugin import PluginHost
    from runner.settings import Settings
    from runner.store.base import Store
    from runner.store.records import Event

__all__ = ["AgentPolicy", "Engine"]

_MISSING = object()

_AGENT_START_LOCK = threading.Lock()
"""Serialises counting active agent runs and creating one, for every engine of this process (a server has
several), so ``max_concurrent_runs`` holds under concurrent starts. Separate processes sharing one store can
still race by the time between the count and the insert."""


class AgentPolicy(Protocol):
    """What the engine asks an agent policy (see :mod:`runner.policy`). Enforced for every agent-started run."""

    def check_start(self, runbook: str, params: dict[str, Any], *, active_runs: int) -> None:
        """Raise :class:`~runner.errors.PolicyDenied` if an agent may not start this run."""

    def approval_steps(self, runbook: str) -> list[str]:
        """Ids of steps that need a human approval before they act in an agent-started run."""


class Engine:
    """Runs runbooks from a catalog against a journal store."""

    def __init__(self, host: PluginHost, store: Store, catalog: Catalog, settings: Settings, *, holder_kind: str = "cli") -> None:
        from runner.templating import Renderer

        self.host, self.store, self.catalog, self.settings = host, store, catalog, settings
        self.renderer = Renderer(dict(host.template_filters.items()))
        self.holder = current_holder(holder_kind)
        self.lease_ttl = float(os.environ.get("RUNBOOK_LEASE_TTL", "30"))
        self.hint = CommandHint()
        self._active: list[Execution] = []
        self.notices: list[str] = []
        self.extra_secrets: list[str] = []
        """Values every run of this engine masks besides its own secrets (e.g. the server's API tokens)."""
        self.policy: AgentPolicy | None = None
        """Agent policy applied to runs started with ``agent=True``."""
        self.observers: list[Callable[[Event, RunRecord], None]] = []
        """In-process observers of committed events (the CLI's live view); plugins use ``runbook_on_event``."""

    # ------------------------------------------------------------------ looking up

    def resolve_id(self, run_id: str) -> str:
        """Full run id for ``run_id`` or an unambiguous prefix of it (at least 6 characters)."""
        if run_id.isalnum():
            run_id = run_id.upper()  # ULIDs are case-insensitive; they are stored upper-case
        if len(run_id) == 26:
            return run_id
        if len(run_id) >= 6:
            found = self.store.find_run_ids(run_id.upper() if run_id.isalnum() else run_id)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UsageError(f"run id prefix '{run_id}' is ambiguous ({', '.join(found)}, ...); give more characters")
        elif run_id:
            raise UsageError(f"run id '{run_id}' is too short: give the whole id (26 characters) or at least its first 6")
        raise RunNotFound(run_id)

    def runbook_for(self, run: RunRecord) -> LoadedRunbook:
        """The runbook a run executes: the catalog's, or the run's stored snapshot if it is gone."""
        from runner.catalog import LoadedRunbook
        from runner.errors import RunbookNotFound
        from runner.model import RunbookSpec

        try:
            return self.catalog.get(run.runbook)
        except RunbookNotFound:
            broken = [p for p in self.catalog.problems if p.file == run.file]
            if broken:  # the runbook is still there but an edit broke it: say so rather than run the old version
                raise ValidationError(broken) from None
            spec = RunbookSpec.model_validate(self.store.get_spec(run.id))
            self.notices.append(f"runbook '{run.runbook}' is no longer in the catalog; running the snapshot stored with run {run.id}")
            return LoadedRunbook.of(spec, f"{run.file} (snapshot stored with the run)", self.host.step_types)

    def view(self, run_id: str) -> RunView:
        """The run's current view, with ``next`` spelled for this engine's caller."""
        run = self.store.get_run(run_id)
        gone = run.state == RunState.RUNNING and self._holder_gone(run)
        return build_view(run, self.store.get_steps(run_id), self._hint_for(run), holder_gone=gone)

    def _hint_for(self, run: RunRecord) -> CommandHint:
        """``self.hint``, with its budget raised to one that fits the step a paused run stopped before.

        Without that, following ``next.command`` of a run paused before a step its budget can never fit
        would pause again at once, forever.
        """
        if run.state != RunState.PAUSED or self.hint.budget is None:
            return self.hint
        # The pause is the executor's last event; only outside requests (a few) can follow it.
        paused = self.store.events(run.id, after=max(0, run.last_seq - 100), types=("run.paused",))
        fits = paused[-1].data.get("budget_fits") if paused else None
        return self.hint.at_least(float(fits)) if fits else self.hint

    status = view

    @staticmethod
    def _holder_gone(run: RunRecord) -> bool:
        """No live executor holds this run: none recorded, its process is gone, or its lease expired."""
        if run.holder is None:
            return True
        if run.lease_expires_at is not None and run.lease_expires_at < time.time():
            return True
        return is_alive(run.holder) is False

    # ------------------------------------------------------------------ starting

    def start(
        self,
        name: str,
        params: dict[str, Any],
        *,
        started_by: str | None = None,
        idempotency_key: str | None = None,
        trigger: dict[str, Any] | None = None,
        parent: tuple[str, str] | None = None,
        options: DriveOptions | None = None,
        execute: bool = True,
        agent: bool = False,
        run_options: dict[str, Any] | None = None,
    ) -> RunView:
        """Create a run of ``name`` (or return the run of a repeated ``idempotency_key``) and drive it.

        A repeated key that asks for another runbook or other params is a :class:`~runner.errors.UsageError`,
        unless ``trigger`` or ``parent`` is given: those callers (alert intake, HTTP API, sub-runbook steps)
        derive the key themselves and decide what a run of another request means for them.

        ``agent=True`` marks the run as started by an agent: the agent policy (``self.policy``) is checked
        first, and the steps it names get a human approval gate before they act. ``run_options`` are
        stored with the run (e.g. ``{"gates": {step_id: approval_config}}`` from an alert route).
        """
        rb = self.catalog.get(name)
        validated = validate_params(name, rb.params_model, params)
        stored = validated.model_dump(mode="json")
        _refuse_unknown_secret_schemes(name, rb.spec.params, stored, self.host.secret_providers.names())
        actor = started_by or self.settings.actor
        if agent:
            with _AGENT_START_LOCK:  # count and create together; the run is driven after the lock is released
                run_options = {**(run_options or {}), **self._agent_options(name, stored)}
                run, created = self._create(rb, name, stored, actor, idempotency_key, trigger, parent, execute, run_options)
        else:
            run, created = self._create(rb, name, stored, actor, idempotency_key, trigger, parent, execute, run_options or {})
        if not created and trigger is None and parent is None:
            _refuse_another_request(idempotency_key or "", run, name, stored)
        if not created or not execute:
            return self.view(run.id)
        return self.drive(run.id, options or DriveOptions(actor=actor))

    def _create(self, rb: LoadedRunbook, name: str, stored: dict[str, Any], actor: str, idempotency_key: str | None,
                trigger: dict[str, Any] | None, parent: tuple[str, str] | None, execute: bool,
                run_options: dict[str, Any]) -> tuple[RunRecord, bool]:  # fmt: skip
        """Insert the run (leased to this engine when it will execute it at once)."""
        lock_key = None
        if rb.spec.lock:
            lock_key = str(self.renderer.render(rb.spec.lock, {"params": stored, "run": {"started_by": actor}}, file=rb.file, field="lock"))
        new = NewRun(
            id=new_run_id(), runbook=name, params=stored, started_by=actor, content_hash=rb.content_hash,
            step_hashes=rb.step_hashes, spec=rb.spec_json, file=rb.file,
            step_ids=[s.id for s in rb.spec.steps], trigger=trigger, idempotency_key=idempotency_key, lock_key=lock_key,
            parent_run_id=parent[0] if parent else None, parent_step_id=parent[1] if parent else None, options=run_options,
            created_event={"runbook": name, "params": stored, "content_hash": rb.content_hash, "lock": lock_key,
                           "trigger": (trigger or {}).get("source"), "parent": parent[0] if parent else None},
            holder=self.holder if execute else None, lease_ttl=self.lease_ttl,
        )  # fmt: skip
        return self.store.create_run(new)

    def _agent_options(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Check the agent policy and return the run options it implies (durable approval gates)."""
        if self.policy is None:
            return {"agent": True}
        active = [r for r in self.store.list_runs(states=list(ACTIVE_STATES), limit=10000) if r.options.get("agent")]
        self.policy.check_start(name, params, active_runs=len(active))
        step_ids = [s.id for s in self.catalog.get(name).spec.steps]
        unknown = [s for s in self.policy.approval_steps(name) if s not in step_ids]
        if unknown:  # fail closed: a typo must not leave the step it meant ungated
            raise PolicyDenied(f"the policy requires approval for step(s) {', '.join(unknown)} that runbook '{name}' does not have "
                               f"(its steps: {', '.join(step_ids)}); fix the policy")  # fmt: skip
        gates = {
            step_id: {"message": f"run started by an agent: approve step '{step_id}' of {name} before it acts?",
                      "approvers": 1, "distinct_from_starter": True}
            for step_id in self.policy.approval_steps(name)
        }  # fmt: skip
        return {"agent": True, "gates": gates}

    # ------------------------------------------------------------------ driving

    def resume(self, run_id: str, options: DriveOptions) -> RunView:
        """Continue a run from where it stopped (see DESIGN.md, "Durability")."""
        run = self.store.get_run(run_id)
        if run.state in TERMINAL_STATES:
            # Idempotent for callers that retry: report the outcome instead of failing.
            self.notices.append(f"run {run.id} already {run.state}; nothing to resume")
            return self.view(run_id)
        if run.state == RunState.FAILED and not (options.retry_failed or options.retry_step or options.skip_step):
            raise UsageError(
                f"run {run.id} failed: {run.reason}",
                hint=f"fix the cause, then `runbook resume {run.id} --retry` (or --skip-step STEP)",
            )
        return self.drive(run.id, options)

    def drive(self, run_id: str, options: DriveOptions) -> RunView:
        """Acquire the run's lease and execute it until it stops; returns the resulting view."""
        run = self.store.get_run(run_id)
        rb = self.runbook_for(run)
        lease = self.store.acquire(run_id, self.holder, self.lease_ttl, force=options.force, is_alive=is_alive)
        run = self.store.get_run(run_id)
        exe = Execution(self, run, rb, lease, options)
        self._active.append(exe)
        try:
            exe.drive()
        finally:
            self._active.remove(exe)
            self.notices.extend(options.notices)
        return self.view(run_id)

    def interrupt(self) -> None:
        """Forward a SIGINT/SIGTERM to every execution in this process."""
        for exe in list(self._active):
            exe.interrupt()

    # ------------------------------------------------------------------ requests

    def pause(self, run_id: str, *, actor: str, reason: str = "") -> RunView:
        """Ask a run to stop at its next step boundary (at once if nothing is executing it)."""
        run = self.store.get_run(run_id)
        if run.state in TERMINAL_STATES or run.state == RunState.FAILED:
            raise InvalidState(run.id, str(run.state), "pause it")
        self.store.request(run_id, "pause", actor=actor, reason=reason or "pause requested")
        if run.state in (RunState.QUEUED, RunState.WAITING, RunState.INTERRUPTED):
            self._settle(run_id, RunState.PAUSED, f"paused by {actor}", actor)
        return self.view(run_id)

    def cancel(self, run_id: str, *, actor: str, reason: str = "") -> RunView:
        """Stop a run for good: an executing step's process is stopped; an idle run is cancelled at once."""
        run = self.store.get_run(run_id)
        if run.state in TERMINAL_STATES:
            raise InvalidState(run.id, str(run.state), "cancel it")
        why = reason or f"cancelled by {actor}"
        self.store.request(run_id, "cancel", actor=actor, reason=why)
        self.cancel_children(run_id, why)  # a sub-runbook in flight stops now, not when its parent next looks
        if run.state != RunState.RUNNING or self._holder_gone(run):
            self._settle(run_id, RunState.CANCELLED, why, actor)
        return self.view(run_id)

    def _settle(self, run_id: str, state: RunState, reason: str, actor: str) -> None:
        """Move an idle run to ``state`` under a short lease (no-op if an executor holds it)."""
        from runner.errors import LeaseHeld

        try:
            lease = self.store.acquire(run_id, self.holder, self.lease_ttl, force=False, is_alive=is_alive, take_lock=False)
        except LeaseHeld:
            return  # an executor holds it: it sees the request at its next boundary
        settleable = {RunState.QUEUED, RunState.WAITING, RunState.INTERRUPTED, RunState.RUNNING}
        if state == RunState.CANCELLED:
            settleable |= {RunState.PAUSED, RunState.FAILED}
        if lease.previous_state not in settleable:  # finished (or paused) in the meantime: leave it as it is
            self.store.release(lease)
            return
        try:
            cols: dict[str, Any] = {"state": state, "reason": reason}
            events: list[NewEvent] = []
            patches: list[StepPatch] = []
            if state == RunState.CANCELLED:
                cols.update(finished_at=time.time(), cancel_requested=False)
                steps = self.store.get_steps(run_id)
                in_flight = {r.step_id for r in steps if r.state in IN_FLIGHT_STEP_STATES}
                if lease.took_over:  # its executor died: what its steps in flight left running stops too
                    from runner.leftovers import stop_as_event

                    renewed = [time.monotonic()]

                    def renew() -> None:  # no heartbeat here: keep the short lease while waiting for them
                        if time.monotonic() - renewed[0] > lease.ttl / 3:
                            self.store.renew(lease)
                            renewed[0] = time.monotonic()

                    if in_flight and (event := stop_as_event(run_id, in_flight, tick=renew)) is not None:
                        events.append(event)
                closed, patches = close_steps(steps, STOPPED_BY_CANCEL, StepState.FAILED, reason, time.time())
                events += closed
            else:
                cols["pause_requested"] = False
            events.append(NewEvent(f"run.{state}", actor=actor, data={"reason": reason}))
            self.store.commit(lease, events=events, run=cols, steps=patches)
        finally:
            self.store.release(lease)
        if state == RunState.CANCELLED:
            self.cancel_children(run_id, reason)

    def cancel_children(self, run_id: str, reason: str) -> None:
        """Cancel the sub-runbook runs of ``run_id`` that are still active."""
        for child in self.store.list_runs(parent=run_id, limit=1000):
            if child.state not in TERMINAL_STATES and child.state != RunState.FAILED:
                self.cancel(child.id, actor="parent run", reason=f"parent run {run_id} cancelled: {reason}")

    def decide(self, run_id: str, *, actor: str, approve: bool, comment: str = "", step_id: str | None = None) -> RunView:
        """Record an approval or a denial for the run's waiting approval step."""
        from runner.engine.approvals import check_decision, refuse_late

        run = self.store.get_run(run_id)
        steps = self.store.get_steps(run_id)
        decision = check_decision(self, run, steps, actor=actor, approve=approve, step_id=step_id)
        target_run, step = decision.run_id, decision.step_id
        kind = "approve" if approve else "deny"
        event = self.store.request(target_run, kind, actor=actor, reason=comment or f"{kind}d", data={"step_id": step, "comment": comment})
        refuse_late(decision, event.ts, kind, recorded=True)
        parent = self.store.get_run(target_run).parent_run_id
        while parent is not None:  # sub-runbook runs are driven by their parent: wake the whole chain for workers
            self.store.request(parent, "wake", actor=actor, reason=f"{kind}d in sub-runbook run {target_run}")
            parent = self.store.get_run(parent).parent_run_id
        return self.view(run_id)

    # ------------------------------------------------------------------ sub-runbooks

    def child_run(self, exe: Execution, ctx: Context, runbook: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start the sub-runbook of ``ctx``'s step once (idempotently) and drive it within the parent's limits."""
        child_id = ctx.state.get("child_run_id")
        if child_id is None:
            view = self.start(runbook, params, started_by=exe.run.started_by, trigger=exe.run.trigger,
                              idempotency_key=f"child:{exe.run.id}:{ctx.step_id}", parent=(exe.run.id, ctx.step_id), execute=False)  # fmt: skip
            child_id = ctx.state["child_run_id"] = view.run_id
            ctx.state["child_attempt"] = ctx.attempt
            exe.persist_state(ctx)
        child = self.store.get_run(child_id)
        retry = child.state == RunState.FAILED and ctx.attempt > int(ctx.state.get("child_attempt", 0))
        if retry:
            ctx.state["child_attempt"] = ctx.attempt
        if child.state in TERMINAL_STATES or (child.state == RunState.FAILED and not retry):
            return self.view(child_id).model_dump(mode="json")
        if child.state == RunState.WAITING and child.wake_at is None and not self._has_decisions(child):
            return self.view(child_id).model_dump(mode="json")
        in_process = exe.opts.wait_in_process and exe.opts.max_steps is None  # `step`/--max-steps never sleep in a child
        opts = DriveOptions(deadline=exe.opts.deadline, retry_failed=retry, actor=exe.opts.actor, wait_in_process=in_process)
        return self.drive(child_id, opts).model_dump(mode="json")

    def _has_decisions(self, run: RunRecord) -> bool:
        waiting = [s for s in self.store.get_steps(run.id) if s.state == StepState.WAITING]
        return any(self.store.events(run.id, after=int(s.data.get("state", {}).get("since_seq", 0)), types=("request.approve", "request.deny"))
                   for s in waiting)  # fmt: skip


def _refuse_another_request(key: str, run: RunRecord, runbook: str, params: dict[str, Any]) -> None:
    """Refuse a repeated idempotency key that asks for another runbook or other params than its run has.

    Names the params that differ, never their values (a secret param's reference included).
    """
    if run.runbook != runbook:
        differs = f"of runbook '{run.runbook}', not '{runbook}'"
    else:
        names = sorted(k for k in {*run.params, *params} if run.params.get(k, _MISSING) != params.get(k, _MISSING))
        if not names:
            return
        differs = f"started with other values for param(s) {', '.join(names)}"
    raise UsageError(f"idempotency key '{key}' belongs to run {run.id} {differs}",
                     hint=f"repeat the original request to get run {run.id}, or use another key to start a new run")  # fmt: skip


def _refuse_unknown_secret_schemes(runbook: str, specs: dict[str, Any], values: dict[str, Any], schemes: list[str]) -> None:
    """Refuse, before anything is stored, a secret param whose scheme no provider knows: it is likely the value itself."""
    bad = [k for k, spec in specs.items() if spec.secret and isinstance(values.get(k), str) and values[k].partition(":")[0] not in schemes]
    if bad:
        known = ", ".join(f"{s}:" for s in schemes)
        raise ParamsError(runbook, [f"{k}: expected a reference with a known scheme ({known}), never the value itself" for k in bad])
