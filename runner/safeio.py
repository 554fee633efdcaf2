"""Reading the files an operator or author points at (runbooks, inventory, policy, params, server config).

:func:`read_input` opens the path (symlinks followed), checks on the opened descriptor that it is a regular
file (a FIFO is opened non-blocking so it can never hang the reader; ``/dev/zero`` is a device), and reads at
most the size cap (``RUNBOOK_MAX_FILE_BYTES``, default 1 MiB) plus one byte, so an endless or huge file costs
no more than the cap. :func:`decode_input` turns the bytes into text without ever quoting them: a file that is
not UTF-8 (a binary a symlink points at) is named, its content is not shown.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from runner.errors import Problem, RunbookError, ValidationError

__all__ = ["Unreadable", "decode_input", "input_limit", "read_head", "read_input", "read_input_text", "read_regular"]

Refuse = Callable[[str], RunbookError]


def _problem(file: str) -> Refuse:
    return lambda message: ValidationError([Problem(message, file=file)])


def input_limit() -> int:
    """The size cap of input files: ``RUNBOOK_MAX_FILE_BYTES``, else 1 MiB."""
    from runner.yamlsafe import DEFAULT_MAX_BYTES

    try:
        return int(os.environ.get("RUNBOOK_MAX_FILE_BYTES", DEFAULT_MAX_BYTES))
    except ValueError:
        return DEFAULT_MAX_BYTES


class Unreadable(Exception):
    """Why :func:`read_regular` refused a file. ``problem``: ``"open"`` or ``"read"`` (``detail``: the OS error's text), ``"type"``
    (``mode``: what the path is), ``"size"`` (``size``: its size, or None when it grew past the cap while read)."""

    def __init__(self, problem: str, *, detail: str = "", mode: int = 0, size: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.detail, self.mode, self.size = problem, detail, mode, size


def read_regular(file: str, limit: int) -> bytes:
    """The bytes of the regular file ``file``, read from the descriptor that was checked, at most ``limit`` of them
    (bounded even if the file grows while it is read); anything else raises :class:`Unreadable`. A FIFO is opened
    non-blocking, so it never hangs the reader."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise Unreadable("open", detail=exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("type", mode=info.st_mode)
        if info.st_size > limit:
            raise Unreadable("size", size=info.st_size)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise Unreadable("size")
        return b"".join(chunks)
    except OSError as exc:
        raise Unreadable("read", detail=exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def read_input(path: str | os.PathLike[str], *, what: str = "file", refuse: Refuse | None = None,
               max_bytes: int | None = None, label: str | None = None) -> bytes:  # fmt: skip
    """At most the size cap of the regular file ``path``; anything else raises ``refuse(message)``.

    ``refuse`` builds the error (default: a :class:`~runner.errors.ValidationError` naming the file); the message
    names ``what`` and the file (as ``label`` if given), never its content.
    """
    file = os.fspath(path)
    fail = refuse or _problem(file)
    shown = label or file
    limit = input_limit() if max_bytes is None else max_bytes
    try:
        return read_regular(file, limit)
    except Unreadable as exc:
        if exc.problem in ("open", "read"):
            raise fail(f"cannot read {what} {shown}: {exc.detail}") from None
        if exc.problem == "type":
            kind = "a directory" if stat.S_ISDIR(exc.mode) else "a FIFO" if stat.S_ISFIFO(exc.mode) else "a device or socket"
            raise fail(f"{what} {shown} is {kind}, not a regular file") from None
        if exc.size is not None:
            raise fail(f"{what} {shown} is {exc.size} bytes; the limit is {limit} (RUNBOOK_MAX_FILE_BYTES)") from None
        raise fail(f"{what} {shown} is over the limit of {limit} bytes (RUNBOOK_MAX_FILE_BYTES)") from None


def decode_input(data: bytes, file: str, *, what: str = "file", refuse: Refuse | None = None) -> str:
    """``data`` as UTF-8 text; a file that is not (or holds NUL bytes) is refused without quoting it."""
    fail = refuse or _problem(file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"{what} {file} is not UTF-8 text (byte {exc.start}); its content is not shown") from None
    if "\0" in text:
        raise fail(f"{what} {file} holds NUL bytes: not a text file; its content is not shown")
    return text


def read_input_text(path: str | os.PathLike[str], *, what: str = "file", refuse: Refuse | None = None,
                    label: str | None = None) -> str:  # fmt: skip
    """:func:`read_input` then :func:`decode_input`."""
    file = os.fspath(path)
    data = read_input(file, what=what, refuse=refuse, label=label)
    return decode_input(data, label or file, what=what, refuse=refuse)


def read_head(path: str | os.PathLike[str], limit: int) -> bytes:
    """The first ``limit`` bytes of the regular file ``path``; empty for anything else or an unreadable file."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        chunks, total = [], 0
        while total < limit:
            chunk = os.read(fd, min(1 << 16, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)
