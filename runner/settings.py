"""Resolved settings shared by the CLI, the engine, the server and plugins."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Settings", "find_project_dir", "hostname"]

STATE_DIR = ".runbook"


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest directory (from ``start`` upward) holding ``.runbook/``, else ``start`` itself."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / STATE_DIR).is_dir():
            return candidate
    return here


def hostname() -> str:
    """This machine's name, as ``socket.gethostname()`` gives it (without importing ``socket`` on POSIX)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def default_actor() -> str:
    """Who is acting: ``RUNBOOK_ACTOR`` or ``user@host``."""
    explicit = os.environ.get("RUNBOOK_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{hostname()}"


@dataclass
class Settings:
    """Options every component needs; built from CLI options and ``RUNBOOK_*`` variables."""

    paths: list[str] = field(default_factory=list)
    store_url: str | None = None
    inventory: str | None = None
    known_hosts: str | None = None
    actor: str = field(default_factory=default_actor)
    project_dir: Path = field(default_factory=find_project_dir)
    extra: dict[str, Any] = field(default_factory=dict)
    secret_allow: list[str] | None = None
    """The operator's default allow-list for secret params that declare no ``allow:`` (``RUNBOOK_SECRET_ALLOW``)."""

    def __post_init__(self) -> None:
        self.store_url = self.store_url or os.environ.get("RUNBOOK_STORE") or None
        self.inventory = self.inventory or os.environ.get("RUNBOOK_INVENTORY") or None
        self.known_hosts = self.known_hosts or os.environ.get("RUNBOOK_KNOWN_HOSTS") or None
        if self.secret_allow is None:
            from runner.secretrefs import ENV_SECRET_ALLOW, parse_allow_env

            try:
                self.secret_allow = parse_allow_env(os.environ.get(ENV_SECRET_ALLOW))
            except ValueError as exc:
                from runner.errors import ConfigError

                raise ConfigError(f"{ENV_SECRET_ALLOW}: {exc}") from None

    @property
    def state_dir(self) -> Path:
        """``<project>/.runbook``: the default journal lives here."""
        return self.project_dir / STATE_DIR

    def resolved_store_url(self) -> str:
        """The store URL to open: explicit, or SQLite under ``.runbook/``."""
        return self.store_url or f"sqlite:///{self.state_dir / 'journal.db'}"
