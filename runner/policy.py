"""The agent policy: what a run started by an agent may do.

An agent (``runbook run --as-agent``, the MCP server, ``runner.Client(agent=True)``,
an agent-scoped HTTP token) starts runs under a policy file, given with
``--policy FILE`` or ``RUNBOOK_AGENT_POLICY``. Without one, the default policy
(:func:`default_policy`) applies: agents may start any runbook with any params its
params model accepts, and act on (read, steer, pause, cancel) only the runs they
started; they may not approve or deny anything, nor read or steer others' runs.
Their runs are marked as agent-started. See ``docs/policy.md``::

    max_concurrent_runs: 3            # agent-started runs not yet finished
    allow: ["restart-*", disk-cleanup] # runbook name globs (default: every runbook)
    deny: ["db-*"]                     # wins over allow
    runbooks:
      restart-service:                 # a name or a glob; every matching entry applies
        params:
          host: {values: [web1, web2]}
          service: {pattern: '^(nginx|app)$'}
        require_approval: [restart]    # steps a human must approve before they act
        agents_may_approve: false      # expose an approve tool to agents (MCP)
        agents_may_read: false         # read runs of it that another principal started
        agents_may_steer: false        # resume/retry/decide/pause/cancel runs of it that another principal started

Every refusal raises :class:`~runner.errors.PolicyDenied` naming the rule, the
runbook, param and value, and what is allowed.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic import ValidationError as PydanticValidationError

from runner.errors import ConfigError, PolicyDenied, ValidationError
from runner.params import Regex

__all__ = ["ENV_VAR", "NO_POLICY_FILE", "ParamRule", "Policy", "RunbookRule", "default_policy", "load_policy"]

ENV_VAR = "RUNBOOK_AGENT_POLICY"
NO_POLICY_FILE = "the default agent policy (no policy file is set: --policy, RUNBOOK_AGENT_POLICY or agent_policy: set one)"
"""What a refusal under :func:`default_policy` names in place of a file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRule(_Strict):
    """Constraints on one param's value, beyond the runbook's own params model (all given ones must hold)."""

    values: list[Any] | None = Field(default=None, description="the value must be one of these")
    pattern: Regex | None = Field(default=None, description="a string value must match this regex in full")
    minimum: float | None = Field(default=None, description="a number value must be at least this")
    maximum: float | None = Field(default=None, description="a number value must be at most this")

    @model_validator(mode="after")
    def _something(self) -> ParamRule:
        if self.values is None and self.pattern is None and self.minimum is None and self.maximum is None:
            raise ValueError("give at least one of 'values', 'pattern', 'minimum' or 'maximum'")
        return self

    def refusal(self, value: Any) -> str | None:
        """Why ``value`` breaks this rule (what is allowed), or None if it is allowed."""
        if self.values is not None and value not in self.values:
            return f"allowed values: {', '.join(repr(v) for v in self.values)}"
        if self.pattern is not None and not (isinstance(value, str) and re.fullmatch(self.pattern, value)):
            return f"the value must match the pattern {self.pattern!r}"
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if self.minimum is not None and not (number and value >= self.minimum):
            return f"the value must be a number >= {self.minimum:g}"
        if self.maximum is not None and not (number and value <= self.maximum):
            return f"the value must be a number <= {self.maximum:g}"
        return None


class RunbookRule(_Strict):
    """What applies to the runbooks whose name matches this entry's key."""

    params: dict[str, ParamRule] = Field(default_factory=dict, description="constraints per param name")
    require_approval: list[str] = Field(default_factory=list, description="step ids a human must approve before they act")
    agents_may_approve: bool | None = Field(default=None, description="agents may approve or deny this runbook's approval steps")
    agents_may_read: bool | None = Field(default=None, description="agents may read runs of this runbook that they did not start")
    agents_may_steer: bool | None = Field(
        default=None, description="agents may resume, retry, decide, pause and cancel runs of this runbook that they did not start"
    )


