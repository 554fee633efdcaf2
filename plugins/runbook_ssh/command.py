"""Building the remote command line, and capturing what comes back (no paramiko here).

The remote side always runs the command through the login shell (that is how SSH
works), so every argument is quoted with :func:`shlex.quote` one by one: a value
such as ``$(touch /tmp/pwned)`` arrives as one literal argument. The line first
reports the shell's PID on stderr (stripped again from the captured output): sshd
makes that shell a process-group leader, so a timeout or a cancellation can stop
the command and its children rather than leave them running after the channel
closes. The command is not exec'ed, so shell built-ins (``command -v``) work too.

Environment values never appear on the line (the remote ``ps`` shows a shell's ``-c`` argument, and sudo's
argv, to every user of the host): the line reads them from the first lines of its standard input
(:func:`env_stdin`, octal-escaped, one per line) with the shell's ``read`` and ``printf`` built-ins, exports
them, and leaves the rest of standard input to the command. Under ``sudo`` the reading happens in the shell
that sudo starts, so the values pass through sudo on a pipe, not in its argv.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence

__all__ = ["ENV_NAME", "Capture", "PidFilter", "build_command", "env_stdin", "kill_command"]

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MARK = b"\x1erunbook-pid:"
_MARKER = re.compile(rb"\x1erunbook-pid:(\d+)\x1e\n")
_SCAN_LIMIT = 4096  # the marker is printed first; give up looking for it after this many stderr bytes


def build_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                  sudo: bool = False, report_pid: bool = True) -> str:  # fmt: skip
    """The remote shell line for ``argv``; every argument and the directory are quoted.

    ``env`` contributes only its *names*: the line reads the values from standard input, which must start with
    :func:`env_stdin` of the same mapping. ``sudo`` runs ``sudo -n -- argv`` (never prompts); with ``env``,
    ``sudo -n -- sh -c '<read and export>; exec "$@"' sh argv``, because sudo resets the environment it is given.
    """
    if not argv:
        raise ValueError("command needs at least the program to run")
    names = list(env or {})
    bad = [k for k in names if not ENV_NAME.match(k)]
    if bad:
        raise ValueError(f"invalid environment variable name(s): {', '.join(map(repr, bad))}")
    words = " ".join(shlex.quote(str(a)) for a in argv)
    reading = "".join(f"IFS= read -r __rb && __rb=$(printf '%bx' \"$__rb\") && {k}=${{__rb%x}} && export {k} && " for k in names)
    if reading:
        reading += "unset __rb && "
    if sudo and reading:  # sudoers must let the user run sh (before: env; either can run anything)
        inner = shlex.quote(reading + 'exec "$@"')
        command = f"sudo -n -- sh -c {inner} sh {words}"
    elif sudo:
        command = f"sudo -n -- {words}"
    else:
        command = f"{reading}{words}"
    parts = []
    if report_pid:
        parts.append("printf '\\036runbook-pid:%s\\036\\n' \"$$\" >&2;")
    if cwd is not None:
        parts.append(f"cd -- {shlex.quote(cwd)} &&")
    parts.append(command)
    return " ".join(parts)


def env_stdin(env: Mapping[str, str] | None) -> str:
    """What the line of :func:`build_command` reads first from standard input: each value, octal-escaped, one a line."""
    return "".join("".join(f"\\0{b:03o}" for b in str(v).encode()) + "\n" for v in (env or {}).values())


def kill_command(pid: int, *, sudo: bool = False, grace: float = 2.0) -> str:
    """A shell line that stops process group ``pid`` (TERM, then KILL after ``grace`` seconds)."""
    if pid <= 1:
        raise ValueError(f"refusing to signal pid {pid}")
    kill = "sudo -n -- kill" if sudo else "kill"
    ticks = max(1, int(grace * 10))
    # `kill -s SIG -- -PGID` is the form dash, bash, zsh and /usr/bin/kill all parse (dash rejects `-TERM --`).
    return (
        f"{kill} -s TERM -- -{pid} 2>/dev/null || {kill} -s TERM -- {pid} 2>/dev/null || exit 0; "
        f"i=0; while [ $i -lt {ticks} ] && {kill} -s 0 -- -{pid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
        f"{kill} -s KILL -- -{pid} 2>/dev/null; {kill} -s KILL -- {pid} 2>/dev/null; exit 0"
    )


class Capture:
    """Keeps the first ``cap`` bytes of a stream and notes whether more arrived; ``on_line`` hears each line as it comes."""

    def __init__(self, cap: int, on_line: Callable[[str], None] | None = None) -> None:
        self.cap, self.data, self.truncated = cap, bytearray(), False
        self.on_line, self._sent = on_line, 0

    def feed(self, chunk: bytes) -> None:
        """Add ``chunk``, dropping whatever goes past the cap."""
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        if room > 0:
            self.data += chunk[:room]
            if self.on_line is not None:
                self._lines(final=False)

    def close(self) -> None:
        """End of stream: a last line without a newline is heard too."""
        if self.on_line is not None:
            self._lines(final=True)

    def _lines(self, *, final: bool) -> None:
        assert self.on_line is not None
        end = len(self.data) if final else self.data.rfind(b"\n", self._sent) + 1
        if end > self._sent:
            for line in bytes(self.data[self._sent : end]).decode("utf-8", "replace").splitlines():
                self.on_line(line)
            self._sent = end

    def text(self) -> str:
        """The kept bytes as text (invalid UTF-8 replaced)."""
        return self.data.decode("utf-8", "replace")


class PidFilter:
    """Takes the PID marker out of the start of the stderr stream; passes everything else on."""

    def __init__(self, sink: Capture) -> None:
        self.sink = sink
        self.pid: int | None = None
        self._pending, self._done = bytearray(), False

    def feed(self, chunk: bytes) -> None:
        """Add stderr bytes."""
        if self._done:
            self.sink.feed(chunk)
            return
        self._pending += chunk
        match = _MARKER.search(self._pending)
        if match:
            self.pid = int(match.group(1))
            rest = self._pending[: match.start()] + self._pending[match.end() :]
            self._finish(bytes(rest))
        elif len(self._pending) > _SCAN_LIMIT and _MARK not in self._pending[-64:]:
            self._finish(bytes(self._pending))

    def flush(self) -> None:
        """End of stream: pass on anything still held back."""
        if not self._done:
            self._finish(bytes(self._pending))

    def _finish(self, data: bytes) -> None:
        self._done, self._pending = True, bytearray()
        if data:
            self.sink.feed(data)
