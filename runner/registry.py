"""Typed registries filled by the ``runbook_register_*`` hooks.

Each ``add`` validates what it is given and remembers which plugin contributed
it; two plugins claiming one name is a :class:`~runner.errors.PluginError`
naming both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from runner.errors import PluginError

if TYPE_CHECKING:
    from runner.alerts import AlertSource
    from runner.notify.channel import Notifier
    from runner.steptypes import StepType
    from runner.store.base import Store

__all__ = [
    "AlertSourceRegistry",
    "NotifierRegistry",
    "Registry",
    "RunbookSourceRegistry",
    "SecretProviderRegistry",
    "StepTypeRegistry",
    "StoreRegistry",
    "TemplateFilterRegistry",
]

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Keys a step may carry besides its one step-type key; no step type may take these names.
RESERVED_STEP_KEYS = frozenset(
    {
        "id", "description", "when", "precondition", "check", "verify", "expect", "retry", "timeout",
        "expected", "idempotent", "rollback", "targets", "batch", "expr", "name",
    }
)  # fmt: skip


class Registry(Generic[T]):
    """Name → item, with the contributing plugin of each name."""

    kind = "item"

    def __init__(self) -> None:
        self._items: dict[str, T] = {}
        self._by: dict[str, str] = {}
        self._current = "<direct>"

    @contextmanager
    def contributor(self, plugin_name: str) -> Iterator[None]:
        """Attribute everything added inside the block to ``plugin_name``."""
        previous, self._current = self._current, plugin_name
        try:
            yield
        finally:
            self._current = previous

    def _add(self, name: str, item: T) -> None:
        if name in RESERVED_STEP_KEYS and self.kind == "step type":
            raise PluginError(f"step type name '{name}' is reserved for a step field")
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(f"plugin '{self._current}' registered {self.kind} {name!r}: names must match {_NAME.pattern}")
        if name in self._items:
            raise PluginError(
                f"{self.kind} '{name}' is registered by both plugin '{self._by[name]}' and plugin '{self._current}'",
                hint="disable one of them with RUNBOOK_DISABLE_PLUGINS",
            )
        self._items[name] = item
        self._by[name] = self._current

    def get(self, name: str) -> T:
        """The item registered as ``name``; ``KeyError`` if none."""
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, item) pairs sorted by name."""
        return sorted(self._items.items())

    def contributors(self) -> dict[str, str]:
        """Registered name → name of the plugin that contributed it."""
        return dict(self._by)


class _LazyStepType:
    """A step type registered by reference; its module is imported the first time the type is used."""

    def __init__(self, ref: str, plugin: str) -> None:
        self.ref, self.plugin = ref, plugin


class StepTypeRegistry(Registry["StepType"]):
    """Step types by the key a runbook step uses (``shell``, ``ssh``, ...)."""

    kind = "step type"

    def add(self, step_type: StepType) -> None:
        """Register a :class:`~runner.steptypes.StepType` instance under its ``name``."""
        self._check(step_type, self._current)
        self._add(step_type.name, step_type)

    def add_lazy(self, name: str, ref: str) -> None:
        """Register step type ``name`` as ``"module:Class"``, imported (and checked) on first use.

        Keeps start-up light: a run that uses only ``shell`` never imports the modules (and pydantic
        models) of the other step types.
        """
        if ":" not in ref:
            raise PluginError(f"plugin '{self._current}' registered step type '{name}' as {ref!r}; expected 'module:Class'")
        self._add(name, _LazyStepType(ref, self._current))  # type: ignore[arg-type]

    def get(self, name: str) -> StepType:
        """The step type ``name`` (imported now if it was registered lazily); ``KeyError`` if none."""
        item: Any = self._items[name]
        if isinstance(item, _LazyStepType):
            import importlib

            module, _, attr = item.ref.partition(":")
            try:
                step_type = getattr(importlib.import_module(module), attr)()
            except Exception as exc:
                raise PluginError(f"step type '{name}' of plugin '{item.plugin}' ({item.ref}) cannot be loaded: {exc}") from exc
            self._check(step_type, item.plugin)
            if step_type.name != name:
                raise PluginError(f"plugin '{item.plugin}' registered step type '{name}' but {item.ref} is named '{step_type.name}'")
            self._items[name] = item = step_type
        return item  # type: ignore[no-any-return]

    def items(self) -> list[tuple[str, StepType]]:
        """(name, step type) pairs sorted by name; lazily registered types are imported."""
        return [(name, self.get(name)) for name in self.names()]

    @staticmethod
    def _check(step_type: Any, plugin: str) -> None:
        from pydantic import BaseModel

        from runner.steptypes import StepType

        if not isinstance(step_type, StepType):
            raise PluginError(f"plugin '{plugin}' registered {step_type!r}, which is not a StepType instance")
        config = getattr(step_type, "Config", None)
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"step type '{step_type.name}' from plugin '{plugin}' has no pydantic Config model")
        if config.model_config.get("extra") != "forbid":
            raise PluginError(
                f"step type '{step_type.name}' from plugin '{plugin}': Config must set extra='forbid' "
                "so unknown keys in runbooks are errors"
            )
        if step_type.name in RESERVED_STEP_KEYS:
            raise PluginError(f"step type name '{step_type.name}' is reserved for a step field")

    def probes(self) -> list[str]:
        """Names of step types usable in ``check``, ``precondition`` and ``verify``."""
        return [name for name, st in self.items() if st.probe]


