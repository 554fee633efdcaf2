"""A catalog for a long-running process (``runbook serve``, ``runbook worker``): it notices runbook files being
added, edited or removed, without a restart.

Whoever reads the catalog (a request, a worker's engine, the MCP watcher) triggers the check, at most once every
:attr:`LiveCatalog.every` seconds: one ``stat`` per file and directory under the search path
(:func:`files_stamp`). Only when that stamp changed is the catalog loaded again, which is cheap too: the compile
cache's per-folder index knows every unchanged YAML file by its ``stat`` and does not even read it
(:mod:`runner.catalog`). The new contents replace the old in place, so every engine holding this object sees them;
:attr:`LiveCatalog.generation` counts the reloads (the MCP server sends ``tools/list_changed`` when it moves).

A Python runbook file is imported once per process: a new one is found, an edit to a loaded one needs a restart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner.catalog import Catalog

if TYPE_CHECKING:
    from runner._entries import RunbookSummary
    from runner.catalog import LoadedRunbook
    from runner.registry import StepTypeRegistry

__all__ = ["CHECK_EVERY", "LiveCatalog", "files_stamp"]

CHECK_EVERY = 1.0
"""Seconds between two looks at the runbook files (a change is seen by the first use after it, within this)."""

Stamp = tuple[tuple[str, int, int], ...]


def files_stamp(paths: Iterable[str | os.PathLike[str]]) -> Stamp:
    """(path, mtime_ns, size) of every file and directory under ``paths`` (hidden directories skipped; a missing
    path counts as missing): it changes when a file is added, removed, renamed or written."""
    out: list[tuple[str, int, int]] = []
    for root in paths:
        root = os.fspath(root)
        for dirpath, dirnames, filenames in os.walk(root) if os.path.isdir(root) else [("", [], [root])]:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in [".", *sorted(filenames)] if dirpath else filenames:
                path = os.path.join(dirpath, name) if dirpath else name
                try:
                    st = os.stat(path)
                except OSError:
                    out.append((path, -1, -1))
                    continue
                out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)


class LiveCatalog(Catalog):
    """A :class:`~runner.catalog.Catalog` that loads itself again when its files change (see the module's doc).

    Build it with :meth:`watching`; reads (:meth:`get`, :meth:`names`, ``in``, :meth:`summaries`, iteration) look at
    the files first, at most every :attr:`every` seconds; :meth:`refresh` looks now.
    """

    every: float = CHECK_EVERY
    generation: int = 0
    """How many times the catalog was loaded again (it moves only when the files changed)."""

    _registry: StepTypeRegistry | None = None
    _paths: tuple[Path, ...] = ()
    _stamp: Stamp = ()
    _checked: float = 0.0
    _lock: threading.Lock | None = None

    @classmethod
    def watching(cls, registry: StepTypeRegistry, paths: Sequence[Path], *, every: float = CHECK_EVERY) -> LiveCatalog:
        """The runbooks under ``paths``, loaded now and again whenever their files change."""
        stamp = files_stamp(paths)  # taken first: a change made while loading is seen by the next check
        catalog = cls.load(registry, paths)
        assert isinstance(catalog, LiveCatalog)
        catalog._registry, catalog._paths, catalog._stamp = registry, tuple(paths), stamp
        catalog._checked, catalog._lock, catalog.every = time.monotonic(), threading.Lock(), every
        return catalog

    def refresh(self, *, now: bool = True) -> bool:
        """Load the runbooks again if their files changed; True if they were. ``now=False`` looks only if the last
        look is :attr:`every` seconds old, and never waits for another thread that is looking."""
        if self._lock is None or self._registry is None:
            return False
        if not now and time.monotonic() - self._checked < self.every:
            return False
        if not self._lock.acquire(blocking=now):
            return False
        try:
            self._checked = time.monotonic()
            stamp = files_stamp(self._paths)
            if stamp == self._stamp:
                return False
            fresh = Catalog.load(self._registry, self._paths)
            # One assignment per attribute: a reader in another thread sees the old catalog or the new one.
            self._entries, self.problems, self.files = fresh._entries, fresh.problems, fresh.files
            self.invalid, self.partial = fresh.invalid, fresh.partial
            self._stamp = stamp
            self.generation += 1
            return True
        finally:
            self._lock.release()

    def get(self, name: str) -> LoadedRunbook:
        """The runbook called ``name`` as its file says now (see :meth:`Catalog.get`)."""
        self.refresh(now=False)
        return super().get(name)

    def names(self) -> list[str]:
        """Every runbook's name, sorted, as the files say now."""
        self.refresh(now=False)
        return super().names()

    def __contains__(self, name: object) -> bool:
        self.refresh(now=False)
        return super().__contains__(name)

    def summaries(self) -> list[RunbookSummary]:
        """Every runbook's summary, as the files say now."""
        self.refresh(now=False)
        entries = self._entries  # one generation throughout, whatever another thread reloads meanwhile
        return [entries[name].summary() for name in sorted(entries)]

    def load_all(self) -> list[LoadedRunbook]:
        """Every runbook that loads, decoded, as the files say now (one removed meanwhile is left out)."""
        from runner.errors import RunbookNotFound, ValidationError

        out = []
        for name in self.names():
            try:
                out.append(super().get(name))
            except (ValidationError, RunbookNotFound):
                continue
        return out
