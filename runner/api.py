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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from runner.engine.planner import PlanView
from runner.engine.views import RunView

if TYPE_CHECKING:
    from runner.catalog import Catalog
    from runner.engine import DriveOptions, Engine
    from runner.plugin import PluginHost
    from runner.policy import Policy
    from runner.store.base import Store

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


# ---------------------------------------------------------------------- result shapes


class RunResult(RunView):
    """A run view after driving it (``run``/``resume``/``step --json``): the view plus notices."""

    notices: list[str] = Field(default_factory=list, description="things the caller should know (e.g. the runbook changed)")


def _result(engine: Engine, view: RunView) -> RunResult:
    """``view`` with the engine's notices: the shape every ``--json`` run view has."""
    return RunResult(**view.model_dump(), notices=list(engine.notices))


class RunbookInfo(BaseModel):
    """One catalog entry (``list --json``)."""

    name: str
    description: str
    version: Any
    tags: list[str]
    file: str
    steps: int
    params_schema: dict[str, Any]


class RunbookList(BaseModel):
    """``list --json``: the runbooks and the problems found loading them."""

    runbooks: list[RunbookInfo]
    problems: list[dict[str, Any]]


class RunbookDetail(RunbookInfo):
    """``show --json``: a catalog entry with its compiled runbook and content hash."""

    runbook: dict[str, Any]
    content_hash: str


class RunSummary(BaseModel):
    """One row of ``runs --json``."""

    run_id: str
    runbook: str
    state: str
    reason: str
    started_by: str
    created_at: str | None
    updated_at: str | None
    parent_run_id: str | None


class RunList(BaseModel):
    """``runs --json``: newest first; ``next_before`` pages on (None: no more)."""

    runs: list[RunSummary]
    next_before: str | None


class EventView(BaseModel):
    """One journal event (``events --json``)."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    ts: str | None
    type: str
    step_id: str | None
    attempt: int | None
    actor: str | None
    data: dict[str, Any]


class EventList(BaseModel):
    """``events --json``: a run's events after a sequence number."""

    run_id: str
    events: list[EventView]


# ---------------------------------------------------------------------- the client


