"""The Python API: start, advance and inspect runs from agents and scripts that embed the runner.

Every call returns a typed pydantic result whose ``model_dump(mode="json")`` is
the documented ``--json`` shape of the matching CLI command::

    import runner

    view = runner.start("restart-service", {"host": "web1", "service": "nginx"}, budget="20s")
    while view.next.action != "none":          # follow ``next``; never improvise
        ...                                    # sleep until view.next.not_before, ask a human, ...
        view = runner.resume(view.run_id, budget="20s")

Module-level functions use a default :class:`Client` built from the current
directory and ``RUNBOOK_*`` variables; build a :class:`Client` for anything else
(another project, store, actor, or an agent under a policy). See ``docs/python-api.md``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.engine.planner import PlanView
from runner.listings import EventList, EventView, RunbookDetail, RunbookInfo, RunbookList, RunList, RunSummary, run_summary
from runner.views import RunView

if TYPE_CHECKING:
    from runner.authority import LivePolicy
    from runner.catalog import Catalog
    from runner.engine import DriveOptions, Engine
    from runner.logs import LogLine
    from runner.plugin import PluginHost
    from runner.policy import Policy
    from runner.session import Session
    from runner.store.base import Store
    from runner.store.records import Event, RunRecord

__all__ = [
    "Client",
    "EventList",
    "EventView",
    "PlanView",
    "RunList",
    "RunResult",
    "RunSummary",
    "RunView",
    "RunbookDetail",
    "RunbookInfo",
    "RunbookList",
    "approve",
    "cancel",
    "deny",
    "events",
    "list_runs",
    "pause",
    "plan",
    "resume",
    "start",
    "status",
    "step",
]

Budget = float | str | None
"""Seconds, a duration such as ``"90s"``, or None (no budget)."""

Observer = Callable[["Event", "RunRecord"], None]
"""An in-process observer of committed events (see :attr:`runner.engine.Engine.observers`)."""


# ---------------------------------------------------------------------- result shapes (runner.views)

RunResult = RunView
"""A run view after driving it or acting on it: the view with its ``notices`` (the CLI's ``--json`` shape)."""


# ---------------------------------------------------------------------- the client


class Client:
    """Runs runbooks from one project against one journal store, as one principal.

    :param paths: where runbooks are (default: ``RUNBOOK_PATH`` or ``<project>/runbooks``).
    :param store: journal store URL (default: ``RUNBOOK_STORE`` or SQLite under ``<project>/.runbook/``).
    :param policy: agent policy: a :class:`~runner.policy.Policy`, a file path (read again whenever the file
        changes), or None (``RUNBOOK_AGENT_POLICY`` when ``agent`` is true; without it, the default policy:
        :func:`runner.policy.default_policy`).
    :param actor: who acts (recorded in the journal; default ``RUNBOOK_ACTOR`` or ``user@host``,
        prefixed ``agent:`` for an agent so that the human at the same account may approve its runs).
    :param agent: act as an agent: the policy applies to every call (starts, and actions on existing runs).
    :param project_dir: the project (default: the nearest directory upward holding ``.runbook/``, else cwd).
    """

    def __init__(self, *, paths: Sequence[str | os.PathLike[str]] | None = None, store: str | None = None,
                 policy: Policy | str | os.PathLike[str] | None = None, actor: str | None = None, agent: bool = False,
                 project_dir: str | os.PathLike[str] | None = None, inventory: str | None = None,
                 known_hosts: str | None = None, holder_kind: str = "api", host: PluginHost | None = None) -> None:  # fmt: skip
        from runner.authority import Principal
        from runner.session import Session
        from runner.settings import Settings, find_project_dir

        root = Path(project_dir).resolve() if project_dir is not None else find_project_dir()
        chosen = [os.fspath(p) for p in paths or ()]
        if not chosen and project_dir is not None and not os.environ.get("RUNBOOK_PATH"):
            chosen = [str(root / "runbooks")]
        if actor is None and agent:
            from runner.settings import default_actor

            actor = f"agent:{default_actor()}"  # so the human at the same account can approve the agent's runs
        extra: dict[str, Any] = {"actor": actor} if actor else {}
        settings = Settings(paths=chosen, store_url=store, inventory=inventory, known_hosts=known_hosts, project_dir=root, **extra)
        self.agent, self.holder_kind = agent, holder_kind
        self._paths = chosen
        self._cli_options = {"store": store, "inventory": inventory, "known_hosts": known_hosts}
        principal = Principal.agent(settings.actor) if agent else Principal.person(settings.actor)
        self.session: Session = Session(settings, host=host, principal=principal, policy=_policy(policy, agent), holder_kind=holder_kind,
                                        cli_options=self.cli_prefix())  # fmt: skip

    @classmethod
    def over(cls, session: Session, *, holder_kind: str = "api") -> Client:
        """A client over an existing :class:`~runner.session.Session` (a server's shared store and catalog), acting
        for the session's principal (an agent principal acts under the session's agent policy)."""
        client = cls.__new__(cls)
        client.agent, client.holder_kind = session.principal.is_agent, holder_kind
        client._paths, client._cli_options = [], {}
        client.session = session
        return client

    # ------------------------------------------------------------------ shared pieces

    @property
    def settings(self) -> Any:
        """The client's settings."""
        return self.session.settings

    @property
    def actor(self) -> str:
        """Who this client acts as."""
        return str(self.session.settings.actor)

    @property
    def policy(self) -> Policy | None:
        """The agent policy as it is now (None: no policy file; an agent acts under :func:`runner.policy.default_policy`)."""
        from runner.authority import LivePolicy

        policy = self.session.policy
        return policy.current() if isinstance(policy, LivePolicy) else policy

    @property
    def host(self) -> PluginHost:
        """The plugin host (plugins load on first use)."""
        return self.session.host

    @property
    def store(self) -> Store:
        """The journal store (opened, and created if new, on first use)."""
        return self.session.store

    @property
    def catalog(self) -> Catalog:
        """The runbooks on the search path, loaded on first use (see :meth:`reload`)."""
        return self.session.catalog

    def reload(self) -> None:
        """Read the runbooks again (after files were added or edited)."""
        self.session.reload()

    def engine(self, budget: Budget = None, max_steps: int | None = None) -> Engine:
        """A fresh engine over this client's store and catalog; ``next.command`` spells the same options."""
        from runner.cursor import CommandHint

        return self.session.engine(CommandHint(prefix=self.cli_prefix(), json=True, budget=_budget_text(budget), max_steps=max_steps))

    def cli_prefix(self) -> list[str]:
        """Global CLI options that point a ``runbook`` command at this client's runbooks and store."""
        out: list[str] = []
        for path in self._paths:
            out += ["--path", os.path.abspath(path)]
        for key, value in self._cli_options.items():
            if value:
                out += [f"--{key.replace('_', '-')}", value]
        return out

    def close(self) -> None:
        """Close the journal store."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ catalog

    def runbooks(self) -> RunbookList:
        """The runbooks on the search path (``runbook list --json``), from their summaries; an agent sees those its
        policy lets it start."""
        policy = self.policy if self.agent else None
        visible = [rb for rb in self.catalog.summaries() if policy is None or policy.may_start(rb.name)]
        return RunbookList(runbooks=[RunbookInfo(**rb.as_dict()) for rb in visible],
                           problems=[p.as_dict() for p in self.catalog.problems])  # fmt: skip

    def describe(self, name: str) -> RunbookDetail:
        """One runbook: params schema, compiled steps and content hash (``runbook show NAME --json``).

        An agent client is refused a runbook the agent policy does not let it start.
        """
        from runner.cli.catalog_cmds import runbook_summary

        rb = self.catalog.get(name)
        self._check_agent_may_see(name)
        return RunbookDetail(**runbook_summary(rb), runbook=rb.spec.model_dump(mode="json", by_alias=True), content_hash=rb.content_hash)

    def plan(self, name: str, params: dict[str, Any] | None = None) -> PlanView:
        """What a run would do, from read-only probes only; nothing is changed or recorded.

        For an agent client the agent policy applies exactly as to a start: probes run commands and may
        carry the runbook's secrets, so a runbook or a param value the agent may not use is refused first.
        """
        from runner.authority import Action, decide, enforce
        from runner.engine.planner import plan
        from runner.params import validate_params

        if self.agent:
            rb = self.catalog.get(name)
            values = validate_params(name, rb.params_model, dict(params or {})).model_dump(mode="json")
            enforce(decide(self.session.principal, Action.START, runbook=name, policy=self.policy, params=values))
        return plan(self.engine(), name, dict(params or {}))

    def _check_agent_may_see(self, name: str) -> None:
        policy = self.policy
        if self.agent and policy is not None and not policy.may_start(name):
            from runner.errors import PolicyDenied

            raise PolicyDenied(f"runbook '{name}' is not available to agents ({policy.file})")

    # ------------------------------------------------------------------ driving

    def start(self, name: str, params: dict[str, Any] | None = None, *, budget: Budget = None, max_steps: int | None = None,
              idempotency_key: str | None = None, execute: bool = True, deadline: float | None = None,
              observers: Sequence[Observer] = (), on_created: Callable[[str], None] | None = None) -> RunResult:  # fmt: skip
        """Start a run of ``name`` and drive it until it finishes, waits, or the budget is spent.

        An agent client is checked against the policy first (:class:`~runner.errors.PolicyDenied`).
        ``execute=False`` only queues the run (for a worker or a later :meth:`resume`). The budget
        counts from this call; ``deadline`` (a ``time.monotonic()`` value) sets the end explicitly.
        ``observers`` are told every event the drive commits in this process (``Engine.observers``).
        ``on_created(run_id)`` is called once a new run exists and before it is driven (not for a repeated
        ``idempotency_key``); the run is created already leased to this call, so no worker can claim it meanwhile.
        """
        opts = self._options(budget, max_steps, deadline)
        engine = self.engine(budget, max_steps)
        engine.observers.extend(observers)
        if on_created is None or not execute:
            return engine.start(name, dict(params or {}), started_by=self.actor, idempotency_key=idempotency_key, options=opts,
                                execute=execute)  # fmt: skip
        run, created = engine.create(name, dict(params or {}), started_by=self.actor, idempotency_key=idempotency_key, execute=True)
        if not created:
            return engine.view(run.id)
        try:
            on_created(run.id)
        finally:  # the run is leased to this engine: only its drive (which may pause it at once) lets it go
            view = engine.drive(run.id, opts)
        return view

    def resume(self, run_id: str, *, budget: Budget = None, max_steps: int | None = None, retry: bool = False,
               retry_step: str | None = None, skip_step: str | None = None, accept_changes: bool = False,
               force: bool = False, deadline: float | None = None, observers: Sequence[Observer] = ()) -> RunResult:  # fmt: skip
        """Continue a run from where it stopped (``runbook resume``); completed steps never run again.

        A run another executor holds is not an error: the view says ``wait_elsewhere`` (who, until when).
        ``observers`` are told every event the drive commits in this process (``Engine.observers``)."""
        opts = self._options(budget, max_steps, deadline, retry_failed=retry, retry_step=retry_step, skip_step=skip_step,
                             accept_changes=accept_changes, force=force)  # fmt: skip
        engine = self.engine(budget, max_steps)
        engine.observers.extend(observers)
        return engine.resume(engine.resolve_id(run_id), opts)

    def step(self, run_id: str, *, force: bool = False) -> RunResult:
        """Execute exactly one step of a run, then stop (``runbook step``; ``next.command`` is another ``step``)."""
        engine = self.engine()
        engine.hint.resume_verb = "step"
        return engine.resume(engine.resolve_id(run_id), self._options(None, 1, None, force=force))

    def _options(self, budget: Budget, max_steps: int | None, deadline: float | None, **kw: Any) -> DriveOptions:
        from runner.engine import DriveOptions

        seconds = _seconds(budget)
        if deadline is None and seconds is not None:
            deadline = time.monotonic() + seconds
        elif deadline is not None and seconds is None:
            seconds = max(0.0, deadline - time.monotonic())
        return DriveOptions(deadline=deadline, budget=seconds, max_steps=max_steps, actor=self.actor, **kw)

    # ------------------------------------------------------------------ requests (they record; the driver resumes)

    def status(self, run_id: str) -> RunResult:
        """The run's state, its steps and ``next`` (``runbook status --json``)."""
        engine = self.engine()
        return engine.status(engine.resolve_id(run_id))

    def pause(self, run_id: str, *, reason: str = "") -> RunResult:
        """Ask a run to stop at its next step boundary."""
        engine = self.engine()
        return engine.pause(engine.resolve_id(run_id), actor=self.actor, reason=reason)

    def cancel(self, run_id: str, *, reason: str = "", rollback: bool = False) -> RunResult:
        """Stop a run for good (a step in flight has its process stopped); ``rollback`` undoes completed steps first."""
        engine = self.engine()
        return engine.cancel(engine.resolve_id(run_id), actor=self.actor, reason=reason, rollback=rollback)

    def approve(self, run_id: str, *, comment: str = "", step: str | None = None) -> RunResult:
        """Approve the approval step the run waits on, as this client's actor."""
        return self._vote(run_id, True, comment, step)

    def deny(self, run_id: str, *, comment: str = "", step: str | None = None) -> RunResult:
        """Deny the approval step the run waits on (the step fails when the run is resumed)."""
        return self._vote(run_id, False, comment, step)

    def _vote(self, run_id: str, approve: bool, comment: str, step: str | None) -> RunResult:
        engine = self.engine()
        return engine.decide(engine.resolve_id(run_id), actor=self.actor, approve=approve, comment=comment, step_id=step)

    def decide(self, run_id: str, *, retry_step: str | None = None, skip_step: str | None = None) -> RunResult:
        """Record a decision on a step whose outcome is unknown (``runbook decide``); resume applies it."""
        from runner.errors import UsageError

        if (retry_step is None) == (skip_step is None):
            raise UsageError("give exactly one of retry_step or skip_step")
        engine = self.engine()
        step, choice = (retry_step, "retry") if retry_step is not None else (skip_step or "", "skip")
        return engine.decide_step(engine.resolve_id(run_id), step, choice, actor=self.actor)

    def retry(self, run_id: str) -> RunResult:
        """Record that a failed run's cause is fixed (``runbook retry``); resume retries its failed steps."""
        engine = self.engine()
        return engine.retry(engine.resolve_id(run_id), actor=self.actor)

    def agent_may_decide(self, runbook: str) -> bool:
        """Whether this (agent) client may approve or deny runs of ``runbook``: only where a policy says so."""
        policy = self.policy
        return not self.agent or (policy is not None and policy.may_approve(runbook))

    # ------------------------------------------------------------------ inspection

    def list_runs(self, *, runbook: str | None = None, states: Iterable[str] = (), limit: int = 20, before: str | None = None,
                  since: str | float | None = None, until: str | float | None = None, started_by: str | None = None) -> RunList:  # fmt: skip
        """Runs, newest first (``runbook runs --json``).

        ``since``/``until``: created at or after / before this point: epoch seconds, a duration ago (``"2h"``) or an
        ISO 8601 time. ``started_by``: this actor exactly, or a prefix ending with ``*`` (``"alert:*"``).
        """
        from runner.durations import parse_time
        from runner.errors import UsageError
        from runner.store.records import RunState

        try:
            wanted = [RunState(s) for s in states]
        except ValueError as exc:
            raise UsageError(f"{exc}; states: {', '.join(str(s) for s in RunState)}") from None
        try:
            bounds = [parse_time(t) if isinstance(t, str) else t for t in (since, until)]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        limit = max(1, min(limit, 1000))
        who = self.session.principal
        if not who.is_agent:
            runs = self.store.list_runs(runbook=runbook, states=wanted, limit=limit, before=before, since=bounds[0], until=bounds[1],
                                        started_by=started_by)  # fmt: skip
            return RunList(runs=[run_summary(r) for r in runs], next_before=runs[-1].id if len(runs) == limit else None)
        # An agent lists only the runs it may read, like GET /v1/runs: store pages are read until the page holds
        # ``limit`` of them or the journal is exhausted, and ``next_before`` is given only when more may exist.
        from runner.authority import Action, decide

        policy, keep, batch = self.policy, [], max(limit, 50)
        while True:
            page = self.store.list_runs(runbook=runbook, states=wanted, limit=batch, before=before, since=bounds[0], until=bounds[1],
                                        started_by=started_by)  # fmt: skip
            for i, run in enumerate(page):
                if decide(who, Action.READ, runbook=run.runbook, run=run, policy=policy).ok:
                    keep.append(run)
                    if len(keep) == limit:
                        more = i + 1 < len(page) or len(page) == batch
                        return RunList(runs=[run_summary(r) for r in keep], next_before=run.id if more else None)
            if len(page) < batch:
                return RunList(runs=[run_summary(r) for r in keep], next_before=None)
            before = page[-1].id

    def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> EventList:
        """A run's journal events with ``seq > after`` (``runbook events --json``)."""
        from runner.listings import event_view

        engine = self.engine()
        rid = engine.resolve_id(run_id)
        engine.status(rid)  # who may not read the run may not read its events
        return EventList(run_id=rid, events=[event_view(e) for e in self.store.events(rid, after=after, limit=limit)])

    def logs(self, run_id: str, *, step: str | None = None, target: str | None = None, stream: str | None = None) -> list[LogLine]:
        """The output the run's steps captured, as lines (``runbook logs --json``)."""
        from runner.logs import collect

        engine = self.engine()
        rid = engine.resolve_id(run_id)
        engine.status(rid)
        return collect(self.store, rid, step=step, target=target, stream=stream)


# ---------------------------------------------------------------------- helpers


def _policy(policy: Policy | str | os.PathLike[str] | None, agent: bool) -> Policy | LivePolicy | None:
    """A given policy object as it is; a file (or ``RUNBOOK_AGENT_POLICY`` for an agent) read again when it changes."""
    from runner.authority import LivePolicy
    from runner.policy import ENV_VAR, Policy

    if isinstance(policy, Policy):
        return policy
    chosen = policy if policy is not None else (os.environ.get(ENV_VAR) or None) if agent else None
    if chosen is None:
        return None
    live = LivePolicy(chosen)
    live.current()  # a missing or broken file is an error now, not at the first call
    return live


def _seconds(budget: Budget) -> float | None:
    from runner.durations import parse_duration
    from runner.errors import UsageError

    if budget is None:
        return None
    try:
        return parse_duration(budget)
    except ValueError as exc:
        raise UsageError(f"budget: {exc}") from None


def _budget_text(budget: Budget) -> str | None:
    if budget is None or isinstance(budget, str):
        return budget
    return f"{budget:g}s"


# ---------------------------------------------------------------------- module-level convenience

_default: tuple[tuple[str, ...], Client] | None = None


def default_client() -> Client:
    """The client module-level functions use: current directory and ``RUNBOOK_*`` variables (rebuilt if they change)."""
    global _default
    key = (os.getcwd(), *sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("RUNBOOK_")))
    if _default is None or _default[0] != key:
        if _default is not None:
            _default[1].close()
        _default = (key, Client())
    return _default[1]


