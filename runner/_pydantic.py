"""Start-up: skip pydantic's plugin discovery when no pydantic plugin is installed.

The first pydantic model a process builds asks ``pydantic.plugin._loader`` for
plugins, which imports :mod:`importlib.metadata` and reads every installed
distribution's metadata: about 15 ms of every ``runbook`` invocation, paid by
agents that call it in a loop. Whether any distribution declares the ``pydantic``
entry-point group is known from the ``entry_points.txt`` files the plugin
manager reads anyway; when none does, the answer is "no plugins", and a
stand-in module gives it without the scan. When one does, nothing is replaced
and pydantic loads its plugins as usual.

The stand-in answers ``get_plugins()`` only; any other name pydantic asks of the
module loads the real one and is answered from it, so a pydantic release that
uses more of its own module keeps working.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["skip_plugin_discovery"]

_LOADER = "pydantic.plugin._loader"


class _NoPydanticPlugins(types.ModuleType):
    """``pydantic.plugin._loader`` for an environment with no pydantic plugins installed."""

    def get_plugins(self) -> tuple[()]:
        """No plugins (no distribution declares the ``pydantic`` entry-point group)."""
        return ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # what the import system asks of any module (``__path__``: is it a package?)
            raise AttributeError(name)
        if sys.modules.get(_LOADER) is self:
            del sys.modules[_LOADER]
        return getattr(importlib.import_module(_LOADER), name)


def skip_plugin_discovery() -> bool:
    """Install the stand-in if pydantic has not looked for plugins yet and none is installed; True if installed."""
    if _LOADER in sys.modules:
        return isinstance(sys.modules[_LOADER], _NoPydanticPlugins)
    from runner.plugin import entry_points

    if entry_points("pydantic"):
        return False
    sys.modules[_LOADER] = _NoPydanticPlugins(_LOADER, __doc__)
    return True
