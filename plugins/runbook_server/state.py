"""Everything one server process shares: configuration checked against plugins and catalog, engines, pool.

:func:`build_state` performs the checks that need the plugins and the catalog (route runbooks and
sources exist, source auth settings fit the source, templates compile) and enforces the bind rule: a
non-loopback ``listen`` needs API tokens and auth on every enabled alert source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from runbook_server.auth import TokenBook, resolve_secret_fields
from runbook_server.config import is_loopback, load_tokens_file, pydantic_problems
from runbook_server.limits import Slots
from runbook_server.metrics import Metrics
from runbook_server.routing import Router
from runner.errors import ConfigError, Problem, ValidationError
from runner.secrets import Redactor, SecretResolver

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runbook_server.config import ServerConfig
    from runbook_server.scheduler import Scheduler
    from runbook_server.worker import WorkerPool
    from runner.alerts import AlertSource
    from runner.authority import LivePolicy
    from runner.catalog import Catalog
    from runner.engine import Engine
    from runner.plugin import PluginHost
    from runner.policy import Policy
    from runner.settings import Settings
    from runner.store.base import Store

__all__ = ["EnabledSource", "RunWatch", "ServerState", "build_state", "install_log_redaction"]


@dataclass
class EnabledSource:
    """An alert source served by this process, with its resolved auth settings (None: no auth)."""

    source: AlertSource
    auth: BaseModel | None


class RunWatch:
    """Wakes requests waiting for a run to change (fed by this process's engines).

    Waiting is asynchronous: a waiter parks an :class:`asyncio.Event` on its event loop and holds no
    thread, so waiting clients cannot starve the thread pool that serves ``/healthz`` and webhooks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self, *_args: Any) -> None:
        """Something happened (an engine observer; called from any thread)."""
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(event.set)

    async def changed(self, timeout: float) -> None:
        """Return after a change or ``timeout`` seconds (runs executed elsewhere are noticed by polling)."""
        item = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(item)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(item[1].wait(), timeout)
        finally:
            with self._lock:
                self._waiters.discard(item)


@dataclass
class ServerState:
    """Shared by the HTTP handlers, the intake and the workers of one process."""

    host: PluginHost
    settings: Settings
    store: Store
    catalog: Catalog
    config: ServerConfig
    listen: tuple[str, int]
    tokens: TokenBook
    sources: dict[str, EnabledSource]
    router: Router
    redactor: Redactor
    api_engine: Engine
    agent_engine: Engine
    live_policy: LivePolicy | None = None
    """The agent policy file for ``agent``-scoped tokens, read again whenever it changes."""
    metrics: Metrics = field(default_factory=Metrics)
    watch: RunWatch = field(default_factory=RunWatch)
    pool: WorkerPool | None = None
    scheduler: Scheduler | None = None
    """Fires the config's ``schedules`` (None without any)."""
    shutdown: threading.Event = field(default_factory=threading.Event)
    control_lock: threading.Lock = field(default_factory=threading.Lock)
    waiters: Slots = field(init=False)
    """Requests waiting for a run to settle (``wait`` in POST /v1/runs and /resume)."""
    streams: Slots = field(init=False)
    """Open Server-Sent Events streams."""

    def __post_init__(self) -> None:
        limits = self.config.limits
        self.waiters = Slots(limits.max_waiters, "waiting requests (limits.max_waiters)")
        self.streams = Slots(limits.max_streams, "event streams (limits.max_streams)")
        for engine in (self.api_engine, self.agent_engine):
            self._equip(engine)

    @property
    def policy(self) -> Policy | None:
        """The agent policy as its file says now (None: no file; agents act under :func:`runner.policy.default_policy`)."""
        return self.live_policy.current() if self.live_policy is not None else None

    def _equip(self, engine: Engine) -> None:
        """Every engine of the server masks the server's own credentials in its runs and wakes waiters."""
        engine.extra_secrets = self.redactor.secrets
        engine.observers.append(self.watch.notify)

    def make_engine(self, kind: str) -> Engine:
        """A new engine over the shared store and catalog (one per worker thread), acting as a worker."""
        from runner.authority import Principal
        from runner.session import Session

        session = Session.of(self.settings, self.host, self.store, self.catalog, principal=Principal("worker", f"{kind}@{self.listen[0]}"),
                             policy=self.live_policy, holder_kind=kind)  # fmt: skip
        engine = session.engine()
        engine.observers.append(self.metrics.observe)
        self._equip(engine)
        return engine

    def wake_workers(self) -> None:
        """A run was queued or woken."""
        if self.pool is not None:
            self.pool.wake()


