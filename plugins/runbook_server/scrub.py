"""Keeping the server's own credentials away from the steps it runs.

``runbook serve`` reads its API tokens and webhook secrets once, through ``env:`` references. Removing the
variables with ``os.environ.pop`` stops children from inheriting them, but ``/proc/<server pid>/environ`` shows
the block the process was started with, which a step (a child, same user) can read. So the values are also
overwritten in that block (:func:`scrub_environ`), and the process is marked non-dumpable, which makes its
``/proc`` files (``environ``, ``mem``) readable by root only and refuses ``ptrace`` from the steps' user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterable

__all__ = ["forget_environment", "scrub_environ"]

_PR_SET_DUMPABLE = 4


def forget_environment(names: Iterable[str]) -> list[str]:
    """Remove ``names`` from the environment, the process's original block included; the names still found after."""
    names = sorted(set(names))
    for name in names:
        os.environ.pop(name, None)
    if not names or not sys.platform.startswith("linux"):
        return []
    scrub_environ(names)
    _not_dumpable()
    return _still_visible(names)


def scrub_environ(names: Iterable[str]) -> None:
    """Overwrite the values of ``names`` in the block ``/proc/self/environ`` shows (Linux: ``env_start..env_end``)."""
    start, end = _env_bounds()
    if not start or end <= start:
        return
    wanted = {n.encode() + b"=" for n in names}
    block = ctypes.string_at(start, end - start)
    offset = 0
    for entry in block.split(b"\0"):
        key, sep, _value = entry.partition(b"=")
        if sep and key + b"=" in wanted:
            at = start + offset + len(key) + 1
            ctypes.memset(at, ord("x"), len(entry) - len(key) - 1)  # same length: the block's layout is unchanged
        offset += len(entry) + 1


def _env_bounds() -> tuple[int, int]:
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return 0, 0
    fields = text[text.rfind(")") + 2 :].split()
    try:  # fields 50 and 51 of stat(5); numbered from 3 after the command name
        return int(fields[47]), int(fields[48])
    except (IndexError, ValueError):
        return 0, 0


def _not_dumpable() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _still_visible(names: list[str]) -> list[str]:
    try:
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
    except OSError:
        return []
    left = []
    for entry in block.split(b"\0"):
        key, _, value = entry.partition(b"=")
        name = key.decode(errors="replace")
        if name in names and value.strip(b"x"):
            left.append(name)
    return left
