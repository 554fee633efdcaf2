"""Where an ``ssh`` step connects: its config, the inventory entry or fan-out target, then defaults."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.errors import StepFailed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runbook_ssh.step import SSHConfig
    from runner.context import Context
    from runner.settings import Settings

__all__ = ["Endpoint", "endpoint_for", "resolve_endpoint"]

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class Endpoint:
    """A resolved SSH destination with everything needed to connect and verify it."""

    name: str
    address: str
    port: int
    user: str
    key: str | None
    known_hosts: str
    agent: bool

    @property
    def label(self) -> str:
        """How messages name the host: ``web1 (10.0.0.11:22)``, or ``10.0.0.11:2222`` when no inventory name."""
        where = f"{self.address}:{self.port}"
        return where if self.name in (self.address, where) else f"{self.name} ({where})"

    @property
    def pool_key(self) -> str:
        """Connections are shared by steps with the same key: ``ssh:user@host:port`` plus key, known_hosts, agent."""
        return f"ssh:{self.user}@{self.address}:{self.port}|key={self.key or ''}|known_hosts={self.known_hosts}|agent={self.agent}"


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _lookup(config: SSHConfig, target: Mapping[str, Any] | None, inventory: str | None, step_id: str) -> dict[str, Any]:
    """The inventory entry (or fan-out target) the step refers to."""
    if config.host:
        if target is not None and config.host in (target.get("name"), target.get("address")):
            return dict(target)
        if inventory:
            from runner.inventory import load_inventory

            hosts = load_inventory(inventory)
            if config.host in hosts.hosts:
                return hosts.host(config.host)
        return {"name": config.host, "address": config.host}
    if target is not None:
        return dict(target)
    raise StepFailed(f"step '{step_id}': ssh needs a 'host' (or a fan-out over 'targets', which sets the host per target)")


def resolve_endpoint(config: SSHConfig, ctx: Context) -> Endpoint:
    """Explicit config wins over the inventory entry or target, which wins over defaults."""
    return endpoint_for(config, ctx.target, ctx.settings, ctx.step_id)


def endpoint_for(config: SSHConfig, target: Mapping[str, Any] | None, settings: Settings, step_id: str) -> Endpoint:
    """:func:`resolve_endpoint` from its parts (pre-flight has no context)."""
    entry = _lookup(config, target, settings.inventory, step_id)
    address = entry.get("address") or entry["name"]
    known_hosts = config.known_hosts or entry.get("known_hosts") or settings.known_hosts or DEFAULT_KNOWN_HOSTS
    key = config.key or entry.get("key")
    return Endpoint(
        name=str(entry.get("name") or address),
        address=str(address),
        port=int(config.port or entry.get("port") or 22),
        user=str(config.user or entry.get("user") or _default_user()),
        key=os.path.expanduser(key) if key else None,
        known_hosts=os.path.expanduser(known_hosts),
        agent=config.agent,
    )
