"""Commands a dead executor left running, found and stopped before its run is recovered.

Every local command a step starts (the ``shell`` step, ``ctx.shell`` in a Python step, a probe) leads a session
of its own and carries ``RUNBOOK_RUN_ID`` (and ``RUNBOOK_STEP_ID``) in its environment. When an executor dies
with ``kill -9`` its commands are not told: they go on, reparented to init. Were its run recovered at once, the
in-flight step's ``check`` would see the work unfinished and start the action a second time beside the first.

So recovery on the same host first looks, in ``/proc``, for processes whose environment names the run, takes the
sessions they lead or belong to (which also holds what they started with a cleaned environment, such as a
command under ``sudo``), and stops every process group of those sessions: ``SIGTERM``, then ``SIGKILL`` after a
grace period, waiting until they are gone. Linux only (``/proc``); elsewhere nothing is found. Processes of other
users cannot be read and are not touched, and a command that started a new session of its own (a daemon) has
left the run by choice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.store.records import NewEvent

__all__ = ["RUN_ENV", "STEP_ENV", "Leftover", "find", "stop", "stop_as_event"]

RUN_ENV = "RUNBOOK_RUN_ID"
STEP_ENV = "RUNBOOK_STEP_ID"


@dataclass(frozen=True, order=True)
class Leftover:
    """A process still running for a run: its pid, process group, session and executable name."""

    pid: int
    pgid: int
    sid: int
    name: str

    def as_json(self) -> dict[str, int | str]:
        """For the journal: no command line (it may hold values the run redacts)."""
        return {"pid": self.pid, "pgid": self.pgid, "name": self.name}


def _pids() -> list[int]:
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """(name, state, process group, session) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    name, rest = text[text.find("(") + 1 : text.rfind(")")], text[text.rfind(")") + 2 :].split()
    return name, rest[0], int(rest[2]), int(rest[3])


def _tagged(pid: int, tag: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return tag in f.read().split(b"\0")
    except OSError:  # gone, or another user's
        return False


def find(run_id: str) -> list[Leftover]:
    """Every live process in a session that a command of ``run_id`` leads or belongs to (never this process's)."""
    tag = f"{RUN_ENV}={run_id}".encode()
    me, own_session = os.getpid(), os.getsid(0)
    stats = {pid: st for pid in _pids() if pid != me and (st := _stat(pid)) is not None and st[1] not in ("Z", "X")}
    sessions = {st[3] for pid, st in stats.items() if st[3] != own_session and _tagged(pid, tag)}
    return sorted(Leftover(pid, st[2], st[3], st[0]) for pid, st in stats.items() if st[3] in sessions and pid != me)


def _alive(procs: Iterable[Leftover]) -> list[Leftover]:
    out = []
    for p in procs:
        st = _stat(p.pid)
        if st is not None and st[1] not in ("Z", "X") and st[3] == p.sid:
            out.append(p)
    return out


def _signal(procs: Iterable[Leftover], sig: int) -> None:
    for pgid in {p.pgid for p in procs}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def stop(run_id: str, *, grace: float = 5.0, timeout: float = 10.0) -> list[Leftover]:
    """Stop what :func:`find` finds (``SIGTERM``, ``SIGKILL`` after ``grace`` seconds); returns what was found.

    Returns once all of them are gone, or after ``timeout`` more seconds (a process in uninterruptible sleep)."""
    found = find(run_id)
    if not found:
        return []
    _signal(found, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = _alive(found)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = _alive(left)
    if left:
        _signal(left, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = _alive(left)
    return found


def stop_as_event(run_id: str) -> NewEvent | None:
    """:func:`stop`, and the ``run.leftovers_stopped`` event that records what it stopped (None if nothing)."""
    from runner.store.records import NewEvent

    stopped = stop(run_id)
    if not stopped:
        return None
    names = ", ".join(sorted({p.name for p in stopped}))
    return NewEvent("run.leftovers_stopped", data={
        "reason": f"stopped {len(stopped)} process(es) the previous executor left running ({names})",
        "processes": [p.as_json() for p in stopped]})  # fmt: skip
