"""The API a step-type plugin implements.

A step type is the key of a runbook step (``shell``, ``ssh``, ``http`` ...). Its
``Config`` pydantic model validates the value under that key twice: once when
the runbook is loaded (template strings such as ``"{{ params.port }}"`` are
accepted where a typed value goes, through :data:`Templated`), and again after
rendering, when only real values are accepted.

``execute`` returns an :class:`ActionResult` (the engine applies ``expect`` to
it) or a :class:`Wait` (the run waits without a live process and the engine
calls ``execute`` again on the next resume, with ``ctx.state`` kept).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from runner.context import Context
    from runner.model import Action
    from runner.registry import StepTypeRegistry

__all__ = [
    "APPROVAL_POLL", "ActionResult", "Approvable", "ApprovalRequest", "Argv", "Finding", "PreflightFacts", "StaticFacts", "StepConfig", "StepType",
    "Tally", "Templated", "Vote", "Wait", "has_template", "is_template", "remember_reusable_configs", "reusable_config",
]  # fmt: skip

T = TypeVar("T")


def is_template(value: object) -> bool:
    """True if ``value`` is a string holding Jinja2 template syntax."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def has_template(value: object) -> bool:
    """True if ``value`` is a template string or a dict or list holding one, at any depth."""
    if isinstance(value, dict):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    return is_template(value)


def _template_only(value: str, info: ValidationInfo) -> str:
    if not is_template(value):
        raise ValueError("expected a value of the declared type or a '{{ ... }}' template")
    if info.context and info.context.get("rendered"):
        raise ValueError(f"template rendered to {value!r}, which is not a value of the declared type")
    return value


_TemplateString = Annotated[str, AfterValidator(_template_only)]


class _TemplatedFactory:
    def __getitem__(self, item: Any) -> Any:
        return item | _TemplateString


Templated: Any = _TemplatedFactory()
"""``Templated[int]``: an ``int``, or a template string that must render to one."""


def _argv(value: Any) -> Any:
    """``[true, 3]`` in YAML is a bool and an int; as a command line they mean the words ``true`` and ``3``."""
    if not isinstance(value, list):
        return value
    out = []
    for item in value:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, int | float):
            out.append(str(item))
        else:
            out.append(item)
    return out


Argv = Annotated[list[str], BeforeValidator(_argv)]
"""An argv list: scalars YAML reads as booleans or numbers are kept as the words written."""


class StepConfig(BaseModel):
    """Base for step-type ``Config`` models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


_OBSERVED = ("exit_code", "stdout", "stderr", "status", "json", "headers", "body")


@dataclass
class ActionResult:
    """What an action or probe observed. Fields a step type does not use stay ``None``.

    ``output`` is the JSON value stored in the journal and visible to later templates
    as ``steps.<id>.output``; when it is ``None`` the engine stores :meth:`as_output`.
    """

    output: Any = None
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    status: int | None = None
    json: Any = None
    headers: dict[str, str] | None = None
    body: str | None = None
    ok: bool | None = None
    truncated: bool = False
    detail: str = ""
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_output(self) -> Any:
        """The JSON value stored for this result: ``output`` or the observed fields."""
        if self.output is not None:
            return self.output
        out: dict[str, Any] = {}
        for key in _OBSERVED:  # no dataclasses.asdict: it deep-copies, and this runs for every step
            value = getattr(self, key)
            if value is not None and value != {}:
                out[key] = value
        if self.truncated:
            out["truncated"] = True
        return out or None

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (for Python steps that return a result)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Finding:
    """A problem :meth:`StepType.lint` or :meth:`StepType.preflight` found: ``path`` inside the config (``("url",)``)
    and what is wrong. ``resource`` names what the problem is about when an earlier step could create it (a file, a
    program): pre-flight does not report it when an earlier step declares that it ``writes`` it."""

    path: tuple[str | int, ...]
    message: str
    resource: str | None = None


@dataclass(frozen=True)
class PreflightFacts:
    """What :meth:`StepType.preflight` may look at besides the rendered config.

    :param step_id: the step the config belongs to.
    :param raw: the config as the runbook wrote it (templates unrendered).
    :param target: the fan-out target (inventory host) the config is rendered for, or None.
    :param settings: the run's settings (``inventory``, ``known_hosts`` ...).
    :param redactor: the run's redactor, every secret already known to it (``redactor.text(x) != x``: ``x`` holds one).
    :param env: the environment the run's commands inherit.
    :param memo: shared by every call of one pre-flight: a step type may keep lookups there (``PATH`` searches).
    """

    step_id: str
    raw: Mapping[str, Any]
    target: Mapping[str, Any] | None
    settings: Any
    redactor: Any
    env: Mapping[str, str]
    memo: dict[Any, Any] = field(default_factory=dict)


class StaticFacts:
    """What :meth:`StepType.lint` may ask about a runbook without running it."""

    def __init__(self, reads_secret: Callable[[str], bool], env: Mapping[str, str]) -> None:
        self._reads_secret, self.env = reads_secret, env

    def carries_secret(self, value: object) -> bool:
        """True if a template anywhere in ``value`` reads a secret (``secrets.X`` or a secret param)."""
        if isinstance(value, dict):
            return any(self.carries_secret(v) for v in value.values())
        if isinstance(value, list | tuple):
            return any(self.carries_secret(v) for v in value)
        return is_template(value) and self._reads_secret(str(value))


APPROVAL_POLL = 30.0
"""Seconds after which a waiting approval is looked at again when nothing else is due."""


@dataclass
class Wait:
    """The step cannot finish yet; the run waits without a process.

    :param reason: one line saying what the step waits for.
    :param not_before: epoch seconds before which polling again is pointless.
    :param kind: ``wait``, ``approval`` or ``child`` (what ``next`` should say).
    :param deadline: epoch seconds after which the step gives up (informational).
    """

    reason: str
    not_before: float | None = None
    kind: str = "wait"
    deadline: float | None = None


@dataclass(frozen=True)
class ApprovalRequest:
    """An open request for people's decisions: when it was made, the journal position decisions count from, expiry."""

    requested_at: float
    since_seq: int
    expires_at: float | None = None