class Client:
    """Runs runbooks from one project against one journal store.

    :param paths: where runbooks are (default: ``RUNBOOK_PATH`` or ``<project>/runbooks``).
    :param store: journal store URL (default: ``RUNBOOK_STORE`` or SQLite under ``<project>/.runbook/``).
    :param policy: agent policy: a :class:`~runner.policy.Policy`, a file path, or None
        (``RUNBOOK_AGENT_POLICY`` when ``agent`` is true).
    :param actor: who acts (recorded in the journal; default ``RUNBOOK_ACTOR`` or ``user@host``,
        prefixed ``agent:`` for an agent so that the human at the same account may approve its runs).
    :param agent: start runs as an agent: the policy applies and its approval gates are added.
    :param project_dir: the project (default: the nearest directory upward holding ``.runbook/``, else cwd).
    """

    def __init__(self, *, paths: Sequence[str | os.PathLike[str]] | None = None, store: str | None = None,
                 policy: Policy | str | os.PathLike[str] | None = None, actor: str | None = None, agent: bool = False,
                 project_dir: str | os.PathLike[str] | None = None, inventory: str | None = None,
                 known_hosts: str | None = None, holder_kind: str = "api", host: PluginHost | None = None) -> None:  # fmt: skip
        from runner.settings import Settings, find_project_dir

        root = Path(project_dir).resolve() if project_dir is not None else find_project_dir()
        chosen = [os.fspath(p) for p in paths or ()]
        if not chosen and project_dir is not None and not os.environ.get("RUNBOOK_PATH"):
            chosen = [str(root / "runbooks")]
        if actor is None and agent:
            from runner.settings import default_actor

            actor = f"agent:{default_actor()}"  # so the human at the same account can approve the agent's runs
        extra: dict[str, Any] = {"actor": actor} if actor else {}
        self.settings = Settings(paths=chosen, store_url=store, inventory=inventory, known_hosts=known_hosts, project_dir=root, **extra)
        self.agent, self.holder_kind = agent, holder_kind
        self.policy = _policy(policy, agent)
        self._host = host
        self._store: Store | None = None
        self._catalog: Catalog | None = None
        self._paths = chosen
        self._cli_options = {"store": store, "inventory": inventory, "known_hosts": known_hosts}

    # ------------------------------------------------------------------ shared pieces

    @property
    def actor(self) -> str:
        """Who this client acts as."""
        return self.settings.actor

    @property
    def host(self) -> PluginHost:
        """The plugin host (plugins load on first use)."""
        if self._host is None:
            from runner.plugin import PluginHost

            self._host = PluginHost()
        return self._host

    @property
    def store(self) -> Store:
        """The journal store (opened, and created if new, on first use)."""
        if self._store is None:
            self._store = self.host.stores.open(self.settings.resolved_store_url())
        store: Store = self._store
        return store

    @property
    def catalog(self) -> Catalog:
        """The runbooks on the search path, loaded on first use (see :meth:`reload`)."""
        if self._catalog is None:
            from runner.catalog import Catalog, search_path

            dirs = search_path(self.settings.paths, self.host.runbook_sources.directories())
            self._catalog = Catalog.load(self.host.step_types, dirs)
        catalog: Catalog = self._catalog
        return catalog

    def reload(self) -> None:
        """Read the runbooks again (after files were added or edited)."""
        self._catalog = None

    def engine(self, budget: Budget = None, max_steps: int | None = None) -> Engine:
        """A fresh engine over this client's store and catalog; ``next.command`` spells the same options."""
        from runner.engine import CommandHint, Engine

        engine = Engine(self.host, self.store, self.catalog, self.settings, holder_kind=self.holder_kind)
        engine.policy = self.policy if self.agent else None
        engine.hint = CommandHint(prefix=self.cli_prefix(), json=True, budget=_budget_text(budget), max_steps=max_steps)
        return engine

    def cli_prefix(self) -> list[str]:
        """Global CLI options that point a ``runbook`` command at this client's runbooks and store."""
        out: list[str] = []
        for path in self._paths:
            out += ["--path", path]
        for key, value in self._cli_options.items():
            if value:
                out += [f"--{key.replace('_', '-')}", value]
        return out

    def close(self) -> None:
        """Close the journal store."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ catalog

    def runbooks(self) -> RunbookList:
        """The runbooks on the search path (``runbook list --json``)."""
        from runner.cli.catalog_cmds import runbook_summary

        return RunbookList(runbooks=[RunbookInfo(**runbook_summary(rb)) for rb in self.catalog],
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
        from runner.engine.planner import plan
        from runner.params import validate_params

        if self.agent and self.policy is not None:
            rb = self.catalog.get(name)
            values = validate_params(name, rb.params_model, dict(params or {})).model_dump(mode="json")
            self.policy.check_start(name, values, active_runs=0)
        return plan(self.engine(), name, dict(params or {}))

    def _check_agent_may_see(self, name: str) -> None:
        if self.agent and self.policy is not None and not self.policy.may_start(name):
            from runner.errors import PolicyDenied

            raise PolicyDenied(f"runbook '{name}' is not available to agents ({self.policy.file})")

    # ------------------------------------------------------------------ driving

    def start(self, name: str, params: dict[str, Any] | None = None, *, budget: Budget = None, max_steps: int | None = None,
              idempotency_key: str | None = None, execute: bool = True, deadline: float | None = None) -> RunResult:  # fmt: skip
        """Start a run of ``name`` and drive it until it finishes, waits, or the budget is spent.

        With ``agent=True`` the policy is checked first (:class:`~runner.errors.PolicyDenied`).
        ``execute=False`` only queues the run (for a worker or a later :meth:`resume`). The budget
        counts from this call; ``deadline`` (a ``time.monotonic()`` value) sets the end explicitly.
        """
        opts = self._options(budget, max_steps, deadline)
        engine = self.engine(budget, max_steps)
        view = engine.start(name, dict(params or {}), started_by=self.actor, idempotency_key=idempotency_key,
                            options=opts, execute=execute, agent=self.agent)  # fmt: skip
        return _result(engine, view)

    def resume(self, run_id: str, *, budget: Budget = None, max_steps: int | None = None, retry: bool = False,
               retry_step: str | None = None, skip_step: str | None = None, accept_changes: bool = False,
               force: bool = False, deadline: float | None = None) -> RunResult:  # fmt: skip
        """Continue a run from where it stopped (``runbook resume``); completed steps never run again."""
        opts = self._options(budget, max_steps, deadline, retry_failed=retry, retry_step=retry_step, skip_step=skip_step,
                             accept_changes=accept_changes, force=force)  # fmt: skip
        engine = self.engine(budget, max_steps)
        rid = engine.resolve_id(run_id)
        if self.agent and (retry_step or skip_step):
            started_by = self.store.get_run(rid).started_by
            if started_by != self.actor:
                from runner.errors import PolicyDenied

                raise PolicyDenied(f"an agent may decide steps only of runs it started (run {rid} was started by {started_by})")
        view = engine.resume(rid, opts)
        return _result(engine, view)

    def step(self, run_id: str, *, force: bool = False) -> RunResult:
        """Execute exactly one step of a run, then stop (``runbook step``; ``next.command`` is another ``step``)."""
        engine = self.engine()
        engine.hint.resume_verb = "step"
        view = engine.resume(engine.resolve_id(run_id), self._options(None, 1, None, force=force))
        return _result(engine, view)

    def _options(self, budget: Budget, max_steps: int | None, deadline: float | None, **kw: Any) -> DriveOptions:
        from runner.engine import DriveOptions

        seconds = _seconds(budget)
        if deadline is None and seconds is not None:
            deadline = time.monotonic() + seconds
        return DriveOptions(deadline=deadline, max_steps=max_steps, actor=self.actor, **kw)

    # ------------------------------------------------------------------ requests

    def status(self, run_id: str) -> RunResult:
        """The run's state, its steps and ``next`` (``runbook status --json``)."""
        engine = self.engine()
        return _result(engine, engine.view(engine.resolve_id(run_id)))

    def pause(self, run_id: str, *, reason: str = "") -> RunResult:
        """Ask a run to stop at its next step boundary."""
        engine = self.engine()
        return _result(engine, engine.pause(engine.resolve_id(run_id), actor=self.actor, reason=reason))

    def cancel(self, run_id: str, *, reason: str = "") -> RunResult:
        """Stop a run for good (a step in flight has its process stopped)."""
        engine = self.engine()
        return _result(engine, engine.cancel(engine.resolve_id(run_id), actor=self.actor, reason=reason))

    def approve(self, run_id: str, *, comment: str = "", step: str | None = None) -> RunResult:
        """Approve the approval step the run waits on, as this client's actor."""
        return self._decide(run_id, True, comment, step)

    def deny(self, run_id: str, *, comment: str = "", step: str | None = None) -> RunResult:
        """Deny the approval step the run waits on (the step fails)."""
        return self._decide(run_id, False, comment, step)

    def _decide(self, run_id: str, approve: bool, comment: str, step: str | None) -> RunResult:
        engine = self.engine()
        rid = engine.resolve_id(run_id)
        if self.agent:
            self.check_agent_may_decide(self.store.get_run(rid).runbook)
        return _result(engine, engine.decide(rid, actor=self.actor, approve=approve, comment=comment, step_id=step))

    def agent_may_decide(self, runbook: str) -> bool:
        """Whether this (agent) client may approve or deny runs of ``runbook``: only where a policy says so."""
        return not self.agent or (self.policy is not None and self.policy.may_approve(runbook))

    def check_agent_may_decide(self, runbook: str) -> None:
        """Raise :class:`~runner.errors.PolicyDenied` unless agents may decide on ``runbook``'s approvals."""
        from runner.errors import PolicyDenied

        if not self.agent_may_decide(runbook):
            where = f"{self.policy.file} does not set" if self.policy is not None else "no agent policy sets"
            raise PolicyDenied(f"agents may not approve or deny runs of '{runbook}': {where} agents_may_approve: true for it; "
                               "a human must decide with `runbook approve RUN --by NAME`")  # fmt: skip

    # ------------------------------------------------------------------ inspection

    def list_runs(self, *, runbook: str | None = None, states: Iterable[str] = (), limit: int = 20, before: str | None = None) -> RunList:
        """Runs, newest first (``runbook runs --json``)."""
        from runner.engine.views import iso
        from runner.errors import UsageError
        from runner.store.records import RunState

        try:
            wanted = [RunState(s) for s in states]
        except ValueError as exc:
            raise UsageError(f"{exc}; states: {', '.join(str(s) for s in RunState)}") from None
        limit = max(1, min(limit, 1000))
        runs = self.store.list_runs(runbook=runbook, states=wanted, limit=limit, before=before)
        rows = [RunSummary(run_id=r.id, runbook=r.runbook, state=str(r.state), reason=r.reason, started_by=r.started_by,
                           created_at=iso(r.created_at), updated_at=iso(r.updated_at), parent_run_id=r.parent_run_id) for r in runs]  # fmt: skip
        return RunList(runs=rows, next_before=rows[-1].run_id if rows and len(rows) == limit else None)

    def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> EventList:
        """A run's journal events with ``seq > after`` (``runbook events --json``)."""
        from runner.engine.views import iso

        rid = self.engine().resolve_id(run_id)
        batch = self.store.events(rid, after=after, limit=limit)
        return EventList(run_id=rid, events=[EventView(seq=e.seq, ts=iso(e.ts), type=e.type, step_id=e.step_id, attempt=e.attempt,
                                                       actor=e.actor, data=e.data) for e in batch])  # fmt: skip


# ---------------------------------------------------------------------- helpers


def _policy(policy: Policy | str | os.PathLike[str] | None, agent: bool) -> Policy | None:
    from runner.policy import Policy, load_policy

    if isinstance(policy, Policy):
        return policy
    if policy is not None or agent:
        return load_policy(policy)
    return None


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


def list_runs(*, runbook: str | None = None, states: Iterable[str] = (), limit: int = 20, before: str | None = None) -> RunList:
    """Runs, newest first, from the default client."""
    return default_client().list_runs(runbook=runbook, states=states, limit=limit, before=before)


def events(run_id: str, *, after: int = 0, limit: int = 1000) -> EventList:
    """A run's events after ``after``, from the default client."""
    return default_client().events(run_id, after=after, limit=limit)
