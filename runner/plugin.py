"""Plugin manager factory and the typed facade the core calls hooks through.

Nothing is loaded at import time. :func:`get_plugin_manager` returns a fresh
manager: it adds the hook specs, honours the ``RUNBOOK_DISABLE_PLUGINS`` block
list, loads the ``runbook`` entry-point group (built-in plugins are registered
there too), registers the core's own implementations, then calls
``check_pending()`` so that a misspelt hook fails loudly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from runner.registry import (
        AlertSourceRegistry,
        NotifierRegistry,
        RunbookSourceRegistry,
        SecretProviderRegistry,
        StepTypeRegistry,
        StoreRegistry,
        TemplateFilterRegistry,
    )
    from runner.store.records import Event, RunRecord

__all__ = ["NAME", "EntryPoint", "PluginHost", "PluginInfo", "entry_points", "get_plugin_manager", "hookimpl", "hookspec"]

NAME = "runbook"
"""The pluggy project name and the entry-point group."""

hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)

_CORE_PLUGINS: tuple[str, ...] = ("runner.coreplugin",)


def disabled_plugins(value: str | None = None) -> list[str]:
    """Names blocked by ``RUNBOOK_DISABLE_PLUGINS`` (comma separated)."""
    raw = os.environ.get("RUNBOOK_DISABLE_PLUGINS", "") if value is None else value
    return [name.strip() for name in raw.split(",") if name.strip()]


def get_plugin_manager(
    *, disable: Iterable[str] | None = None, extra: Iterable[object] = (), entrypoints: bool = True
) -> pluggy.PluginManager:
    """Return a new plugin manager with every enabled plugin registered and validated.

    :param disable: plugin names to block; defaults to ``RUNBOOK_DISABLE_PLUGINS``.
    :param extra: plugin objects to register in addition (embedding applications, tests).
    :param entrypoints: load the ``runbook`` entry-point group (the built-ins live there).
    """
    import importlib

    from runner import hookspecs
    from runner.errors import PluginError

    pm = pluggy.PluginManager(NAME)
    pm.add_hookspecs(hookspecs)
    for name in disabled_plugins() if disable is None else disable:
        pm.set_blocked(name)
    if entrypoints:
        for ep in entry_points(NAME):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not look like our bug
                raise PluginError(f"could not load a '{NAME}' entry-point plugin '{ep.name}' ({ep.value}): {exc}") from exc
            pm.register(plugin, name=ep.name)
            _ORIGINS[id(plugin)] = ep.dist_path
    for module_name in _CORE_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin '{exc.plugin_name if hasattr(exc, 'plugin_name') else exc.plugin}' is invalid: {exc}") from exc
    return pm


_ORIGINS: dict[int, str] = {}
"""id(plugin) → the dist-info directory it was installed from (for ``runbook plugins``)."""


@dataclass(frozen=True)
class EntryPoint:
    """One ``name = module[:attr]`` line of an ``entry_points.txt`` group, and where it was installed."""

    name: str
    value: str
    dist_path: str

    def load(self) -> object:
        """Import the module (and attribute) the entry point names."""
        import importlib

        module, _, attr = self.value.partition(":")
        obj: object = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
        return obj


def entry_points(group: str) -> list[EntryPoint]:
    """Entry points of ``group`` from every distribution on ``sys.path`` (the first copy of a distribution wins).

    Reads only ``entry_points.txt`` files: ``importlib.metadata`` parses every distribution's metadata,
    which costs tens of milliseconds on each ``runbook`` start in a large environment. The files are read
    once per process and ``sys.path``.
    """
    header = f"[{group}]"
    found: list[EntryPoint] = []
    for dist_path, text in _entry_point_files():
        if header in text:
            found += [EntryPoint(name, value, dist_path) for name, value in _section(text, header)]
    return found


_FILES: tuple[tuple[str, ...], list[tuple[str, str]]] | None = None


def _entry_point_files() -> list[tuple[str, str]]:
    """(dist-info path, text of its ``entry_points.txt``) of each distribution on ``sys.path``, cached per ``sys.path``."""
    import os
    import sys

    global _FILES
    key = tuple(sys.path)
    if _FILES is not None and _FILES[0] == key:
        return _FILES[1]
    files: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in key:
        try:
            listing = sorted(os.scandir(entry or "."), key=lambda d: d.name)
        except OSError:
            continue
        for d in listing:
            if not d.name.endswith((".dist-info", ".egg-info")):
                continue
            dist = d.name.rsplit(".", 1)[0].split("-", 1)[0].lower().replace("_", "-")
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(d.path, "entry_points.txt"), encoding="utf-8") as f:
                    files.append((d.path, f.read()))
            except OSError:
                continue
    _FILES = (key, files)
    return files


def _section(text: str, header: str) -> list[tuple[str, str]]:
    out, inside = [], False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            inside = line == header
        elif inside and "=" in line and not line.startswith(("#", ";")):
            name, _, value = line.partition("=")
            out.append((name.strip(), value.strip()))
    return out


def _distribution(path: str) -> str | None:
    """``name version`` from a dist-info's METADATA."""
    import os

    fields: dict[str, str] = {}
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(path, meta), encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break
                    key, _, value = line.partition(":")
                    fields.setdefault(key.strip().lower(), value.strip())
        except OSError:
            continue
        break
    return f"{fields['name']} {fields.get('version', '?')}" if "name" in fields else None