def build_state(host: PluginHost, settings: Settings, store: Store, catalog: Catalog, config: ServerConfig,
                listen: tuple[str, int]) -> ServerState:  # fmt: skip
    """Check ``config`` against the plugins and the catalog and build the server's shared state."""
    from runner.engine import CommandHint
    from runner.session import Session

    redactor = Redactor()
    resolver = SecretResolver(host.secret_providers, redactor)
    specs = list(config.tokens)
    if config.tokens_file:
        specs += load_tokens_file(config.tokens_file, config.file)
    tokens = TokenBook.from_specs(specs, resolver)
    sources = _sources(host, config, resolver)
    _check_routes(config, catalog, host)
    _check_bind(config, listen, tokens, sources)
    from runner.authority import LivePolicy
    from runner.policy import ENV_VAR

    if config.secret_allow is not None:  # the operator's default allow-list for every engine of this process
        settings.secret_allow = list(config.secret_allow)
    chosen = config.agent_policy or os.environ.get(ENV_VAR) or None
    policy = LivePolicy(chosen) if chosen else None
    if policy is not None:
        policy.current()  # a missing or broken policy file stops the server at start, not at the first agent request
    session = Session.of(settings, host, store, catalog, policy=policy, holder_kind="api")
    engine = session.engine(CommandHint())
    agent_engine = session.engine(CommandHint())  # the same store and policy; each request names its principal
    _forget_environment(resolver)
    return ServerState(host, settings, store, catalog, config, listen, tokens, sources, Router(config.routes, config.file),
                       redactor, engine, agent_engine, policy)  # fmt: skip


def _forget_environment(resolver: SecretResolver) -> None:
    """Remove the variables the configuration's ``env:`` references read, so no step's process inherits them
    nor reads them in ``/proc/<server pid>/environ`` (:mod:`runbook_server.scrub`).

    The values stay known to the redactor (every run of the server masks them); they are needed only once.
    """
    from runbook_server.scrub import forget_environment

    left = forget_environment(resolver.env_names)
    if left:
        logging.getLogger("runbook.server").warning("could not scrub %s from this process's original environment", ", ".join(left))


def _sources(host: PluginHost, config: ServerConfig, resolver: SecretResolver) -> dict[str, EnabledSource]:
    registered = host.alert_sources
    if config.sources is None:
        return {name: EnabledSource(src, None) for name, src in registered.items()}
    out, problems = {}, []
    for name, spec in config.sources.items():
        if name not in registered:
            problems.append(config.problem(("sources", name), f"no alert source named '{name}'; known: {', '.join(registered.names())}"))
            continue
        src = registered.get(name)
        auth = None
        if spec.auth is not None:
            try:
                auth = src.Auth.model_validate(spec.auth)
            except PydanticValidationError as exc:
                problems += pydantic_problems(getattr(config, "_located", None), ("sources", name, "auth"), exc)
                continue
            auth = resolve_secret_fields(auth, src.secret_fields, resolver, where=f"sources.{name}.auth")
        out[name] = EnabledSource(src, auth)
    if problems:
        raise ValidationError(problems)
    return out


def _check_routes(config: ServerConfig, catalog: Catalog, host: PluginHost) -> None:
    from runner.templating import Renderer

    renderer = Renderer(dict(host.template_filters.items()))
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, route in enumerate(config.routes):
        if route.name in seen:
            problems.append(config.problem(("routes", i, "name"), f"route name '{route.name}' is used twice"))
        seen.add(route.name)
        if route.runbook not in catalog.runbooks:
            problems.append(config.problem(("routes", i, "runbook"), f"no runbook named '{route.runbook}' in the catalog", value=True))
        if route.source is not None and route.source not in host.alert_sources:
            problems.append(config.problem(("routes", i, "source"), f"no alert source named '{route.source}'", value=True))
        for key, text in [*_strings(route.params, "params"), ("dedupe", route.dedupe)]:
            error = renderer.check_syntax(text) if isinstance(text, str) else None
            if error:
                problems.append(config.problem(("routes", i, *key.split(".")), error, value=True))
    if problems:
        raise ValidationError(problems)


def _strings(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _strings(v, f"{path}.{k}")]
    return [(path, value)] if isinstance(value, str) else []


def _check_bind(config: ServerConfig, listen: tuple[str, int], tokens: TokenBook, sources: dict[str, EnabledSource]) -> None:
    host = listen[0]
    if is_loopback(host):
        return
    missing = [] if tokens.enabled else ["API tokens (tokens: or tokens_file:)"]
    missing += [f"auth for alert source '{n}'" for n, s in sorted(sources.items()) if s.auth is None]
    if missing:
        raise ConfigError(
            f"refusing to listen on {host} (not loopback) without authentication: configure {', '.join(missing)}",
            hint=f"in {config.file}, or listen on 127.0.0.1 behind a proxy that authenticates",
        )


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            record.msg = self.redactor.text(record.getMessage())
            record.args = None
        return True


def install_log_redaction(redactor: Redactor) -> None:
    """Mask every configured secret in log lines (ours, uvicorn's) before any handler writes them."""
    flt = _RedactingFilter(redactor)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(flt)
