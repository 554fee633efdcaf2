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
import threading
from collections.abc import Iterator

__all__ = ["deferred", "settle"]

STARTUP_THRESHOLD = 100_000

_lock = threading.Lock()
_depth = 0  # :func:`deferred` blocks active (threads may overlap: each restores nothing until the last ends)
_original: tuple[int, int, int] | None = None  # the thresholds before the first of them


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Collect the young generation only every :data:`STARTUP_THRESHOLD` allocations until :func:`settle` or the end."""
    global _depth, _original
    with _lock:
        if _depth == 0:
            _original = gc.get_threshold()
            if _original[0] != 0:  # 0: collection switched off by threshold, left so
                gc.set_threshold(max(_original[0], STARTUP_THRESHOLD), _original[1], _original[2])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _original is not None:
                gc.set_threshold(*_original)
                _original = None


def settle() -> None:
    """Start-up is over: freeze what it built and collect at the usual thresholds again.

    Cyclic garbage alive at this moment is frozen with the rest (a collection first would walk everything
    start-up built, the cost this module avoids); for a command line that runs once per process that is the
    few hundred KiB start-up left behind."""
    gc.freeze()
    with _lock:
        if _original is not None:
            gc.set_threshold(*_original)
