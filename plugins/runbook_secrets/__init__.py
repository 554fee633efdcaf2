"""Built-in secret providers: ``env:NAME`` and ``file:PATH``.

``file:`` reads the whole file and strips one trailing newline (as written by
``echo`` or most secret managers' file mounts).
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.errors import SecretError
from runner.plugin import hookimpl
from runner.registry import SecretProviderRegistry


def from_env(name: str) -> str:
    """Value of environment variable ``name``."""
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"secret reference 'env:{name}': environment variable {name} is not set")
    return value


def from_file(path: str) -> str:
    """Content of file ``path`` without one trailing newline."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"secret reference 'file:{path}': cannot read the file ({exc.strerror})") from None
    return text[:-1] if text.endswith("\n") else text


@hookimpl
def runbook_register_secret_providers(registry: SecretProviderRegistry) -> None:
    """Register ``env`` and ``file``."""
    registry.add("env", from_env)
    registry.add("file", from_file)