@dataclass(frozen=True)
class Vote:
    """One person's recorded decision on an approval request."""

    actor: str
    approve: bool
    comment: str = ""
    ts: float = 0.0


@dataclass(frozen=True)
class Tally:
    """Where an approval request stands, counted by the step type's own rules.

    ``outcome``: ``pending`` (more approvals needed), ``approved`` (the quorum is reached), ``denied``,
    ``expired`` (nobody decided in time: ``on_expiry`` says what that means). Anything but ``pending`` is settled:
    the next resume applies it.
    """

    outcome: Literal["pending", "approved", "denied", "expired"]
    approved_by: tuple[str, ...] = ()
    needed: int = 1
    denied_by: str | None = None
    comment: str = ""
    expires_at: float | None = None
    on_expiry: str = "deny"
    text: str = ""
    """Where the request stands, in the step type's own words (a waiting run's reason)."""

    @property
    def settled(self) -> bool:
        """True once nothing more is needed from people: resuming applies the outcome."""
        return self.outcome != "pending"


@runtime_checkable
class Approvable(Protocol):
    """A step type people decide on (the ``approval`` step type; an agent-policy gate uses it too).

    The rules of who may decide and what counts live here, once: the engine calls these methods to record a
    decision (:meth:`admit`) and to say where a request stands (:meth:`tally`) in every run view.
    """

    def request_of(self, state: dict[str, Any]) -> ApprovalRequest | None:
        """The open request kept in the step's ``state`` (None before the step first asked)."""

    def tally(self, config: dict[str, Any], state: dict[str, Any], votes: list[Vote], started_by: str, now: float) -> Tally:
        """Where the request stands with ``votes`` (every vote recorded since the request, in order)."""

    def admit(self, config: dict[str, Any], state: dict[str, Any], vote: Vote, started_by: str, votes: list[Vote]) -> None:
        """Raise :class:`~runner.errors.UsageError` naming the rule if ``vote`` may not be recorded."""


