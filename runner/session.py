"""The one wiring of settings → plugins → catalog → store → engine, shared by every surface.

The CLI (:class:`runner.cli.app.AppState`), the Python API (:class:`runner.api.Client`), the server and the MCP
server each hold a :class:`Session`; its pieces are built on first use, and every engine it makes acts for the
session's principal under its (live) agent policy.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from runner.authority import LivePolicy, Principal

if TYPE_CHECKING:
    from runner.catalog import Catalog
    from runner.cursor import CommandHint
    from runner.engine import Engine
    from runner.plugin import PluginHost
    from runner.policy import Policy
    from runner.settings import Settings
    from runner.store.base import Store

__all__ = ["Session"]


class Session:
    """Settings, plugins, catalog, store and engines for one caller (a principal).

    :param settings: paths, store URL, inventory, known_hosts, actor, project directory.
    :param principal: who acts (default: a person, the settings' actor).
    :param policy: the agent policy: a file path (read again whenever it changes), a loaded :class:`Policy`, or None.
    :param cli_options: global CLI options that point a ``runbook`` command at the same runbooks and store
        (repeated in every ``next.command``).
    """

    def __init__(self, settings: Settings, *, host: PluginHost | None = None, principal: Principal | None = None,
                 policy: Policy | LivePolicy | str | os.PathLike[str] | None = None, holder_kind: str = "cli",
                 cli_options: list[str] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.principal = principal or Principal.person(settings.actor)
        self.policy: Policy | LivePolicy | None = LivePolicy(policy) if isinstance(policy, str | os.PathLike) else policy
        self.holder_kind = holder_kind
        self.cli_options = list(cli_options or [])
        self._host = host
        self.create_journal = True
        """False for commands that only read or steer existing runs: no journal is created (JournalNotFound)."""
        self._store: Store | None = None
        self._catalog: Catalog | None = None
        self._live_catalog = False

    @classmethod
    def of(cls, settings: Settings, host: PluginHost, store: Store, catalog: Catalog, **kw: Any) -> Session:
        """A session over pieces a long-running process already opened (the server: one store, one catalog)."""
        session = cls(settings, host=host, **kw)
        session._store, session._catalog = store, catalog
        return session

    @property
    def host(self) -> PluginHost:
        """The plugin host (plugins load on first use)."""
        if self._host is None:
            from runner.plugin import PluginHost

            self._host = PluginHost()
        return self._host

    @property
    def store(self) -> Store:
        """The journal store, opened on first use: created if new, unless :attr:`create_journal` is False
        (then :class:`~runner.errors.JournalNotFound` if there is none)."""
        if self._store is None:
            if not self.create_journal:
                self.check_journal()
            self._store = self.host.stores.open(self.settings.resolved_store_url())
        return self._store

    def check_journal(self) -> None:
        """Raise :class:`~runner.errors.JournalNotFound` unless the journal exists; creates nothing.

        The default journal (``.runbook/journal.db``) that is not there yet has simply not been used; an explicit
        store URL whose directory does not exist names that directory (the URL is probably wrong)."""
        from runner.errors import JournalNotFound
        from runner.registry import _safe_url

        if self.settings.store_url is None:
            default = self.settings.state_dir / "journal.db"
            if not default.is_file():
                raise JournalNotFound(str(default))
        elif not self.host.stores.exists(self.settings.store_url):
            raise JournalNotFound(_safe_url(self.settings.store_url))

    @property
    def catalog(self) -> Catalog:
        """The runbooks on the search path, loaded on first use (see :meth:`reload`)."""
        if self._catalog is None:
            from runner.catalog import Catalog, search_path

            dirs = search_path(self.settings.paths, self.host.runbook_sources.directories())
            if self._live_catalog:
                from runner.livecatalog import LiveCatalog

                self._catalog = LiveCatalog.watching(self.host.step_types, dirs)
            else:
                self._catalog = Catalog.load(self.host.step_types, dirs)
        return self._catalog

    def reload(self) -> None:
        """Read the runbooks again (after files were added or edited)."""
        self._catalog = None

    def watch_catalog(self) -> None:
        """From now on the catalog notices its runbook files changing by itself (a long-running process; see
        :class:`~runner.livecatalog.LiveCatalog`): one object, shared by every engine this session makes."""
        if not self._live_catalog:
            self._live_catalog, self._catalog = True, None

    def engine(self, hint: CommandHint | None = None, *, holder_kind: str | None = None) -> Engine:
        """A fresh engine over this session's store and catalog, acting for its principal; ``next`` spelled by ``hint``."""
        from runner.cursor import CommandHint
        from runner.engine import Engine

        engine = Engine(self.host, self.store, self.catalog, self.settings, holder_kind=holder_kind or self.holder_kind)
        engine.principal = self.principal
        engine.policy = self.policy
        engine.hint = hint or CommandHint(prefix=list(self.cli_options))
        return engine

    def close(self) -> None:
        """Close the journal store."""
        if self._store is not None:
            self._store.close()
            self._store = None
