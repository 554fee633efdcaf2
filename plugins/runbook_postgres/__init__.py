"""Built-in PostgreSQL journal store: ``postgresql://user@host:5432/db?schema=runbook``.

For many workers on many hosts sharing one journal (``runbook worker --store postgresql://...`` on
each): claims use ``SELECT ... FOR UPDATE SKIP LOCKED``, every executor write is fenced by its lease
token in the same transaction, and times come from the database's clock so hosts agree on when a
lease expired. Needs the ``postgres`` extra (psycopg 3); see ``docs/postgres.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.plugin import hookimpl

if TYPE_CHECKING:
    from runner.registry import StoreRegistry
    from runner.store.base import Store

__all__ = ["runbook_register_stores"]


def _open(url: str) -> Store:
    """Open the store, importing psycopg only now (``runbook --help`` must not pay for it)."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        from runner.errors import MissingExtra

        raise MissingExtra("the PostgreSQL store", "postgres", "psycopg") from exc
    from runbook_postgres.store import PostgresStore

    return PostgresStore(url)


@hookimpl
def runbook_register_stores(registry: StoreRegistry) -> None:
    """Register the ``postgresql`` scheme (the registry maps ``postgres://`` to it too)."""
    registry.add("postgresql", _open)