def start(name: str, params: dict[str, Any] | None = None, *, budget: Budget = None, max_steps: int | None = None,
          idempotency_key: str | None = None, execute: bool = True) -> RunResult:  # fmt: skip
    """Start a run of ``name`` with the default client (see :meth:`Client.start`)."""
    return default_client().start(name, params, budget=budget, max_steps=max_steps, idempotency_key=idempotency_key, execute=execute)


def resume(run_id: str, *, budget: Budget = None, max_steps: int | None = None, retry: bool = False, retry_step: str | None = None,
           skip_step: str | None = None, accept_changes: bool = False, force: bool = False) -> RunResult:  # fmt: skip
    """Continue a run with the default client (see :meth:`Client.resume`)."""
    return default_client().resume(run_id, budget=budget, max_steps=max_steps, retry=retry, retry_step=retry_step,
                                   skip_step=skip_step, accept_changes=accept_changes, force=force)  # fmt: skip


def step(run_id: str, *, force: bool = False) -> RunResult:
    """Execute exactly one step of a run with the default client."""
    return default_client().step(run_id, force=force)


def status(run_id: str) -> RunResult:
    """A run's view with its ``next`` cursor, from the default client."""
    return default_client().status(run_id)


def plan(name: str, params: dict[str, Any] | None = None) -> PlanView:
    """What a run of ``name`` would do (read-only probes), from the default client."""
    return default_client().plan(name, params)


