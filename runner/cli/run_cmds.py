"""Run commands (filled in with the engine)."""

from __future__ import annotations

COMMANDS: tuple[object, ...] = ()
