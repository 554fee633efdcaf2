"""Commands a dead executor left running, found and stopped before its run is recovered.

Every local command a step starts (the ``shell`` step, ``ctx.shell`` in a Python step, a probe) leads a session
of its own and carries ``RUNBOOK_RUN_ID`` (and ``RUNBOOK_STEP_ID``) in its environment. When an executor dies
with ``kill -9`` its commands are not told: they go on, reparented to init. Were its run recovered at once, the
in-flight step's ``check`` would see the work unfinished and start the action a second time beside the first.

So recovery on the same host first looks, in ``/proc``, for the sessions a step of the run that was in flight
started: sessions whose leader's environment names the run and that step (a process's ``/proc/PID/environ`` is
what it was started with, so a shell that only exported the names later does not count). Every process group of
those sessions is stopped, which also takes what the command started with a cleaned environment (a command under
``sudo``): ``SIGTERM``, then ``SIGKILL`` after a grace period, waiting until they are gone. A process is signalled
only while its start time is still the one first seen, so a reused pid is never hit. Sessions started by steps
that had finished (a daemon a step left behind on purpose) are not touched, nor are other users' processes.
Linux only (``/proc``); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.store.records import NewEvent

__all__ = ["RUN_ENV", "STEP_ENV", "Leftover", "find", "stop", "stop_as_event"]

RUN_ENV = "RUNBOOK_RUN_ID"
STEP_ENV = "RUNBOOK_STEP_ID"


@dataclass(frozen=True, order=True)
class Leftover:
    """A process still running for a run: its pid, process group, session, executable name and start time."""

    pid: int
    pgid: int
    sid: int
    name: str
    started: int = 0  # clock ticks after boot: tells this process from a later one given the same pid

    def as_json(self) -> dict[str, int | str]:
        """For the journal: no command line (it may hold values the run redacts)."""
        return {"pid": self.pid, "pgid": self.pgid, "name": self.name}


def _pids() -> list[int]:
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> tuple[str, str, int, int, int] | None:
    """(name, state, process group, session, start time) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    name, rest = text[text.find("(") + 1 : text.rfind(")")], text[text.rfind(")") + 2 :].split()
    return name, rest[0], int(rest[2]), int(rest[3]), int(rest[19])


def _environ(pid: int) -> set[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return set(f.read().split(b"\0"))
    except OSError:  # gone, or another user's
        return set()


def find(run_id: str, steps: Collection[str] | None = None) -> list[Leftover]:
    """Every live process of a session led by a command of ``run_id`` (of one of ``steps``, if given).

    Never this process or its own session."""
    run_tag = f"{RUN_ENV}={run_id}".encode()
    step_tags = None if steps is None else {f"{STEP_ENV}={s}".encode() for s in steps}
    me, own_session = os.getpid(), os.getsid(0)
    stats = {pid: st for pid in _pids() if pid != me and (st := _stat(pid)) is not None and st[1] not in ("Z", "X")}
    sessions = set()
    for pid, st in stats.items():
        if st[3] == pid and pid != own_session:  # a session leader: what a step's command is when it starts
            env = _environ(pid)
            if run_tag in env and (step_tags is None or env & step_tags):
                sessions.add(pid)
    return sorted(Leftover(pid, st[2], st[3], st[0], st[4]) for pid, st in stats.items() if st[3] in sessions)


def _alive(procs: Iterable[Leftover]) -> list[Leftover]:
    """Those of ``procs`` still running as the very process first seen (same session, same start time)."""
    out = []
    for p in procs:
        st = _stat(p.pid)
        if st is not None and st[1] not in ("Z", "X") and st[3] == p.sid and st[4] == p.started:
            out.append(p)
    return out


def _signal(procs: Iterable[Leftover], sig: int) -> None:
    # each process by pid, after checking it is still the one found: a group id or pid may be reused meanwhile
    for p in _alive(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, sig)


def stop(run_id: str, steps: Collection[str] | None = None, *, grace: float = 5.0, timeout: float = 10.0,
         tick: Callable[[], None] | None = None) -> tuple[list[Leftover], list[Leftover]]:  # fmt: skip
    """Stop what :func:`find` finds (``SIGTERM``, ``SIGKILL`` after ``grace`` seconds): (found, still running).

    Waits until all of them are gone, or ``timeout`` more seconds (a process in uninterruptible sleep survives
    even ``SIGKILL`` for a while); ``tick`` is called while waiting (a lease renewal)."""
    found = find(run_id, steps)
    if not found:
        return [], []
    left = found
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, timeout)):
        _signal(left, sig)
        deadline, polls = time.monotonic() + wait, 0
        left = _alive(left)
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            polls += 1
            if tick is not None:
                tick()
            if polls % 10 == 0:  # what the stopping ones started meanwhile (a shell's trap, say) is stopped too
                new = [p for p in find(run_id, steps) if p not in left and p not in found]
                _signal(new, sig)
                found += new
                left += new
            left = _alive(left)
        if not left:
            break
    return found, left


def stop_as_event(run_id: str, steps: Collection[str] | None = None, *, tick: Callable[[], None] | None = None) -> NewEvent | None:
    """:func:`stop`, and the ``run.leftovers_stopped`` event that records what it stopped (None if nothing)."""
    from runner.store.records import NewEvent

    found, survivors = stop(run_id, steps, tick=tick)
    if not found:
        return None
    names = ", ".join(sorted({p.name for p in found}))
    data: dict[str, object] = {"reason": f"stopped {len(found) - len(survivors)} of {len(found)} process(es) the previous "
                                         f"executor left running ({names})",
                               "processes": [p.as_json() for p in found]}  # fmt: skip
    if survivors:
        data["survivors"] = [p.as_json() for p in survivors]
    return NewEvent("run.leftovers_stopped", data=data)
