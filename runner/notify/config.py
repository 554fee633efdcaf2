"""The ``notify:`` configuration, and the one loader the CLI, ``runbook worker`` and ``runbook serve`` share.

Where it is read from, first found wins (the whole ``notify:`` section of one file; sections are not merged):

1. ``runbook serve --config FILE``: that file's ``notify:`` (that server only);
2. ``RUNBOOK_CONFIG``: a configuration file named by the environment;
3. the project's ``.runbook/config.yaml`` (next to the default journal);
4. the user's ``$XDG_CONFIG_HOME/runbook/config.yaml`` (``~/.config/runbook/config.yaml``).

Channel secrets are references (``env:NAME``, ``file:PATH``, a plugin's scheme), resolved when a process starts
delivering, and masked in everything it prints, logs or sends.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from runner.durations import Duration
from runner.errors import ConfigError, Problem, SecretError, ValidationError
from runner.notify.files import CONFIG_ENV, config_files

if TYPE_CHECKING:
    from runner.notify.channel import Notifier
    from runner.registry import NotifierRegistry, SecretProviderRegistry
    from runner.secrets import Redactor, SecretResolver
    from runner.settings import Settings
    from runner.yamlsafe import Located

__all__ = [
    "CONFIG_ENV",
    "PROJECT_CONFIG_KEYS",
    "Channel",
    "Delivery",
    "NotifyConfig",
    "NotifySettings",
    "Rule",
    "config_files",
    "find_notify_section",
    "load_notify",
    "parse_notify",
    "resolve_channels",
]

PROJECT_CONFIG_KEYS = ("notify",)
"""Top-level keys of a project or user configuration file (anything else is reported as unknown)."""

Kind = Literal["waiting_approval", "failed", "unknown", "succeeded", "cancelled", "breaker_open", "storm_refused"]
_CHANNEL = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule(_Model):
    """Which notifications go to which channels: every rule that matches adds its channels (each channel once)."""

    events: list[Kind] = Field(min_length=1, description="notification kinds this rule takes")
    channels: list[str] = Field(min_length=1, description="names of channels under notify.channels")
    runbooks: list[str] = Field(default_factory=lambda: ["*"], description="globs over the runbook's name")
    routes: list[str] | None = Field(default=None, description="globs over the alert route; unset: any run, routed or not")
    labels: dict[str, str] = Field(default_factory=dict, description="alert label: glob (each label must be there and match)")

    def matches(self, kind: str, runbook: str | None, route: str | None, labels: Mapping[str, str]) -> bool:
        """True if a notification of ``kind`` about ``runbook`` (started by ``route`` with alert ``labels``) matches."""
        if kind not in self.events:
            return False
        if not any(fnmatch.fnmatchcase(runbook or "", g) for g in self.runbooks):  # no runbook ("" ) matches only "*"
            return False
        if self.routes is not None and (route is None or not any(fnmatch.fnmatchcase(route, g) for g in self.routes)):
            return False  # a run no route started never matches a rule that names routes
        return all(k in labels and fnmatch.fnmatchcase(labels[k], g) for k, g in self.labels.items())


class Delivery(_Model):
    """How notifications are delivered."""

    timeout: Duration = Field(default=10.0, description="how long one send to one channel may take")
    retry_initial: Duration = Field(default=5.0, description="delay before the first retry; doubled after each failure")
    retry_max: Duration = Field(default=600.0, description="longest delay between retries")
    expire_after: Duration = Field(default=86400.0, description="give up on a notification this long after its event")
    cli_wait: Duration = Field(default=5.0, description="how long run/resume/step/cancel may spend sending after the run stops (0: none)")
    poll: Duration = Field(default=1.0, description="how often a background deliverer looks for due notifications")
    route_quiet: Duration = Field(default=900.0, description="breaker_open/storm_refused of one route: at most one message per window")

    @field_validator("timeout", "retry_initial", "poll")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0")
        return value


class NotifyConfig(_Model):
    """The ``notify:`` section."""

    console_url: str | None = Field(default=None, description="base URL of the web console; messages link to {console_url}/runs/{id}")
    command: str = Field(default="runbook", description="how commands in messages start, e.g. 'runbook --store postgresql://...'")
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name: {type: NOTIFIER, ...its settings}")
    rules: list[Rule] = Field(default_factory=list)
    delivery: Delivery = Field(default_factory=Delivery)

    @field_validator("console_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not a base URL like https://runbook.example.com")
        return value.rstrip("/") if value else value

    @field_validator("channels")
    @classmethod
    def _names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, spec in value.items():
            if not re.fullmatch(_CHANNEL, name):
                raise ValueError(f"channel name {name!r} must match {_CHANNEL} (lowercase letters, digits, '-' and '_')")
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
                raise ValueError(f"channel '{name}' needs a 'type' (webhook, slack, email, or a plugin's notifier)")
        return value


@dataclass(frozen=True)
class Channel:
    """A configured channel: its notifier and validated settings (secret fields hold their values)."""

    name: str
    notifier: Notifier
    config: BaseModel


@dataclass
class NotifySettings:
    """A loaded ``notify:`` section with its channels resolved."""

    config: NotifyConfig
    file: str
    channels: dict[str, Channel]
    redactor: Redactor
    """Masks every resolved channel secret (and whatever the caller seeded it with)."""
    env_names: frozenset[str] = frozenset()
    """Environment variables the channels' ``env:`` references read (a server removes them from its environment)."""

    def channels_for(self, kind: str, runbook: str | None, route: str | None, labels: Mapping[str, str]) -> list[str]:
        """Names of the channels the rules choose for a notification, in rule order, each once."""
        out: list[str] = []
        for rule in self.config.rules:
            if rule.matches(kind, runbook, route, labels):
                out += [c for c in rule.channels if c not in out]
        return out


