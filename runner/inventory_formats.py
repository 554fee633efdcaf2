"""Inventory file formats: native YAML (see :mod:`runner.inventory`)."""

from __future__ import annotations

from runner.errors import ConfigError
from runner.inventory import Inventory, native
from runner.yamlsafe import load_yaml

__all__ = ["parse_inventory"]


def parse_inventory(text: str, source: str) -> Inventory:
    """Parse the native YAML inventory format."""
    located = load_yaml(text, source)
    if not isinstance(located.data, dict):
        raise ConfigError(f"inventory {source}: expected a mapping with 'hosts' and 'groups'")
    return native(located.data, source, located)
