"""The compiled runbook model: what YAML and Python runbooks both compile to.

These models describe a runbook after its one step-type key per step has been
resolved to ``action = Action(type, config)``. The file format users write
(one step-type key per step) is described by :mod:`runner.schema`; the
translation, with located errors, lives in :mod:`runner.compiler`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from runner.durations import Duration
from runner.params import ParamSpec, Regex

__all__ = [
    "NAME_PATTERN",
    "STEP_ID_PATTERN",
    "Action",
    "Batch",
    "Check",
    "Expect",
    "Retry",
    "RunbookSpec",
    "Step",
    "TextExpect",
    "Verify",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextExpect(_Model):
    """Expectation on a text stream or body."""

    contains: str | None = None
    not_contains: str | None = None
    matches: Regex | None = Field(default=None, description="Python regular expression searched in the text")


class Expect(_Model):
    """What a result must show for an action or check to count as holding."""

    exit_code: int | list[int] | None = None
    stdout: TextExpect | None = None
    stderr: TextExpect | None = None
    status: int | list[int] | str | None = Field(default=None, description="HTTP status, list, or class like '2xx'")
    json_: dict[str, Any] | None = Field(default=None, alias="json", description="JSON path (a.b[0].c) to expected value")
    body: TextExpect | None = None
    header: dict[str, str] | None = Field(default=None, description="header name to a substring of its value")
    output: Any = Field(default=None, description="expected output value (Python and expression checks)")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("status")
    @classmethod
    def _status(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(r"[1-5]xx|\d{3}", value):
            raise ValueError("expected a status code, a list of codes, or a class such as '2xx'")
        return value


class Action(_Model):
    """A step type and its (unrendered) config."""

    type: str
    config: Any
    _validated: BaseModel | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return (self.type, self.config) == (other.type, other.config)

    __hash__ = None  # type: ignore[assignment]  # config is a dict

    @property
    def validated(self) -> BaseModel | None:
        """The step type's ``Config`` validated once from ``config``, when it holds no template.

        Rendering such a config gives the config itself, so for a step type that declares
        :attr:`~runner.steptypes.StepType.config_read_only` the engine hands each action a shallow copy of this
        model instead of validating the same values again for every run. ``None`` for a config with templates,
        for other step types, and for an action read back from a stored snapshot.
        """
        return self._validated

    def with_validated(self, model: BaseModel) -> Action:
        """This action, remembering ``model`` (see :attr:`validated`)."""
        self._validated = model
        return self


class Check(_Model):
    """A read-only probe plus its expectation, or a template expression."""

    type: str | None = None
    config: Any = None
    expect: Expect | None = None
    expr: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one(self) -> Check:
        if (self.type is None) == (self.expr is None):
            raise ValueError("a check is either a probe (one step-type key) or an 'expr'")
        return self


class Verify(_Model):
    """Checks polled after the action ``every`` seconds until all hold, for at most ``within``."""

    within: Duration = 30.0
    every: Duration = 2.0
    checks: tuple[Check, ...] = ()


class Retry(_Model):
    """How often an action is tried and how long to wait in between."""

    attempts: int = Field(default=1, ge=1, le=100)
    delay: Duration = 1.0
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    max_delay: Duration = 60.0


class Batch(_Model):
    """Rate control for a step that runs over many targets (``targets``) or items (``for_each``)."""

    max_concurrency: int | str = Field(default=1, description="absolute number or percentage like '25%'")
    max_failures: int | str = Field(default=0, description="failed targets tolerated before the rest are not started")
    pause_between: Duration = 0.0

    @field_validator("max_concurrency", "max_failures")
    @classmethod
    def _count(cls, value: int | str) -> int | str:
        if isinstance(value, str) and not re.fullmatch(r"\d{1,3}%", value):
            raise ValueError("expected a number or a percentage such as '25%'")
        if isinstance(value, int) and value < 0:
            raise ValueError("expected a non-negative number")
        return value

    def resolve(self, total: int) -> tuple[int, int]:
        """(max_concurrency, max_failures) as numbers for ``total`` targets."""

        def count(value: int | str, floor: int) -> int:
            if isinstance(value, str):
                return max(floor, total * int(value[:-1]) // 100)
            return value

        return max(1, count(self.max_concurrency, 1)), count(self.max_failures, 0)


_ADDED_STEP_FIELDS = ("for_each", "reads", "writes")


class Step(_Model):
    """One compiled step."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    description: str = ""
    action: Action
    when: str | bool | None = None
    precondition: tuple[Check, ...] = ()
    check: tuple[Check, ...] = ()
    verify: Verify | None = None
    expect: Expect | None = None
    retry: Retry = Retry()
    timeout: Duration | None = None
    expected: Duration | None = None
    idempotent: bool = False
    rollback: Action | None = None
    targets: list[str] | str | None = None
    for_each: list[Any] | str | None = Field(default=None, description="a list (or a template giving one): the step runs once per item")
    batch: Batch | None = None
    reads: tuple[str, ...] | None = Field(
        default=None, description="what the step's checks read (paths or keys); [] = nothing an earlier step changes"
    )
    writes: tuple[str, ...] | None = Field(default=None, description="what the step's action changes (paths or keys); [] = nothing")

    @model_serializer(mode="wrap")
    def _without_unset_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields added after runs were journaled are left out while unset, so a step that does not use them has
        # the JSON form (and the hash) it had before: a run started by an older release resumes without an "edit".
        out: dict[str, Any] = handler(self)
        for key in _ADDED_STEP_FIELDS:
            if out.get(key, 0) is None:
                del out[key]
        return out

    @property
    def fans_out(self) -> bool:
        """True for a step that runs once per target (``targets``) or per item (``for_each``)."""
        return self.targets is not None or self.for_each is not None


class RunbookSpec(_Model):
    """A compiled, validated runbook."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    version: str = "1"
    tags: tuple[str, ...] = ()
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    lock: str | None = None
    on_failure: Literal["stop", "rollback"] = "stop"
    steps: tuple[Step, ...] = ()

    def step_actions(self) -> list[Action]:
        """Every step's action and rollback action, in step order."""
        return [a for step in self.steps for a in (step.action, step.rollback) if a is not None]

    def step(self, step_id: str) -> Step:
        """The step with id ``step_id``; ``KeyError`` if none."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def index(self, step_id: str) -> int:
        """Position of ``step_id`` in ``steps``."""
        return [s.id for s in self.steps].index(step_id)
