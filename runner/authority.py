"""Who may do what: principals, and the one decision every surface's every action goes through.

Every operation carries a :class:`Principal` — a person (CLI user, console login), an agent (``--as-agent``,
MCP, ``Client(agent=True)``, an ``agent``-scoped token), a token with scopes, an alert route, a schedule, a
worker, or a parent run starting its child — and the engine asks :func:`decide` before it acts, whichever
surface asked::

    decide(principal, action, runbook=..., run=..., policy=..., params=...) -> Allowed | Refused

Rules (``docs/security.md``, "Principals and authority"):

- A token's scopes bound what it may do at all: ``read`` reads; ``run`` starts, resumes, retries, pauses and cancels;
  ``approve`` approves, denies and records decisions on steps; ``admin`` everything. Principals without a
  token (a person at the CLI, the Python API) are not limited by scopes.
- An agent acts under the agent policy, read again whenever its file changes (without a policy file, under the
  default policy, :func:`runner.policy.default_policy`: it may start any runbook, and every grant below is off): it
  may start only what the policy allows (runbooks, param values, concurrency); it may act on runs it started, and on others' runs only where the
  policy grants it for that runbook (``agents_may_read``, ``agents_may_steer``, ``agents_may_approve``); pausing and
  cancelling its own runs is always allowed. Its child runs inherit the policy: a sub-runbook the policy denies, or
  a forbidden param value passed through a wrapper, is refused at any depth, and the policy's gates apply to them.
- Every refusal names the rule and the policy file.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.errors import AuthError, PolicyDenied

if TYPE_CHECKING:
    from runner.policy import Policy
    from runner.store.records import RunRecord

__all__ = ["Action", "Allowed", "LivePolicy", "Principal", "Refused", "decide", "enforce"]


class Action(enum.StrEnum):
    """What a principal asks to do."""

    START = "start"
    CHILD_START = "child_start"
    RESUME = "resume"
    RETRY = "retry"
    DECIDE = "decide"
    PAUSE = "pause"
    CANCEL = "cancel"
    APPROVE = "approve"
    READ = "read"


_SCOPE = {
    Action.START: "run", Action.CHILD_START: "run", Action.RESUME: "run", Action.PAUSE: "run", Action.CANCEL: "run",
    Action.RETRY: "run", Action.DECIDE: "approve", Action.APPROVE: "approve", Action.READ: "read",
}  # fmt: skip
_STEER = frozenset({Action.RESUME, Action.RETRY, Action.DECIDE, Action.PAUSE, Action.CANCEL})


@dataclass(frozen=True)
class Principal:
    """Who acts. ``scopes`` is None for principals that hold no token (a person at the CLI, the Python API)."""

    kind: str  # person | agent | token | route | schedule | worker
    name: str
    scopes: frozenset[str] | None = None

    @classmethod
    def person(cls, name: str) -> Principal:
        """A person (CLI, Python API without ``agent=True``)."""
        return cls("person", name)

    @classmethod
    def agent(cls, name: str, scopes: frozenset[str] | None = None) -> Principal:
        """An agent (``--as-agent``, MCP, ``Client(agent=True)``, an ``agent`` token)."""
        return cls("agent", name, scopes)

    @property
    def is_agent(self) -> bool:
        """True for an agent: the agent policy applies to what it does."""
        return self.kind == "agent"

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, *, agent: bool = False, default: str = "") -> Principal:
        """The principal a run stored (:meth:`as_json`); for runs that stored none, an agent or person named ``default``."""
        if isinstance(data, dict) and data.get("name"):
            return cls(str(data.get("kind") or "person"), str(data["name"]))
        return cls("agent" if agent else "person", default)

    def as_json(self) -> dict[str, Any]:
        """What a run stores about who started it (inherited by its child runs)."""
        return {"kind": self.kind, "name": self.name}

    def started(self, run: RunRecord) -> bool:
        """True if this principal started ``run`` (or the top-level run ``run`` is a child of)."""
        stored = (run.options or {}).get("principal")
        if isinstance(stored, dict) and stored.get("name"):
            return bool(stored.get("name") == self.name and stored.get("kind") == self.kind)
        return run.started_by == self.name


@dataclass(frozen=True)
class Allowed:
    """The action may go ahead."""

    ok: bool = field(default=True, init=False)


@dataclass(frozen=True)
class Refused:
    """The action is refused: ``rule`` names what refused it (scope or policy rule and file)."""

    rule: str
    message: str
    scope: bool = False
    """True when a token's scopes refused it (HTTP 403), else the agent policy did."""

    ok: bool = field(default=False, init=False)


