"""Root command group and the lazily built objects commands share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runner._startup import settle as settle_startup
from runner._version import __version__

if TYPE_CHECKING:
    from runner.catalog import Catalog
    from runner.engine import Engine
    from runner.plugin import PluginHost
    from runner.session import Session
    from runner.settings import Settings
    from runner.store.base import Store

__all__ = ["AppState", "build_cli", "existing_journal", "json_option", "pass_state", "settle_startup"]


class AppState:
    """What every command may need, through one :class:`~runner.session.Session`; each piece is built on first use."""

    def __init__(self, host: PluginHost, *, paths: tuple[str, ...], store: str | None, inventory: str | None,
                 known_hosts: str | None, debug: bool, json_output: bool) -> None:  # fmt: skip
        self.host, self.debug, self.json = host, debug, json_output
        self.quiet = False
        self.create_journal = True  # False: the command reads or steers existing runs (see existing_journal)
        self._paths = list(paths)
        self._options: dict[str, str | None] = {"store_url": store, "inventory": inventory, "known_hosts": known_hosts}

    @cached_property
    def settings(self) -> Settings:
        """Settings from global options and ``RUNBOOK_*`` variables."""
        from runner.settings import Settings

        return Settings(paths=self._paths, **self._options)  # type: ignore[arg-type]

    @cached_property
    def session(self) -> Session:
        """The wiring of this command: a person at the CLI unless the command says otherwise (``as_agent``)."""
        from runner.session import Session

        session = Session(self.settings, host=self.host, cli_options=self.cli_prefix())
        session.create_journal = self.create_journal
        return session

    def as_agent(self, policy_file: str | None, actor: str | None = None) -> None:
        """Act as an agent under the agent policy (``--policy`` or ``RUNBOOK_AGENT_POLICY``, read again if it changes)."""
        import os

        from runner.authority import LivePolicy, Principal
        from runner.policy import ENV_VAR

        self.session.principal = Principal.agent(actor or self.settings.actor)
        chosen = policy_file or os.environ.get(ENV_VAR) or None
        self.session.policy = LivePolicy(chosen) if chosen else None

    @property
    def catalog(self) -> Catalog:
        """The runbooks on the search path."""
        return self.session.catalog

    @property
    def store(self) -> Store:
        """The journal store (opened, and created if new)."""
        return self.session.store

    @cached_property
    def engine(self) -> Engine:
        """The engine over the store and catalog."""
        return self.session.engine()

    def cli_prefix(self) -> list[str]:
        """Global options to repeat in a ``next.command`` so it runs against the same runbooks and store.

        Paths are made absolute (a relative SQLite URL too), so the command works from any directory."""
        import os

        out: list[str] = []
        for path in self._paths:
            out += ["--path", os.path.abspath(path)]
        store = self._options["store_url"]
        if store:
            scheme, sep, rest = store.partition(":///")
            if scheme == "sqlite" and sep and not rest.startswith("/") and rest not in ("", ":memory:"):
                store = f"sqlite:///{os.path.abspath(rest)}"
            out += ["--store", store]
        for key in ("inventory", "known_hosts"):
            if self._options[key]:
                out += [f"--{key.replace('_', '-')}", os.path.abspath(str(self._options[key]))]
        return out


pass_state = click.make_pass_decorator(AppState)

F = TypeVar("F", bound=Callable[..., Any])


def existing_journal(fn: F) -> F:
    """Mark a command (below ``@pass_state``) that reads or steers runs already journaled: it never creates a
    journal; where there is none it fails with :class:`~runner.errors.JournalNotFound` (exit 2)."""

    @functools.wraps(fn)
    def wrapper(state: AppState, *args: Any, **kwargs: Any) -> Any:
        state.create_journal = False
        return fn(state, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def json_option(fn: Any) -> Any:
    """``--json``: print one JSON document on stdout and nothing else."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value and ctx.find_object(AppState) is not None:
            ctx.find_object(AppState).json = True  # type: ignore[union-attr]
        return value

    return click.option("--json", "json_output", is_flag=True, expose_value=False, callback=set_json, is_eager=True,
                        help="Print one JSON document (the documented shape) and nothing else on stdout.")(fn)  # fmt: skip


class _Group(click.Group):
    host: PluginHost
    """The plugins of this invocation (shell completion, which runs no group callback, reads them here)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # keep the documented order, not alphabetical


def build_cli() -> click.Group:
    """The root group with the core's commands and every plugin's."""
    from runner.cli import catalog_cmds, control_cmds, init_cmd, inspect_cmds, journal_cmds, run_cmds, test_cmd
    from runner.plugin import PluginHost

    host = PluginHost()

    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.version_option(__version__, "--version", prog_name="runbook", message="%(prog)s %(version)s")
    @click.option(
        "--path", "paths", multiple=True, metavar="DIR|FILE", help="Where runbooks are (repeatable; default ./runbooks or RUNBOOK_PATH)."
    )
    @click.option("--store", metavar="URL", help="Journal store URL (default: sqlite under .runbook/; env RUNBOOK_STORE).")
    @click.option("--inventory", metavar="FILE", help="Inventory of hosts and groups (env RUNBOOK_INVENTORY).")
    @click.option("--known-hosts", metavar="FILE", help="known_hosts file for SSH (env RUNBOOK_KNOWN_HOSTS).")
    @click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
    @click.option("--json", "json_output", is_flag=True, help="Machine output for every command (same as the command's --json).")
    @click.pass_context
    def cli(ctx: click.Context, paths: tuple[str, ...], store: str | None, inventory: str | None,
            known_hosts: str | None, debug: bool, json_output: bool) -> None:  # fmt: skip
        """Executable runbooks: typed, idempotent steps, run durably.

        Exit codes: 0 succeeded, 1 failed, 2 usage or validation error, 3 paused or budget
        reached, 4 waiting (approval, wait step, decision), 5 cancelled, 6 conflict,
        130 interrupted.
        """
        ctx.obj = AppState(host, paths=paths, store=store, inventory=inventory, known_hosts=known_hosts,
                           debug=debug, json_output=json_output)  # fmt: skip

    for command in (
        *init_cmd.COMMANDS,
        *catalog_cmds.COMMANDS,
        *run_cmds.COMMANDS,
        *control_cmds.COMMANDS,
        *inspect_cmds.COMMANDS,
        *test_cmd.COMMANDS,
        *journal_cmds.COMMANDS,
    ):
        cli.add_command(command)
    host.add_commands(cli)
    cli.host = host
    return cli
