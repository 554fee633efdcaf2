"""Running one command line over a pooled connection: capped capture, timeout, cancellation."""

from __future__ import annotations

import contextlib
import select
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runbook_ssh.command import Capture, PidFilter, kill_command
from runbook_ssh.connection import map_paramiko_errors
from runner.errors import CommandTimeout

if TYPE_CHECKING:
    import paramiko

    from runbook_ssh.connection import Connection
    from runner.context import Context

__all__ = ["RemoteResult", "run_remote"]

_CHUNK = 65536


@dataclass
class RemoteResult:
    """Exit code and captured output of one remote command (``exit_code`` -1: no status, e.g. killed by a signal)."""

    exit_code: int
    stdout: str
    stderr: str
    truncated: bool
    duration: float


@dataclass
class _Job:
    chan: paramiko.Channel
    out: Capture
    err: PidFilter
    deadline: float | None


def run_remote(conn: Connection, line: str, *, stdin: str | None, timeout: float | None, connect_timeout: float,
               max_output: int, ctx: Context, what: str, sudo: bool) -> RemoteResult:  # fmt: skip
    """Run ``line`` on ``conn``'s host; on timeout or cancellation stop the remote process group."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    if deadline is not None:
        connect_timeout = max(0.1, min(connect_timeout, deadline - started))
    label = conn.endpoint.label
    chan = conn.open_session(connect_timeout)
    ctx.raise_if_cancelled()
    live = ctx.streaming
    err_cap = Capture(max_output, (lambda line: ctx.output("stderr", line)) if live else None)
    job = _Job(chan, Capture(max_output, (lambda line: ctx.output("stdout", line)) if live else None), PidFilter(err_cap), deadline)
    unregister = ctx.on_cancel(chan.close)
    try:
        with map_paramiko_errors(label):
            chan.exec_command(line)
            _send_stdin(job, stdin)
            timed_out = _pump(job, ctx)
        if timed_out or ctx.cancelled:
            _stop_remote(conn, job, connect_timeout, sudo)
            ctx.raise_if_cancelled()
            raise CommandTimeout(what, ctx.timeout if ctx.timeout is not None else timeout or 0.0)
        job.err.flush()
        job.out.close()
        err_cap.close()
        code = chan.exit_status if chan.exit_status_ready() else -1
    finally:
        unregister()
        with contextlib.suppress(Exception):
            chan.close()
    return RemoteResult(code, job.out.text(), err_cap.text(), job.out.truncated or err_cap.truncated, time.monotonic() - started)


def _send_stdin(job: _Job, stdin: str | None) -> None:
    if stdin:
        if job.deadline is not None:
            job.chan.settimeout(max(0.1, job.deadline - time.monotonic()))
        job.chan.sendall(stdin.encode())
        job.chan.settimeout(None)
    job.chan.shutdown_write()  # EOF on stdin: a command that reads it must not wait forever


def _drain(job: _Job) -> None:
    chan = job.chan
    while chan.recv_ready():
        job.out.feed(chan.recv(_CHUNK))
    while chan.recv_stderr_ready():
        job.err.feed(chan.recv_stderr(_CHUNK))


def _pump(job: _Job, ctx: Context) -> bool:
    """Read until EOF and exit status; True if the deadline passed first."""
    chan = job.chan
    while True:
        _drain(job)
        if ctx.cancelled:
            return False
        buffered = chan.recv_ready() or chan.recv_stderr_ready()
        if not buffered and (chan.closed or (chan.eof_received and chan.exit_status_ready())):
            return False
        left = None if job.deadline is None else job.deadline - time.monotonic()
        if left is not None and left <= 0:
            return True
        wait = 0.5 if left is None else min(0.5, left)  # bounds how late a cancellation is noticed
        if chan.eof_received:
            chan.status_event.wait(wait)  # the buffers are closed and always "readable": wait for the status instead
        else:
            select.select([chan], [], [], wait)


def _stop_remote(conn: Connection, job: _Job, timeout: float, sudo: bool) -> None:
    """Best effort: close the channel and stop the remote process group it reported."""
    with contextlib.suppress(Exception):
        job.chan.close()
    pid = job.err.pid
    if pid is None or pid <= 1:
        return
    with contextlib.suppress(Exception):
        killer = conn.open_session(timeout)
        killer.settimeout(timeout + 5)
        killer.exec_command(kill_command(pid, sudo=sudo))
        killer.shutdown_write()
        killer.status_event.wait(timeout + 5)
        killer.close()
