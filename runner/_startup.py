"""Garbage collection around the command line's start-up.

Starting ``runbook`` (imports, plugins, pydantic models, the catalog) allocates tens of thousands of objects that
live as long as the process. CPython's default threshold for young-generation collections (700 allocations)
makes it collect about 70 times over them while they are built, some 8 ms of every command, freeing almost
nothing. So :func:`deferred` raises that threshold while the command line starts, and :func:`settle`, called
where a command begins its real work (driving a run, serving, following events), moves what start-up built
into the permanent generation (``gc.freeze()``: no later full collection walks it again) and puts the
thresholds back. A command that never calls :func:`settle` still collects, only less often, until
:func:`deferred` ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["deferred", "settle"]

STARTUP_THRESHOLD = 100_000
_restore: list[tuple[int, int, int]] = []  # thresholds to put back, innermost last


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Collect the young generation only every :data:`STARTUP_THRESHOLD` allocations until :func:`settle` or the end."""
    saved = gc.get_threshold()
    if saved[0] == 0:  # collection switched off by threshold: leave it so
        yield
        return
    _restore.append(saved)
    gc.set_threshold(max(saved[0], STARTUP_THRESHOLD), saved[1], saved[2])
    try:
        yield
    finally:
        _restore.remove(saved)
        gc.set_threshold(*saved)


def settle() -> None:
    """Start-up is over: freeze what it built and collect at the usual thresholds again."""
    gc.freeze()
    if _restore:
        gc.set_threshold(*_restore[-1])
