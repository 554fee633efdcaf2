"""The engine: start, resume, pause, cancel, approve, decide and inspect runs. One API for CLI, server, MCP and Python.

Every public method takes the acting :class:`~runner.authority.Principal` (default: the engine's own) and asks
:func:`runner.authority.decide` first, so the same rules hold whichever surface asked.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import TYPE_CHECKING, Any, Literal

from runner.authority import Action, LivePolicy, Principal, decide, enforce
from runner.cursor import CommandHint
from runner.engine import requests
from runner.engine.execution import DriveOptions, Execution
from runner.engine.holder import current_holder, is_alive
from runner.engine.inspect import view_of
from runner.engine.runtime import new_run_id
from runner.errors import LeaseHeld, LockHeld, RunNotFound, UsageError, ValidationError
from runner.params import validate_params
from runner.secretrefs import check_secret_refs
from runner.store.progress import RunOptions
from runner.store.records import ACTIVE_STATES, TERMINAL_STATES, NewRun, RunRecord, RunState

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.catalog import Catalog, LoadedRunbook
    from runner.engine.output import OutputObserver
    from runner.plugin import PluginHost
    from runner.policy import Policy
    from runner.settings import Settings
    from runner.store.base import Store
    from runner.store.records import Event, Lease
    from runner.views import RunView

__all__ = ["Engine"]

_MISSING = object()

_AGENT_START_LOCK = threading.Lock()
"""Serialises counting active agent runs and creating one, for every engine of this process (a server has
several), so ``max_concurrent_runs`` holds under concurrent starts. Separate processes sharing one store can
still race by the time between the count and the insert."""


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
        self.policy: Policy | LivePolicy | None = None
        """The agent policy for agent principals (a :class:`LivePolicy` is read again whenever its file changes)."""
        self.principal = Principal.person(settings.actor)
        """Who acts when a call names nobody."""
        self.observers: list[Callable[[Event, RunRecord], None]] = []
        """In-process observers of committed events (the CLI's live view); plugins use ``runbook_on_event``."""
        self.output_observers: list[OutputObserver] = []
        """In-process observers of the lines running steps write (the CLI's live output), already redacted."""

    # ------------------------------------------------------------------ looking up and authority

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

    def current_policy(self) -> Policy | None:
        """The agent policy as it is now (a live policy file is read again when it changed)."""
        return self.policy.current() if isinstance(self.policy, LivePolicy) else self.policy

    def authorize(self, principal: Principal | None, action: Action, run: RunRecord) -> Principal:
        """Raise unless ``principal`` (default: the engine's) may do ``action`` on ``run``; returns the principal."""
        who = principal or self.principal
        enforce(decide(who, action, runbook=run.runbook, run=run, policy=self.current_policy() if who.is_agent else None))
        return who

    def view(self, run_id: str) -> RunView:
        """The run's current view, with ``next`` spelled for this engine's caller (no authority check: internal)."""
        return view_of(self, run_id)

    def status(self, run_id: str, *, principal: Principal | None = None) -> RunView:
        """The run's view for ``principal`` (who must be allowed to read it)."""
        self.authorize(principal, Action.READ, self.store.get_run(run_id))
        return self.view(run_id)

    # ------------------------------------------------------------------ starting

    def start(self, name: str, params: dict[str, Any], *, started_by: str | None = None, idempotency_key: str | None = None,
              trigger: dict[str, Any] | None = None, parent: tuple[str, str] | None = None, options: DriveOptions | None = None,
              execute: bool = True, agent: bool = False, run_options: dict[str, Any] | None = None,
              principal: Principal | None = None) -> RunView:  # fmt: skip
        """Create a run of ``name`` (or return the run of a repeated ``idempotency_key``) and drive it.

        A repeated key that asks for another runbook or other params is a :class:`~runner.errors.UsageError`,
        unless ``trigger`` or ``parent`` is given: those callers (alert intake, HTTP API, sub-runbook steps)
        derive the key themselves and decide what a run of another request means for them.

        An agent principal (or ``agent=True``) starts under the agent policy: it is checked first, and the steps
        it names get a human approval gate before they act. ``run_options`` are stored with the run.
        """
        run, created = self.create(name, params, started_by=started_by, idempotency_key=idempotency_key, trigger=trigger,
                                   parent=parent, execute=execute, agent=agent, run_options=run_options, principal=principal)  # fmt: skip
        if not created or not execute:
            return self.view(run.id)
        return self.drive(run.id, options or DriveOptions(actor=run.started_by))

    def create(self, name: str, params: dict[str, Any], *, started_by: str | None = None, idempotency_key: str | None = None,
               trigger: dict[str, Any] | None = None, parent: tuple[str, str] | None = None, execute: bool = False,
               agent: bool = False, run_options: dict[str, Any] | None = None,
               principal: Principal | None = None) -> tuple[RunRecord, bool]:  # fmt: skip
        """Create a run of ``name`` as :meth:`start` does (checked the same way), without driving or viewing it:
        ``(run, True)``, or ``(the earlier run, False)`` for a repeated ``idempotency_key`` (alert intake reads only
        the record). ``execute``: the run is created leased to this engine, to be driven at once. A repeated key that
        asks for another runbook or other params is a :class:`~runner.errors.UsageError` (see :meth:`start`)."""
        rb = self.catalog.get(name)
        if parent is None:
            from runner.engine.children import refuse_static_cycle

            refuse_static_cycle(self.catalog, name)
        validated = validate_params(name, rb.params_model, params)
        stored = validated.model_dump(mode="json")
        check_secret_refs(name, rb.spec.params, stored, self.host.secret_providers.names(), self.settings.secret_allow or ())
        actor = started_by or self.settings.actor
        who = principal or (Principal.agent(actor) if agent else self.principal)
        if who.is_agent:
            with _AGENT_START_LOCK:  # count and create together; the run is driven after the lock is released
                opts = self._agent_options(who, name, stored, parent is not None, run_options or {})
                run, created = self._create(rb, name, stored, actor, idempotency_key, trigger, parent, execute, opts)
        else:
            opts = RunOptions.from_json({**(run_options or {}), "principal": who.as_json()}).to_json()
            run, created = self._create(rb, name, stored, actor, idempotency_key, trigger, parent, execute, opts)
        if not created and trigger is None and parent is None:
            _refuse_another_request(idempotency_key or "", run, name, stored)
        return run, created

    def _create(self, rb: LoadedRunbook, name: str, stored: dict[str, Any], actor: str, idempotency_key: str | None,
                trigger: dict[str, Any] | None, parent: tuple[str, str] | None, execute: bool,
                run_options: dict[str, Any]) -> tuple[RunRecord, bool]:  # fmt: skip
        """Insert the run (leased to this engine when it will execute it at once); a held lock says who holds it."""
        try:
            return self._insert(rb, name, stored, actor, idempotency_key, trigger, parent, execute, run_options)
        except LockHeld as exc:
            raise self.conflict(exc) from None

    def conflict(self, exc: LockHeld) -> LockHeld:
        """``exc`` with its ``next`` (``conflict``: the run that holds the lock, never a command on that run)."""
        from runner.cursor import conflict_next

        exc.next = conflict_next(exc.run_id, exc.key, exc.run_id, self.hint)  # type: ignore[attr-defined]
        return exc

    def _insert(self, rb: LoadedRunbook, name: str, stored: dict[str, Any], actor: str, idempotency_key: str | None,
                trigger: dict[str, Any] | None, parent: tuple[str, str] | None, execute: bool,
                run_options: dict[str, Any]) -> tuple[RunRecord, bool]:  # fmt: skip
        lock_key = None
        if rb.spec.lock:
            lock_key = str(self.renderer.render(rb.spec.lock, {"params": stored, "run": {"started_by": actor}}, file=rb.file, field="lock"))
        new = NewRun(
            id=new_run_id(), runbook=name, params=stored, started_by=actor, content_hash=rb.content_hash,
            step_hashes=rb.step_hashes, spec=rb.snapshot(), file=rb.file,
            step_ids=list(rb.spec.steps.ids), trigger=trigger, idempotency_key=idempotency_key, lock_key=lock_key,
            parent_run_id=parent[0] if parent else None, parent_step_id=parent[1] if parent else None, options=run_options,
            created_event={"runbook": name, "params": stored, "content_hash": rb.content_hash, "lock": lock_key,
                           "trigger": (trigger or {}).get("source"), "parent": parent[0] if parent else None},
            holder=self.holder if execute else None, lease_ttl=self.lease_ttl,
        )  # fmt: skip
        return self.store.create_run(new)

    def _agent_options(self, who: Principal, name: str, params: dict[str, Any], child: bool, base: dict[str, Any]) -> dict[str, Any]:
        """Check the agent policy (a child run too, at any depth) and return the run options it implies (approval gates)."""
        from runner.errors import PolicyDenied

        options = RunOptions.from_json({**base, "agent": True, "principal": who.as_json()})
        policy = self.current_policy()
        if policy is None:
            enforce(decide(who, Action.CHILD_START if child else Action.START, runbook=name, params=params))
            return options.to_json()
        active = 0 if child else sum(1 for r in self.store.list_runs(states=list(ACTIVE_STATES), limit=10000) if r.options.get("agent"))
        action = Action.CHILD_START if child else Action.START
        enforce(decide(who, action, runbook=name, policy=policy, params=params, active_runs=active))
        step_ids = list(self.catalog.get(name).spec.steps.ids)
        unknown = [s for s in policy.approval_steps(name) if s not in step_ids]
        if unknown:  # fail closed: a typo must not leave the step it meant ungated
            raise PolicyDenied(f"the policy requires approval for step(s) {', '.join(unknown)} that runbook '{name}' does not have "
                               f"(its steps: {', '.join(step_ids)}); fix the policy")  # fmt: skip
        for step_id in policy.approval_steps(name):
            options.gates.setdefault(step_id, {"message": f"run started by an agent: approve step '{step_id}' of {name} before it acts?",
                                               "approvers": 1, "distinct_from_starter": True})  # fmt: skip
        return options.to_json()

    # ------------------------------------------------------------------ driving

    def resume(self, run_id: str, options: DriveOptions, *, principal: Principal | None = None) -> RunView:
        """Continue a run from where it stopped (see DESIGN.md, "Durability")."""
        from runner.engine.decisions import pending

        run = self.store.get_run(run_id)
        action = Action.DECIDE if (options.retry_step or options.skip_step) else Action.RETRY if options.retry_failed else Action.RESUME
        self.authorize(principal, action, run)
        if run.state in TERMINAL_STATES:
            # Idempotent for callers that retry: report the outcome instead of failing.
            self.notices.append(f"run {run.id} already {run.state}; nothing to resume")
            return self.view(run_id)
        decided = options.retry_failed or options.retry_step or options.skip_step
        if options.retry_step or options.skip_step:  # the old one-call flags: one decision per step at a time, too
            from runner.engine.decisions import check_undecided

            choice: Literal["retry", "skip"] = "retry" if options.retry_step else "skip"
            check_undecided(run.id, str(options.retry_step or options.skip_step), choice, pending(self.store, run.id))
        if run.state == RunState.FAILED and not decided and not pending(self.store, run.id):
            # Not an error: the run's view says what to do (`next`: fix_and_retry), as for any other state.
            self.notices.append(f"run {run.id} failed; resume runs nothing until the cause is fixed and a retry is recorded "
                                f"(`runbook retry {run.id}`)")  # fmt: skip
            return self.view(run_id)
        try:
            return self.drive(run.id, options)
        except LeaseHeld as exc:  # not an error for a driver: the view says wait_elsewhere (who, until when)
            self.notices.append(str(exc))
            return self.view(run.id)

    def drive(self, run_id: str, options: DriveOptions, *, lease: Lease | None = None) -> RunView:
        """Acquire the run's lease and execute it until it stops (see :meth:`execute`); returns the resulting view."""
        self.execute(run_id, options, lease=lease)  # the drive's records are freed before the view is built
        return self.view(run_id)

    def execute(self, run_id: str, options: DriveOptions, *, lease: Lease | None = None, run: RunRecord | None = None) -> None:
        """Acquire the run's lease and execute it until it stops, building no view (a worker reads only its state).

        A run a detached executor holds is waited for (within ``options.deadline``) and then continued. ``lease``:
        one a worker's claim took (issue 19): the first execution uses it instead of acquiring the run a second
        time, and it is released if no execution happens. ``run``: the run's record as read since that claim; the
        first execution starts from it instead of reading it again.
        """
        from runner.engine.detach import await_detached, held_by_detached

        known = run
        try:
            while True:
                run, known = (known or self.store.get_run(run_id)), None
                if held_by_detached(run):
                    if not await_detached(self, run_id, options.deadline):
                        return
                    run = self.store.get_run(run_id)
                if run.state in TERMINAL_STATES:
                    return
                claimed, lease = lease, None
                detached = self._execute(run, options, claimed)
                if detached is None:
                    return
                if not await_detached(self, run_id, options.deadline, detached):
                    return
                if detached.poll() is not None and detached.returncode != 0 and not _was_taken(self, run_id):
                    options.detach = False  # it could not run: do the step here rather than start it again
                if not _continue_after_detached(self, run_id):
                    return
        finally:
            if lease is not None:
                self.store.release(lease)

    def _execute(self, run: RunRecord, options: DriveOptions, lease: Lease | None = None) -> subprocess.Popen[bytes] | None:
        """Drive the run once (under ``lease`` if given, else one acquired now); returns the detached executor it
        handed a step to, if it did."""
        rb = self.runbook_for(run)
        acquired = lease is None
        try:
            lease = lease or self.store.acquire(run.id, self.holder, self.lease_ttl, force=options.force, is_alive=is_alive,
                                                take_lock=options.take_lock)  # fmt: skip
        except LockHeld as exc:
            raise self.conflict(exc) from None
        current = self.store.get_run(run.id) if acquired else run  # (a claimed run was read after its claim)
        if acquired and current.state in TERMINAL_STATES and current.state != run.state:
            self.store.release(lease)  # another executor finished it between the read and the lease: nothing to drive
            return None
        exe = Execution(self, current, rb, lease, options)
        self._active.append(exe)
        try:
            exe.drive()
        finally:
            self._active.remove(exe)
            self.notices.extend(n for n in options.notices if n not in self.notices)
            exe.forget()  # its records are freed now, not by a later cyclic collection after the view is built
        return exe.detached

    def interrupt(self) -> None:
        """Forward a SIGINT/SIGTERM to every execution in this process."""
        for exe in list(self._active):
            exe.interrupt()

    @property
    def active(self) -> bool:
        """True while this engine executes a run (a signal then stops the drive instead of the process)."""
        return bool(self._active)

    # ------------------------------------------------------------------ requests from outside (runner.engine.requests)

    def pause(self, run_id: str, *, actor: str, reason: str = "", principal: Principal | None = None) -> RunView:
        """Ask a run to stop at its next step boundary (at once if nothing is executing it)."""
        return requests.pause(self, run_id, actor=actor, reason=reason, principal=principal)

    def cancel(self, run_id: str, *, actor: str, reason: str = "", rollback: bool = False, principal: Principal | None = None) -> RunView:
        """Stop a run for good (``rollback``: undo its completed steps first); see :func:`runner.engine.requests.cancel`."""
        return requests.cancel(self, run_id, actor=actor, reason=reason, rollback=rollback, principal=principal)

    def cancel_children(self, run_id: str, reason: str) -> None:
        """Cancel the sub-runbook runs of ``run_id`` that are still active."""
        requests.cancel_children(self, run_id, reason)

    def decide(self, run_id: str, *, actor: str, approve: bool, comment: str = "", step_id: str | None = None,
               principal: Principal | None = None) -> RunView:  # fmt: skip
        """Record an approval or a denial for the approval the run waits on (a sub-runbook's included)."""
        return requests.approve_or_deny(self, run_id, actor=actor, approve=approve, comment=comment, step_id=step_id, principal=principal)

    def decide_step(self, run_id: str, step_id: str, choice: str, *, actor: str, principal: Principal | None = None) -> RunView:
        """Record a decision (``retry`` or ``skip``) on a step whose outcome is unknown; the next drive applies it."""
        return requests.decide_step(self, run_id, step_id, choice, actor=actor, principal=principal)

    def retry(self, run_id: str, *, actor: str, principal: Principal | None = None) -> RunView:
        """Record a retry of a failed run (its cause fixed); the next drive retries the failed steps."""
        return requests.retry(self, run_id, actor=actor, principal=principal)


def _was_taken(engine: Engine, run_id: str) -> bool:
    """Whether the detached executor ``exe`` started ever drove the run (its start is in the journal)."""
    events = engine.store.events(run_id, after=max(0, engine.store.get_run(run_id).last_seq - 50), types=("run.resumed",))
    return any((e.data.get("executor") or "").startswith("detached") for e in events)


def _continue_after_detached(engine: Engine, run_id: str) -> bool:
    """True when the detached executor stopped the run only because its one step is done: this drive goes on."""
    run = engine.store.get_run(run_id)
    if run.state != RunState.PAUSED:
        return run.state == RunState.RUNNING and run.holder is None
    paused = engine.store.events(run_id, after=max(0, run.last_seq - 20), types=("run.paused",))
    return bool(paused) and paused[-1].data.get("cause") == "detached"


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