class StepType:
    """Base class of step types. Subclasses set the class attributes and implement ``execute``."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    description: ClassVar[str] = ""
    probe: ClassVar[bool] = False
    """True if the type may appear in ``check``, ``precondition`` and ``verify``."""
    default_expect: ClassVar[dict[str, Any]] = {}
    """Expectation applied when a step or check gives no ``expect`` (e.g. ``{"exit_code": 0}``)."""
    may_wait: ClassVar[bool] = False
    """True if ``execute`` may return :class:`Wait`."""
    unrendered: ClassVar[frozenset[str]] = frozenset()
    """Config fields the engine passes through untemplated (code such as a script, nested checks)."""
    shorthand_schema: ClassVar[dict[str, Any] | None] = None
    """JSON Schema of the non-mapping shorthand :meth:`shorthand` accepts (for ``runbook schema``)."""
    check_fields: ClassVar[frozenset[str]] = frozenset()
    """Config fields holding lists of checks, compiled (and located on error) like a step's ``check``."""
    config_read_only: ClassVar[bool] = False
    """True if ``execute`` never changes its config, nested lists and dicts included. The engine then validates
    a config without templates once, when the runbook is loaded, and gives every action (every run, every
    fan-out target, in any thread) a shallow copy of that one model instead of validating it again."""
    expect_keys: ClassVar[frozenset[str] | None] = None
    """The ``expect`` keys that mean something for this type's results (``{"exit_code", "stdout", "stderr"}``);
    any other is a validation error naming the key. ``None``: any key (a type whose results vary)."""
    output_fields: ClassVar[frozenset[str] | None] = None
    """Top-level fields of the output this type stores (what ``steps.ID.output.FIELD`` may name); ``None``: not known."""
    defaults_keys: ClassVar[dict[str, dict[str, Any]]] = {}
    """Keys a runbook's ``defaults:`` may give for this type besides its config fields, with their JSON Schema
    (e.g. http's ``base_url``); :meth:`resolve_defaults` turns them into config."""

    def resolve_defaults(self, config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        """``config`` (a step's config with this type's ``defaults:`` already merged in) after the type's own
        :attr:`defaults_keys` are applied. The default returns ``config`` unchanged."""
        return config

    def lint(self, config: dict[str, Any], facts: StaticFacts) -> list[Finding]:
        """Problems ``runbook validate`` can find in an (unrendered) ``config`` without running anything.

        The default finds none. ``facts`` says what is known statically (which templates read secrets).
        """
        return []

    def preflight(self, config: Any, facts: PreflightFacts) -> list[Finding]:
        """Problems that would make this action fail, found before the run changes anything (pre-flight).

        Called before a run's first step (and again when it resumes) for the action and the rollback action of every
        step still to run, once per target or item, with ``config`` rendered and validated as it will run (a config
        whose templates need an earlier step's output is not checked). Look, never touch: read local files (a key,
        a CA bundle, known_hosts), never connect anywhere or change anything. The default finds none.
        """
        return []

    def shorthand(self, value: Any) -> Any:
        """Turn a non-mapping value (e.g. ``shell: [argv]``) into the mapping ``Config`` takes."""
        return value

    def execute(self, config: Any, ctx: Context) -> ActionResult | Wait:
        """Carry out the action (or probe) described by the validated ``config``."""
        raise NotImplementedError

    def summary(self, config: dict[str, Any]) -> str:
        """One line describing an (unrendered) config for ``show`` and the live view."""
        import json

        text = json.dumps(config, separators=(",", ":"), default=str)
        return text if len(text) <= 100 else text[:97] + "..."

    def fingerprint(self, config: dict[str, Any]) -> str | None:
        """Extra identity of an action beyond its config (e.g. a Python function's source)."""
        return None

    def estimate(self, config: dict[str, Any]) -> float | None:
        """Seconds the action is known to take, when the config says (``wait: {for: 30s}``)."""
        return None


def reusable_config(step_type: StepType, config: dict[str, Any]) -> BaseModel | None:
    """The validated ``Config`` the engine may reuse for every action of ``config`` (stored JSON form), or None.

    Only for a step type that declares :attr:`StepType.config_read_only` and a config with no template (outside
    the type's ``unrendered`` fields) and no nested checks: rendering such a config gives the config itself.
    It is validated as the engine would at run time, as rendered, from the JSON form (a YAML value such as a
    date is a string there). A config the type refuses gives None: the engine reports it when the step runs.
    """
    if not step_type.config_read_only or step_type.check_fields:
        return None
    if any(key not in step_type.unrendered and has_template(value) for key, value in config.items()):
        return None
    from pydantic import ValidationError

    try:
        return step_type.Config.model_validate(config, context={"rendered": True})
    except ValidationError:
        return None


def remember_reusable_configs(actions: Iterable[Action], registry: StepTypeRegistry) -> None:
    """Give each of ``actions`` its :func:`reusable_config` (see :attr:`Action.validated <runner.model.Action.validated>`)."""
    for action in actions:
        if action.type in registry:
            reusable = reusable_config(registry.get(action.type), action.config)
            if reusable is not None:
                action.with_validated(reusable)