class Policy(_Strict):
    """A loaded agent policy; implements the engine's ``AgentPolicy`` protocol."""

    allow: list[str] = Field(default_factory=lambda: ["*"], description="runbook name globs agents may start")
    deny: list[str] = Field(default_factory=list, description="runbook name globs agents may never start (wins over allow)")
    max_concurrent_runs: int | None = Field(default=None, ge=0, description="agent-started runs not yet finished, at most")
    runbooks: dict[str, RunbookRule] = Field(default_factory=dict, description="rules per runbook name or glob")
    _file: str = PrivateAttr(default="the agent policy")

    @property
    def file(self) -> str:
        """Where the policy was read from (named in every refusal)."""
        return self._file

    # ------------------------------------------------------------------ questions

    def rules_for(self, runbook: str) -> list[tuple[str, RunbookRule]]:
        """The ``(key, rule)`` entries that apply to ``runbook``, in file order."""
        return [(key, rule) for key, rule in self.runbooks.items() if fnmatchcase(runbook, key)]

    def start_refusal(self, runbook: str) -> str | None:
        """Why an agent may not start ``runbook`` at all (allow/deny lists), or None."""
        denied = next((p for p in self.deny if fnmatchcase(runbook, p)), None)
        if denied is not None:
            return f"runbook '{runbook}' is denied to agents (deny pattern '{denied}' in {self.file})"
        if not any(fnmatchcase(runbook, p) for p in self.allow):
            return f"runbook '{runbook}' is not on the agent allow list of {self.file} (allowed: {', '.join(self.allow) or 'none'})"
        return None

    def may_start(self, runbook: str) -> bool:
        """Whether the allow/deny lists let an agent start ``runbook`` (params are checked at start)."""
        return self.start_refusal(runbook) is None

    def may_approve(self, runbook: str) -> bool:
        """Whether agents may approve or deny ``runbook``'s approval steps: a matching entry says true, none says false."""
        return self.grants(runbook, "agents_may_approve")

    def grants(self, runbook: str, what: str) -> bool:
        """Whether the entries for ``runbook`` grant agents ``what`` (``agents_may_approve``, ``agents_may_read``,
        ``agents_may_steer``): some matching entry says true and none says false."""
        said = [getattr(rule, what) for _key, rule in self.rules_for(runbook) if getattr(rule, what) is not None]
        return bool(said) and all(said)

    def approval_steps(self, runbook: str) -> list[str]:
        """Ids of the steps that need a human approval before they act in an agent-started run of ``runbook``."""
        out: list[str] = []
        for _key, rule in self.rules_for(runbook):
            out += [s for s in rule.require_approval if s not in out]
        return out

    # ------------------------------------------------------------------ the check

    def check_start(self, runbook: str, params: dict[str, Any], *, active_runs: int) -> None:
        """Raise :class:`PolicyDenied` if an agent may not start ``runbook`` with ``params`` (validated values)."""
        refusal = self.start_refusal(runbook)
        if refusal is not None:
            raise PolicyDenied(refusal)
        if self.max_concurrent_runs is not None and active_runs >= self.max_concurrent_runs:
            raise PolicyDenied(f"{active_runs} agent-started run(s) are already active; {self.file} allows at most "
                               f"{self.max_concurrent_runs} (max_concurrent_runs): finish or cancel one first")  # fmt: skip
        for key, rule in self.rules_for(runbook):
            for name, param_rule in rule.params.items():
                self._check_param(runbook, key, name, param_rule, params)

    def _check_param(self, runbook: str, key: str, name: str, rule: ParamRule, params: dict[str, Any]) -> None:
        where = f"runbooks.{key}.params.{name} in {self.file}"
        if name not in params:
            if key == runbook:  # a named entry constraining a param the runbook lacks is a policy mistake: fail closed
                raise PolicyDenied(f"{where} constrains param '{name}', which runbook '{runbook}' does not take; fix the policy")
            return  # a glob entry applies to the runbooks that take the param
        value = params[name]
        if value is None:
            return  # not given and no default: the runbook receives nothing to constrain
        why = rule.refusal(value)
        if why is not None:
            raise PolicyDenied(f"param '{name}' = {value!r} is not allowed for runbook '{runbook}' by {where}; {why}")


# ---------------------------------------------------------------------- loading


_DEFAULT: Policy | None = None


def default_policy() -> Policy:
    """The policy agents act under when no policy file is set: they may start every runbook (with any params its
    params model accepts), act on the runs they started, and nothing else: no ``agents_may_read``,
    ``agents_may_steer`` or ``agents_may_approve`` grant, no concurrency cap, no gates."""
    global _DEFAULT
    if _DEFAULT is None:
        policy = Policy()
        policy._file = NO_POLICY_FILE
        _DEFAULT = policy
    return _DEFAULT


def load_policy(path: str | os.PathLike[str] | None) -> Policy | None:
    """The policy in ``path``, else in ``$RUNBOOK_AGENT_POLICY``; None when neither is set (agents then act under
    :func:`default_policy`).

    Raises :class:`~runner.errors.ConfigError` if the file cannot be read and
    :class:`~runner.errors.ValidationError` (file:line:col) if it is invalid.
    """
    chosen = os.fspath(path) if path is not None else (os.environ.get(ENV_VAR) or None)
    if chosen is None:
        return None
    source = "--policy" if path is not None else ENV_VAR
    from runner.safeio import read_input_text

    text = read_input_text(chosen, what="the agent policy file", refuse=ConfigError, label=f"{chosen} (from {source})")
    return parse_policy(text, chosen)


def parse_policy(text: str, file: str) -> Policy:
    """Parse and validate policy YAML ``text`` read from ``file``."""
    from runner.yamlsafe import load_yaml

    located = load_yaml(text, file)
    data = located.data if located.data is not None else {}
    if not isinstance(data, dict):
        raise ValidationError(
            [located.problem((), f"an agent policy is a mapping (allow, deny, runbooks, ...), got {type(data).__name__}")]
        )
    try:
        policy = Policy.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(located.pydantic_problems((), exc, where=lambda _path: "agent policy")) from None
    policy._file = file
    return policy
