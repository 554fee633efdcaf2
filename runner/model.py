"""The compiled runbook model: what YAML and Python runbooks both compile to.

These models describe a runbook after its one step-type key per step has been
resolved to ``action = Action(type, config)``. The file format users write
(one step-type key per step) is described by :mod:`runner.schema`; the
translation, with located errors, lives in :mod:`runner.compiler`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

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

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

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
    "Steps",
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

    def json_text(self) -> bytes:
        """This step as the compact JSON text a runbook holds it as (:class:`Steps`) and the compile cache keeps."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), separators=(",", ":")).encode("utf-8")

    @property
    def fans_out(self) -> bool:
        """True for a step that runs once per target (``targets``) or per item (``for_each``)."""
        return self.targets is not None or self.for_each is not None


class Steps(Sequence[Step]):
    """The steps of a compiled runbook, in order: held as models, or as their JSON texts made into models on use.

    A runbook read from the compile cache holds each step as the JSON text the cache keeps (about 0.3 KiB for a
    small step, against 2.5 KiB for its model) and its id; a step becomes a :class:`Step` when it is used, and the
    last :data:`MODELS_KEPT` of them are kept (issue 19: a 5000-step run peaks under 50 MiB). Ids, positions and
    lookups by id never make models. A runbook with at most that many steps keeps them all, as before.
    """

    MODELS_KEPT = 256

    __slots__ = ("_cache", "_ids", "_index", "_lock", "_models", "_prepare", "_texts")

    def __init__(self, models: Sequence[Step] = ()) -> None:
        self._models: tuple[Step, ...] | None = tuple(models)
        self._texts: Sequence[bytes] = ()
        self._ids: tuple[str, ...] = tuple(s.id for s in self._models)
        self._index: dict[str, int] | None = None
        self._cache: dict[int, Step] = {}
        self._lock = threading.Lock()
        self._prepare: Callable[[Step], None] | None = None

    @classmethod
    def lazy(cls, texts: Sequence[bytes], ids: Sequence[str], prepare: Callable[[Step], None] | None = None, *,
             check: bool = False) -> Steps:  # fmt: skip
        """Steps held as their JSON ``texts`` (one compact object each) with their ``ids``; ``prepare`` is called on
        each model made from a text (the compile cache gives it the step types' reusable configs).

        ``check``: validate every text now (a text that is not a valid step with its id raises ``ValueError``), so
        that a damaged text is found when it is read rather than when its step runs; the first models are kept.
        """
        if len(texts) != len(ids):
            raise ValueError(f"{len(texts)} step texts for {len(ids)} step ids")
        steps = cls()
        steps._models, steps._texts, steps._ids, steps._prepare = None, texts, tuple(ids), prepare
        if check:
            for i, text in enumerate(texts):
                step = Step.model_validate_json(text)
                if step.id != steps._ids[i]:
                    raise ValueError(f"step {i} has id {step.id!r}, not {steps._ids[i]!r}")
                if i < cls.MODELS_KEPT:
                    steps._keep(i, step)
        return steps

    @property
    def ids(self) -> tuple[str, ...]:
        """The step ids, in order (no model is made)."""
        return self._ids

    @property
    def models_held(self) -> int:
        """How many models of steps held as text are kept now (at most :data:`MODELS_KEPT`; 0 for models)."""
        return len(self._cache)

    @property
    def texts(self) -> Sequence[bytes] | None:
        """Each step's JSON text, for steps held that way; None for steps held as models."""
        return None if self._models is not None else self._texts

    def select(self, keep: Callable[[str], bool]) -> Steps:
        """The steps whose id ``keep`` is true of, in order, held as these are (no model is made)."""
        return self._subset([i for i, sid in enumerate(self._ids) if keep(sid)])

    def _subset(self, chosen: Sequence[int]) -> Steps:
        """The steps at positions ``chosen``, held as these are; models already made are shared, not made again."""
        if self._models is not None:
            return Steps([self._models[i] for i in chosen])
        sub = Steps.lazy([self._texts[i] for i in chosen], [self._ids[i] for i in chosen], self._prepare)
        sub._cache = {j: model for j, i in enumerate(chosen) if (model := self._cache.get(i)) is not None}
        return sub

    @property
    def index_set(self) -> Mapping[str, int]:
        """Step id → position (a mapping: ``in`` is one lookup)."""
        if self._index is None:
            self._index = {sid: i for i, sid in enumerate(self._ids)}
        return self._index

    def index(self, step_id: Any, start: int = 0, stop: int | None = None) -> int:
        """Position of the step with id ``step_id`` (or of that step); ``ValueError`` if none."""
        if isinstance(step_id, Step):
            if step_id not in self:
                raise ValueError(f"no step {step_id.id!r} like this one")
            step_id = step_id.id
        i = self.index_set.get(step_id) if isinstance(step_id, str) else None
        if i is None or i < start or (stop is not None and i >= stop):
            raise ValueError(f"no step {step_id!r}")
        return i

    def get(self, step_id: str) -> Step:
        """The step with id ``step_id``; ``KeyError`` if none."""
        try:
            return self[self.index(step_id)]
        except ValueError:
            raise KeyError(step_id) from None

    def __contains__(self, value: object) -> bool:
        if isinstance(value, str):
            return value in self.index_set
        return isinstance(value, Step) and value.id in self._ids and self.get(value.id) == value

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> Step: ...
    @overload
    def __getitem__(self, i: slice) -> Steps: ...
    def __getitem__(self, i: int | slice) -> Step | Steps:
        if isinstance(i, slice):
            return self._subset(range(len(self._ids))[i])
        if self._models is not None:
            return self._models[i]
        n = len(self._ids)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("step index out of range")
        step = self._cache.get(i)
        if step is None:
            step = self._keep(i, Step.model_validate_json(self._texts[i]))
        return step

    def _keep(self, i: int, step: Step) -> Step:
        if self._prepare is not None:
            self._prepare(step)
        with self._lock:
            if len(self._cache) >= self.MODELS_KEPT:
                del self._cache[next(iter(self._cache))]  # the one made first
            self._cache[i] = step
        return step

    def __iter__(self) -> Iterator[Step]:
        for i in range(len(self._ids)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Steps):
            if self._ids != other._ids:
                return False
            if self._models is None and other._models is None:
                return list(self._texts) == list(other._texts)
            return all(a == b for a, b in zip(self, other, strict=True))
        if isinstance(other, tuple):
            return self._ids == tuple(getattr(s, "id", None) for s in other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __copy__(self) -> Steps:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Steps:
        return self  # immutable (its lock cannot be copied)

    def __reduce__(self) -> tuple[type[Steps], tuple[tuple[Step, ...]]]:
        return Steps, (tuple(self),)  # pickled as models (the texts' prepare hook is a closure)

    def __repr__(self) -> str:
        return f"Steps({', '.join(self._ids[:5])}{', ...' if len(self._ids) > 5 else ''}; {len(self._ids)} steps)"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        items = handler.generate_schema(tuple[Step, ...])
        from_items = core_schema.no_info_after_validator_function(cls, items)
        return core_schema.json_or_python_schema(
            json_schema=from_items,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_items]),
            serialization=core_schema.plain_serializer_function_ser_schema(tuple, return_schema=items),
        )


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
    steps: Steps = Field(default_factory=Steps)

    def step_actions(self) -> list[Action]:
        """Every step's action and rollback action, in step order."""
        return [a for step in self.steps for a in (step.action, step.rollback) if a is not None]

    def step(self, step_id: str) -> Step:
        """The step with id ``step_id``; ``KeyError`` if none."""
        return self.steps.get(step_id)

    def index(self, step_id: str) -> int:
        """Position of ``step_id`` in ``steps`` (``ValueError`` if none)."""
        return self.steps.index(step_id)
