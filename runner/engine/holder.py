"""This process's executor identity and a same-host liveness test.

A holder is (host, boot id, pid, process start time). On the same host and boot,
a holder is alive exactly when a process with that pid exists, is not a zombie,
and started at that time, so a pid reused by another program is not mistaken
for the executor and a ``kill -9`` is detected at once.
"""

from __future__ import annotations

import os
from functools import cache

from runner.settings import hostname
from runner.store.records import Holder

__all__ = ["current_holder", "is_alive"]


@cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid`` or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def current_holder(kind: str = "cli") -> Holder:
    """A new executor identity in this process (each engine gets its own ``token``)."""
    pid = os.getpid()
    stat = _stat(pid)
    return Holder(host=hostname(), boot_id=_boot_id(), pid=pid, start_time=stat[1] if stat else 0, kind=kind,
                  token=os.urandom(4).hex())  # fmt: skip


def is_alive(holder: Holder) -> bool | None:
    """True/False for a holder on this host; None (cannot tell) for another host."""
    me = current_holder()
    if not holder.same_host(me) or not holder.boot_id:
        return None
    if holder.pid == me.pid and holder.start_time == me.start_time:
        return True
    stat = _stat(holder.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return stat[1] == holder.start_time