class StoreRegistry(Registry["Callable[[str], Store]"]):
    """Journal store factories by URL scheme."""

    kind = "store scheme"

    def __init__(self) -> None:
        super().__init__()
        self._exists: dict[str, Callable[[str], bool]] = {}

    def add(self, scheme: str, factory: Callable[[str], Store], *, exists: Callable[[str], bool] | None = None) -> None:
        """Register ``factory(url) -> Store`` for URLs starting with ``scheme:``.

        ``exists(url) -> bool``, for a store that keeps its journal in local files, says whether the journal is
        there without creating anything; it raises :class:`~runner.errors.JournalNotFound` (with ``missing_dir``)
        when the URL names a directory that does not exist. Commands that only read runs ask it first and never
        open, and so never create, a journal that is not there. Without it a store is opened as usual.
        """
        if not callable(factory) or (exists is not None and not callable(exists)):
            raise PluginError(f"store '{scheme}' from plugin '{self._current}' is not callable")
        self._add(scheme, factory)
        if exists is not None:
            self._exists[scheme] = exists

    def _scheme(self, url: str) -> str:
        from runner.errors import ConfigError

        scheme = url.split(":", 1)[0].split("+", 1)[0] if ":" in url else ""
        if scheme == "postgres":
            scheme = "postgresql"
        if scheme not in self:
            known = ", ".join(f"{n}://" for n in self.names()) or "none"
            raise ConfigError(f"store URL '{_safe_url(url)}' has no registered scheme; known: {known}")
        return scheme

    def open(self, url: str) -> Store:
        """Open the store for ``url`` (``sqlite:///path``, ``postgresql://...``)."""
        return self.get(self._scheme(url))(url)

    def exists(self, url: str) -> bool:
        """Whether the journal at ``url`` exists (True for a store that cannot tell: it is opened as usual).

        Raises :class:`~runner.errors.JournalNotFound` when the URL names a directory that does not exist."""
        check = self._exists.get(self._scheme(url))
        return True if check is None else check(url)


def _safe_url(url: str) -> str:
    """``url`` with any password replaced, for error messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


class SecretProviderRegistry(Registry["Callable[[str], str]"]):
    """Secret resolvers by reference scheme (``env``, ``file``, ...)."""

    kind = "secret provider"

    def add(self, scheme: str, resolver: Callable[[str], str]) -> None:
        """Register ``resolver(rest) -> value`` for references ``scheme:rest``."""
        if not callable(resolver):
            raise PluginError(f"secret provider '{scheme}' from plugin '{self._current}' is not callable")
        self._add(scheme, resolver)


class AlertSourceRegistry(Registry["AlertSource"]):
    """Alert sources served under ``/v1/alerts/<name>``."""

    kind = "alert source"

    def add(self, source: AlertSource) -> None:
        """Register an :class:`~runner.alerts.AlertSource` under its ``name``."""
        name = getattr(source, "name", None)
        if not isinstance(name, str) or not callable(getattr(source, "normalize", None)):
            raise PluginError(f"plugin '{self._current}' registered {source!r}, which is not an AlertSource")
        self._add(name, source)


class NotifierRegistry(Registry["Notifier"]):
    """Notifiers (channel types) by the ``type`` a channel of the ``notify:`` configuration names."""

    kind = "notifier"

    def add(self, notifier: Notifier) -> None:
        """Register a :class:`~runner.notify.channel.Notifier` under its ``name``."""
        from pydantic import BaseModel

        name = getattr(notifier, "name", None)
        config = getattr(notifier, "Config", None)
        if not isinstance(name, str) or not callable(getattr(notifier, "send", None)):
            raise PluginError(f"plugin '{self._current}' registered {notifier!r}, which is not a Notifier (name, Config, send)")
        if not (isinstance(config, type) and issubclass(config, BaseModel)) or config.model_config.get("extra") != "forbid":
            raise PluginError(f"notifier '{name}' from plugin '{self._current}': Config must be a pydantic model with extra='forbid'")
        if not isinstance(getattr(notifier, "secret_fields", None), frozenset):
            raise PluginError(f"notifier '{name}' from plugin '{self._current}': secret_fields must be a frozenset of field names")
        self._add(name, notifier)


class TemplateFilterRegistry(Registry["Callable[..., Any]"]):
    """Jinja2 filters available to runbook templates."""

    kind = "template filter"

    def add(self, name: str, function: Callable[..., Any]) -> None:
        """Register a pure filter function."""
        if not callable(function):
            raise PluginError(f"template filter '{name}' from plugin '{self._current}' is not callable")
        self._add(name, function)


class RunbookSourceRegistry(Registry[Path]):
    """Directories of runbooks shipped by plugins."""

    kind = "runbook source"

    def add_directory(self, path: str | Path, name: str | None = None) -> None:
        """Search ``path`` for runbook files (after the user's own directories)."""
        p = Path(path)
        if not p.is_dir():
            raise PluginError(f"plugin '{self._current}' added runbook directory {p}, which does not exist")
        self._add(name or re.sub(r"[^a-z0-9_]", "_", self._current.lower())[:62] or "plugin", p)

    def directories(self) -> list[Path]:
        """Every added directory."""
        return [p for _, p in self.items()]