class LivePolicy:
    """An agent policy file, read again whenever it changes (size, mtime or inode), so an edit applies on the next call."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self._stamp: tuple[int, int, int] | None = None
        self._policy: Policy | None = None

    def current(self) -> Policy | None:
        """The policy as the file says now (None without a file)."""
        if self.path is None:
            return None
        from runner.policy import load_policy

        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp is None or stamp != self._stamp or self._policy is None:
            self._policy = load_policy(self.path)  # a missing or broken file is an error, never "unrestricted"
            self._stamp = stamp
        return self._policy


def decide(principal: Principal, action: Action, *, runbook: str, run: RunRecord | None = None, policy: Policy | None = None,
           params: dict[str, Any] | None = None, active_runs: int = 0) -> Allowed | Refused:  # fmt: skip
    """Whether ``principal`` may do ``action`` on ``runbook`` (and its ``run``, for actions on a run).

    ``policy`` is the agent policy; None (no policy file) means the default policy for an agent, never "unrestricted".
    """
    scope = _SCOPE[action]
    if principal.scopes is not None and not ({scope, "admin"} & principal.scopes or (principal.is_agent and scope != "admin")):
        return Refused(f"scope '{scope}'", f"token '{principal.name}' lacks the '{scope}' scope needed to {action} runs", scope=True)
    if not principal.is_agent:
        return Allowed()
    if policy is None:
        from runner.policy import default_policy

        policy = default_policy()
    if action in (Action.START, Action.CHILD_START):
        try:
            policy.check_start(runbook, params or {}, active_runs=active_runs if action == Action.START else 0)
        except PolicyDenied as exc:
            rule = (
                "allow/deny"
                if policy.start_refusal(runbook)
                else "max_concurrent_runs"
                if "max_concurrent_runs" in exc.reason
                else "params"
            )
            return Refused(f"{rule} in {policy.file}", exc.reason)
        return Allowed()
    return _on_run(principal, action, runbook, run, policy)


def _on_run(principal: Principal, action: Action, runbook: str, run: RunRecord | None, policy: Policy) -> Allowed | Refused:
    own = run is not None and principal.started(run)
    if action == Action.APPROVE:
        if policy.may_approve(runbook):
            return Allowed()
        return Refused(f"agents_may_approve in {policy.file}", f"agents may not approve or deny runs of '{runbook}': {policy.file} does "
                       "not set agents_may_approve: true for it; a person decides with `runbook approve RUN --by NAME`")  # fmt: skip
    if own and action in (Action.PAUSE, Action.CANCEL, Action.READ):
        return Allowed()
    denied = policy.start_refusal(runbook)
    if own and denied is None:
        return Allowed()
    if denied is not None and action != Action.READ:
        return Refused(f"allow/deny in {policy.file}", f"{denied}; an agent may not {action} its runs")
    grant = "agents_may_read" if action == Action.READ else "agents_may_steer"
    if policy.grants(runbook, grant) or (action == Action.READ and policy.may_approve(runbook)):
        return Allowed()  # (who may approve a runbook's runs may read them)
    whose = f"run {run.id} was started by {run.started_by}" if run is not None else "the run is not the agent's"
    return Refused(f"{grant} in {policy.file}", f"an agent may {action} only runs it started ({whose}); {policy.file} does not set "
                   f"{grant}: true for '{runbook}'")  # fmt: skip


def enforce(outcome: Allowed | Refused) -> None:
    """Raise for a refusal: :class:`AuthError` (403) for a missing scope, :class:`PolicyDenied` for the agent policy."""
    if isinstance(outcome, Refused):
        if outcome.scope:
            raise AuthError(outcome.message, status=403)
        raise PolicyDenied(outcome.message if outcome.rule in outcome.message else f"{outcome.message} (rule: {outcome.rule})")