def find_notify_section(settings: Settings) -> tuple[Any, Located | None, str] | None:
    """The first ``notify:`` section of :func:`config_files`: (section, its located document, file); None if none has one.

    ``RUNBOOK_CONFIG`` naming a file that does not exist is an error; the other files are optional.
    """
    from runner.yamlsafe import load_yaml

    for i, path in enumerate(config_files(settings)):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if i == 0 and os.environ.get(CONFIG_ENV):
                raise ConfigError(f"{CONFIG_ENV}={path}: no such file") from None
            continue
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration {path}: {exc.strerror}") from None
        located = load_yaml(raw, str(path))
        data = located.data
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ValidationError([Problem(f"expected a mapping with {', '.join(PROJECT_CONFIG_KEYS)}", file=str(path), line=1)])
        unknown = [k for k in data if k not in PROJECT_CONFIG_KEYS]
        if unknown:
            raise ValidationError([located.problem((k,), f"unknown key '{k}'; expected {', '.join(PROJECT_CONFIG_KEYS)}") for k in unknown])
        if data.get("notify") is not None:
            return data["notify"], located, str(path)
    return None


def parse_notify(section: Any, located: Located | None, file: str, base: tuple[str | int, ...] = ("notify",)) -> NotifyConfig:
    """Validate a ``notify:`` section; every problem names file:line:column."""
    from runner.yamlsafe import Located

    where = located or Located(data=None, file=file)
    if not isinstance(section, dict):
        raise ValidationError([where.problem(base, "expected a mapping (channels, rules, console_url, delivery)")])
    try:
        config = NotifyConfig.model_validate(section)
    except PydanticValidationError as exc:
        raise ValidationError(where.pydantic_problems(base, exc)) from None
    problems = [
        where.problem((*base, "rules", i, "channels", k), f"rule {i + 1} names channel '{name}', which is not under notify.channels",
                      _dotted((*base, "rules", i, "channels", k)), value=True)
        for i, rule in enumerate(config.rules) for k, name in enumerate(rule.channels) if name not in config.channels
    ]  # fmt: skip
    if problems:
        raise ValidationError(problems)
    return config


def load_notify(
    notifiers: NotifierRegistry, providers: SecretProviderRegistry, settings: Settings, *,
    server_section: tuple[Any, Located | None, str] | None = None, redactor: Redactor | None = None,
) -> NotifySettings | None:  # fmt: skip
    """The notification settings in effect (see the module docstring for where they come from); None if none.

    ``server_section``: the server configuration's ``notify:`` (section, located document, file), which wins.
    ``redactor``: seeded with the caller's secrets and fed the channels'; a new one if not given.
    """
    found = server_section if server_section is not None and server_section[0] is not None else find_notify_section(settings)
    if found is None:
        return None
    section, located, file = found
    config = parse_notify(section, located, file)
    return resolve_channels(config, file, located, notifiers, providers, redactor)


def resolve_channels(config: NotifyConfig, file: str, located: Located | None, notifiers: NotifierRegistry,
                     providers: SecretProviderRegistry, redactor: Redactor | None = None) -> NotifySettings:  # fmt: skip
    """Validate each channel with its notifier's ``Config`` and resolve its secret fields."""
    from runner.secrets import Redactor, SecretResolver
    from runner.yamlsafe import Located

    where = located or Located(data=None, file=file)
    redactor = redactor if redactor is not None else Redactor()
    resolver = SecretResolver(providers, redactor)
    validated: dict[str, tuple[Notifier, BaseModel]] = {}
    problems: list[Problem] = []
    for name, spec in config.channels.items():
        path = ("notify", "channels", name)
        type_ = spec["type"]
        if type_ not in notifiers:
            at = (*path, "type")
            problems.append(where.problem(at, f"no notifier '{type_}'; known: {', '.join(notifiers.names())}", _dotted(at), value=True))
            continue
        notifier = notifiers.get(type_)
        try:
            validated[name] = notifier, notifier.Config.model_validate({k: v for k, v in spec.items() if k != "type"})
        except PydanticValidationError as exc:
            problems += where.pydantic_problems(path, exc)
    if problems:  # every problem of the file first; secrets are resolved only for a valid configuration
        raise ValidationError(problems)
    channels: dict[str, Channel] = {}
    for name, (notifier, model) in validated.items():
        data = model.model_dump()
        for field in sorted(notifier.secret_fields):
            try:
                data[field] = _resolve(data.get(field), resolver, field)
            except SecretError as exc:
                at = ("notify", "channels", name, field)
                problems.append(where.problem(at, str(exc), _dotted(at), value=True))
        channels[name] = Channel(name, notifier, type(model).model_validate(data))
    if problems:
        raise ValidationError(problems)
    return NotifySettings(config, file, channels, redactor, frozenset(resolver.env_names))


def _resolve(value: Any, resolver: SecretResolver, field: str) -> Any:
    """The value behind a secret reference (or each of a list of them); None stays None."""
    if isinstance(value, list):
        return [resolver.resolve(v, name=field) for v in value]
    return resolver.resolve(value, name=field) if isinstance(value, str) else value


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)
