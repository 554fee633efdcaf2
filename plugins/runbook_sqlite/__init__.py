"""Built-in SQLite journal store: ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``.

The default store: ``.runbook/journal.db`` in the project directory, created on
first use, WAL mode.
"""

from __future__ import annotations

from runner.plugin import hookimpl
from runner.registry import StoreRegistry

__all__ = ["runbook_register_stores"]


def _open(url: str):  # type: ignore[no-untyped-def]
    from runbook_sqlite.store import SQLiteStore

    return SQLiteStore(url)


@hookimpl
def runbook_register_stores(registry: StoreRegistry) -> None:
    """Register the ``sqlite`` scheme."""
    registry.add("sqlite", _open)
