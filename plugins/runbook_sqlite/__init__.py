"""Built-in SQLite journal store: ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``.

The default store: ``.runbook/journal.db`` in the project directory, created on
first use, WAL mode. Commands that only read runs never create it (:func:`_exists`).
"""

from __future__ import annotations

from runner.plugin import hookimpl
from runner.registry import StoreRegistry

__all__ = ["runbook_register_stores"]


def _open(url: str):  # type: ignore[no-untyped-def]
    from runbook_sqlite.store import SQLiteStore

    return SQLiteStore(url)


def _exists(url: str) -> bool:
    """Whether the journal file of ``url`` exists; JournalNotFound when its directory does not (nothing is created)."""
    import os

    from runbook_sqlite.store import _path_from_url
    from runner.errors import JournalNotFound

    path, _options = _path_from_url(url)
    if path == ":memory:":
        return True  # opening it creates nothing on disk
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise JournalNotFound(os.path.abspath(path), missing_dir=directory)
    return os.path.isfile(path)


@hookimpl
def runbook_register_stores(registry: StoreRegistry) -> None:
    """Register the ``sqlite`` scheme."""
    registry.add("sqlite", _open, exists=_exists)
