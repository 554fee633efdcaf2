"""Built-in secret providers: ``env:NAME`` and ``file:PATH``.

``file:`` reads a regular file of at most :data:`MAX_FILE_BYTES` holding UTF-8 text and strips one trailing
newline (as written by ``echo`` or most secret managers' file mounts). Anything else is refused with a clear
error before more than the cap is read: a directory, a FIFO or a device (opened non-blocking, so a FIFO with no
writer never blocks), a file over the cap, binary content. Which references a caller may choose is decided
before the run is created (:mod:`runner.secretrefs`); this provider only reads safely what it is given.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runner.errors import SecretError
from runner.plugin import hookimpl
from runner.registry import SecretProviderRegistry

__all__ = ["MAX_FILE_BYTES", "from_env", "from_file"]

MAX_FILE_BYTES = 1024 * 1024


def from_env(name: str) -> str:
    """Value of environment variable ``name``."""
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"secret reference 'env:{name}': environment variable {name} is not set")
    return value


def from_file(path: str) -> str:
    """Content of the regular file ``path`` (UTF-8, at most :data:`MAX_FILE_BYTES`) without one trailing newline."""
    where = f"secret reference 'file:{path}'"
    data = _read_regular(str(Path(path).expanduser()), where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretError(f"{where}: the file is not UTF-8 text (byte {exc.start}); binary secrets are refused: "
                          "store them base64-encoded") from None  # fmt: skip
    if "\0" in text:
        raise SecretError(f"{where}: the file holds a NUL byte; binary secrets are refused: store them base64-encoded")
    return text[:-1] if text.endswith("\n") else text


def _read_regular(path: str, where: str) -> bytes:
    """At most :data:`MAX_FILE_BYTES` of a regular file, read from the descriptor that was checked."""
    from runner.safeio import Unreadable, read_regular

    try:
        return read_regular(path, MAX_FILE_BYTES)
    except Unreadable as exc:
        if exc.problem in ("open", "read"):
            raise SecretError(f"{where}: cannot {exc.problem} the file ({exc.detail})") from None
        if exc.problem == "type":
            raise SecretError(f"{where}: not a regular file ({_kind(exc.mode)}); a secret file must be a regular file") from None
        if exc.size is not None:
            raise SecretError(f"{where}: the file has {exc.size} bytes, more than the {MAX_FILE_BYTES}-byte limit for a secret") from None
        raise SecretError(f"{where}: the file holds more than the {MAX_FILE_BYTES}-byte limit for a secret") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


@hookimpl
def runbook_register_secret_providers(registry: SecretProviderRegistry) -> None:
    """Register ``env`` and ``file``."""
    registry.add("env", from_env)
    registry.add("file", from_file)
