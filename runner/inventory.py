"""Inventories: named hosts with connection details and variables, and groups of them.

Native format (YAML)::

    hosts:
      web1: {address: 10.0.0.11, port: 22, user: deploy, key: ~/.ssh/deploy_ed25519, vars: {role: web}}
      web2: {address: 10.0.0.12}
    groups:
      web: [web1, web2]

Targets of a fan-out step name hosts, groups (``group:web`` or just ``web``) or
plain addresses; without an inventory every name is its own address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from runner.errors import ConfigError, ValidationError

__all__ = ["HostEntry", "Inventory", "load_inventory"]


class HostEntry(BaseModel):
    """One host of an inventory."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)


class _InventoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hosts: dict[str, HostEntry | None] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)


@dataclass
class Inventory:
    """Hosts by name and groups of host names."""

    hosts: dict[str, HostEntry] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    source: str | None = None

    def host(self, name: str) -> dict[str, Any]:
        """Target dict for ``name``: name, address, port, user, key, known_hosts, vars."""
        entry = self.hosts.get(name) or HostEntry()
        return {"name": name, "address": entry.address or name, "port": entry.port, "user": entry.user, "key": entry.key,
                "known_hosts": entry.known_hosts, "vars": dict(entry.vars)}  # fmt: skip

    def members(self, group: str, _seen: frozenset[str] = frozenset()) -> list[str]:
        """Host names of ``group`` (groups may contain groups)."""
        if group in _seen:
            raise ConfigError(f"inventory {self.source}: group '{group}' contains itself")
        out: list[str] = []
        for item in self.groups[group]:
            for name in self.members(item, _seen | {group}) if item in self.groups else [item]:
                if name not in out:
                    out.append(name)
        return out

    def resolve(self, value: Any) -> list[dict[str, Any]]:
        """Targets for a ``targets:`` value: a name, ``group:NAME``, or a list of those."""
        items = value if isinstance(value, list) else [value]
        names: list[str] = []
        for item in items:
            if isinstance(item, dict) and "name" in item:
                item = item["name"]
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(f"targets: expected host or group names, got {item!r}")
            for part in (p.strip() for p in item.split(",") if p.strip()):
                group = part[6:] if part.startswith("group:") else part
                if group in self.groups:
                    found = self.members(group)
                elif part.startswith("group:"):
                    raise ConfigError(f"targets: no group '{group}' in inventory {self.source or '(none given; use --inventory)'}")
                else:
                    found = [part]
                names += [n for n in found if n not in names]
        return [self.host(n) for n in names]


def load_inventory(path: str | None) -> Inventory:
    """Load an inventory file (native YAML, or Ansible YAML/INI); an empty inventory for None."""
    if not path:
        return Inventory()
    from runner.inventory_formats import parse_inventory
    from runner.safeio import read_input_text

    file = Path(path).expanduser()
    text = read_input_text(file, what="inventory", refuse=ConfigError)
    return parse_inventory(text, str(file))


def native(data: dict[str, Any], source: str, located: Any = None) -> Inventory:
    """Build an :class:`Inventory` from the native YAML format's data."""
    try:
        parsed = _InventoryFile.model_validate(data)
    except PydanticValidationError as exc:
        from runner.yamlsafe import Located

        raise ValidationError((located or Located(data, source)).pydantic_problems((), exc)) from None
    hosts = {name: entry or HostEntry() for name, entry in parsed.hosts.items()}
    inv = Inventory(hosts, parsed.groups, source)
    for group in parsed.groups:
        for name in inv.members(group):
            if name not in hosts and name not in parsed.groups:
                hosts[name] = HostEntry()
    return inv
