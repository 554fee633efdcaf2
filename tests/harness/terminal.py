"""A real interactive shell on a pseudo-terminal, driven by keystrokes (what a person's TAB key does)."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Terminal"]

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")


class Terminal:
    """``argv`` (an interactive shell) on its own pseudo-terminal in ``cwd``; :meth:`send` types, :meth:`expect` waits
    for output matching a pattern (escape sequences removed), with a deadline."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], columns: int = 200) -> None:
        import fcntl
        import pty
        import struct
        import termios

        self.output = ""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the shell
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))

    def send(self, keys: str) -> None:
        """Type ``keys`` (``\\t`` is TAB, ``\\r`` is Enter)."""
        os.write(self.fd, keys.encode())

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait until the output since the last match contains ``pattern`` (a regex); AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.output)
            if found:
                self.output = self.output[found.end() :]
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} on the terminal within {timeout}s; it shows:\n{self.output}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the shell ended
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the shell ended before {pattern!r}; it showed:\n{self.output}")
                self.output += _ANSI.sub("", chunk.decode("utf-8", "replace"))

    def close(self) -> None:
        """Stop the shell and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