def pause(run_id: str, *, reason: str = "") -> RunResult:
    """Pause a run at its next step boundary, with the default client."""
    return default_client().pause(run_id, reason=reason)


def cancel(run_id: str, *, reason: str = "") -> RunResult:
    """Cancel a run, with the default client."""
    return default_client().cancel(run_id, reason=reason)


def approve(run_id: str, *, comment: str = "", step: str | None = None) -> RunResult:
    """Approve the step a run waits on, as ``RUNBOOK_ACTOR`` (or ``user@host``)."""
    return default_client().approve(run_id, comment=comment, step=step)


def deny(run_id: str, *, comment: str = "", step: str | None = None) -> RunResult:
    """Deny the step a run waits on, as ``RUNBOOK_ACTOR`` (or ``user@host``)."""
    return default_client().deny(run_id, comment=comment, step=step)


def list_runs(*, runbook: str | None = None, states: Iterable[str] = (), limit: int = 20, before: str | None = None,
              since: str | float | None = None, until: str | float | None = None, started_by: str | None = None) -> RunList:  # fmt: skip
    """Runs, newest first, from the default client (filters as :meth:`Client.list_runs`)."""
    return default_client().list_runs(runbook=runbook, states=states, limit=limit, before=before, since=since, until=until,
                                      started_by=started_by)  # fmt: skip


def events(run_id: str, *, after: int = 0, limit: int = 1000) -> EventList:
    """A run's events after ``after``, from the default client."""
    return default_client().events(run_id, after=after, limit=limit)