@dataclass(frozen=True)
class PluginInfo:
    """What ``runbook plugins`` shows for one plugin."""

    name: str
    module: str
    location: str
    distribution: str | None
    contributes: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        """JSON shape of ``runbook plugins --json``."""
        return {
            "name": self.name,
            "module": self.module,
            "location": self.location,
            "distribution": self.distribution,
            "contributes": self.contributes,
        }


def _plain_impls(caller: Any, hook_name: str) -> list[Any]:
    """The implementations of a hook the core calls one by one; a wrapper there would silently do nothing, so it is refused."""
    from runner.errors import PluginError

    impls = caller.get_hookimpls()
    for impl in impls:
        if getattr(impl, "wrapper", False) or getattr(impl, "hookwrapper", False):
            raise PluginError(f"plugin '{impl.plugin_name}' implements {hook_name} as a wrapper; {hook_name} is called once per "
                              "plugin (to record who contributed what), so it cannot be wrapped: make it a plain hookimpl")  # fmt: skip
    return list(impls)


class PluginHost:
    """Typed facade over a plugin manager: registries are built once, on first use."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else get_plugin_manager()

    def _fill(self, registry: Any, hook_name: str) -> Any:
        caller = getattr(self.pm.hook, hook_name)
        # Call each implementation on its own so the registry knows who contributed what.
        for impl in reversed(_plain_impls(caller, hook_name)):
            with registry.contributor(impl.plugin_name):
                impl.function(registry=registry)
        return registry

    @cached_property
    def step_types(self) -> StepTypeRegistry:
        """Every registered step type by name."""
        from runner.registry import StepTypeRegistry

        return self._fill(StepTypeRegistry(), "runbook_register_step_types")  # type: ignore[no-any-return]

    @cached_property
    def stores(self) -> StoreRegistry:
        """Store factories by URL scheme."""
        from runner.registry import StoreRegistry

        return self._fill(StoreRegistry(), "runbook_register_stores")  # type: ignore[no-any-return]

    @cached_property
    def secret_providers(self) -> SecretProviderRegistry:
        """Secret resolvers by reference scheme."""
        from runner.registry import SecretProviderRegistry

        return self._fill(SecretProviderRegistry(), "runbook_register_secret_providers")  # type: ignore[no-any-return]

    @cached_property
    def alert_sources(self) -> AlertSourceRegistry:
        """Alert sources by name."""
        from runner.registry import AlertSourceRegistry

        return self._fill(AlertSourceRegistry(), "runbook_register_alert_sources")  # type: ignore[no-any-return]

    @cached_property
    def notifiers(self) -> NotifierRegistry:
        """Notifiers (channel types) by name."""
        from runner.registry import NotifierRegistry

        return self._fill(NotifierRegistry(), "runbook_register_notifiers")  # type: ignore[no-any-return]

    @cached_property
    def template_filters(self) -> TemplateFilterRegistry:
        """Extra Jinja2 filters by name."""
        from runner.registry import TemplateFilterRegistry

        return self._fill(TemplateFilterRegistry(), "runbook_register_template_filters")  # type: ignore[no-any-return]

    @cached_property
    def runbook_sources(self) -> RunbookSourceRegistry:
        """Runbook directories shipped by plugins."""
        from runner.registry import RunbookSourceRegistry

        return self._fill(RunbookSourceRegistry(), "runbook_register_runbook_sources")  # type: ignore[no-any-return]

    def add_commands(self, cli: click.Group) -> None:
        """Let plugins add sub-commands to ``cli``; a plugin that fails here is named in the error."""
        from runner.errors import PluginError

        for impl in _plain_impls(self.pm.hook.runbook_add_commands, "runbook_add_commands"):
            try:
                impl.function(cli=cli)
            except Exception as exc:
                raise PluginError(f"plugin '{impl.plugin_name}' failed to add its commands: {type(exc).__name__}: {exc}") from exc

    def on_event(self, event: Event, run: RunRecord) -> None:
        """Tell observers about a committed event, through pluggy (``wrapper=True`` implementations wrap the call);
        a failure is logged and never affects the run."""
        if not self.has_observers:
            return
        try:
            self.pm.hook.runbook_on_event(event=event, run=run)
        except Exception:  # an observer's bug must not fail the operation
            import logging

            logging.getLogger("runbook.plugins").exception("a plugin failed in runbook_on_event (event %s of run %s)", event.type, run.id)

    @cached_property
    def has_observers(self) -> bool:
        """True if some plugin implements ``runbook_on_event`` (else events need not be built for it)."""
        return bool(self.pm.hook.runbook_on_event.get_hookimpls())

    def preflight_action(self, step_type: Any, config: Any, facts: Any) -> list[Any]:
        """Pre-flight one action through the ``runbook_preflight_action`` hook (its findings; none: ``[]``)."""
        return list(self.pm.hook.runbook_preflight_action(step_type=step_type, config=config, facts=facts) or [])

    def execute_action(self, step_type: Any, config: Any, ctx: Any) -> Any:
        """Run one action or probe through the (possibly wrapped) ``runbook_execute_action`` hook."""
        return self.pm.hook.runbook_execute_action(step_type=step_type, config=config, ctx=ctx)

    def describe(self) -> list[PluginInfo]:
        """Loaded plugins, what each contributes and where it comes from."""
        contributions: dict[str, dict[str, list[str]]] = {}
        for kind, registry in (
            ("step_types", self.step_types),
            ("stores", self.stores),
            ("secret_providers", self.secret_providers),
            ("alert_sources", self.alert_sources),
            ("notifiers", self.notifiers),
            ("template_filters", self.template_filters),
            ("runbook_sources", self.runbook_sources),
        ):
            for item_name, plugin_name in registry.contributors().items():
                contributions.setdefault(plugin_name, {}).setdefault(kind, []).append(item_name)
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            module = getattr(plugin, "__name__", type(plugin).__name__)
            location = getattr(plugin, "__file__", None) or "<object>"
            origin = _ORIGINS.get(id(plugin))
            dist_name = _distribution(origin) if origin else None
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [] if not h.name.startswith("runbook_register_"))
            contributes = dict(sorted(contributions.get(name, {}).items()))
            if hooks:
                contributes["hooks"] = hooks
            out.append(PluginInfo(name, module, str(location), dist_name, contributes))
        return sorted(out, key=lambda p: p.name)
