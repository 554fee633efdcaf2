"""Which secret references a caller may choose: allow-lists, checked before a run is created.

A secret param takes a *reference* (``env:DB_PASSWORD``, ``file:/run/secrets/db``), and whoever starts a run
picks it. Left open, that lets any caller name any file or environment variable the server can read. So the
references belong to the operator: a secret param declares the ones callers may pick,

.. code-block:: yaml

    params:
      pw: {type: string, secret: true, default: "env:DB_PASSWORD",
           allow: ["env:DB_*", "file:/etc/app/secrets/*"]}

and the operator may set a default list for every secret param that declares none (``RUNBOOK_SECRET_ALLOW``,
or ``secret_allow:`` in the server config). With neither, a caller may only repeat the param's ``default``
reference: the one the runbook's author wrote.

Pattern grammar: ``scheme:glob``. In the glob, ``*`` matches any run of characters except ``/``, ``**`` any run
including ``/``, ``?`` one character except ``/``; anything else is literal. A ``file:`` pattern is an absolute
path without ``.``/``..`` components; a ``file:`` reference must be one too (normalised, no ``~``), and both the
path as written and the file it resolves to (symlinks followed) must match the list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runner.errors import ParamsError

__all__ = ["ENV_SECRET_ALLOW", "check_allow_pattern", "check_secret_refs", "parse_allow_env", "reference_allowed"]

ENV_SECRET_ALLOW = "RUNBOOK_SECRET_ALLOW"
_SCHEME = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_GLOB = re.compile(r"^[A-Za-z0-9_*?]+$")


def check_allow_pattern(pattern: str) -> str:
    """``pattern`` if it is a valid allow-list entry; raises ``ValueError`` saying what is expected."""
    scheme, sep, glob = pattern.partition(":")
    if not sep or not _SCHEME.match(scheme) or not glob:
        raise ValueError(f"allow-list entry {pattern!r}: expected 'scheme:pattern', e.g. 'env:DB_*' or 'file:/etc/app/secrets/*'")
    if scheme == "file":
        problem = _path_problem(glob)
        if problem:
            raise ValueError(f"allow-list entry {pattern!r}: {problem}")
    elif scheme == "env" and not _ENV_GLOB.match(glob):
        raise ValueError(f"allow-list entry {pattern!r}: an environment variable name or glob (letters, digits, _, * and ?)")
    return pattern


def parse_allow_env(text: str | None) -> list[str]:
    """The entries of ``RUNBOOK_SECRET_ALLOW`` (comma- or space-separated); raises ``ValueError`` for a bad one."""
    entries = [e for e in re.split(r"[,\s]+", text or "") if e]
    return [check_allow_pattern(e) for e in entries]


def _path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "a file path must be absolute (start with /)"
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        return "a file path must be normalised (no empty, '.' or '..' components, no trailing /)"
    return None


def _glob_regex(glob: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out), re.S)


def _matches(ref: str, patterns: Iterable[str]) -> bool:
    scheme, _, rest = ref.partition(":")
    for pattern in patterns:
        p_scheme, _, glob = pattern.partition(":")
        if p_scheme == scheme and _glob_regex(glob).fullmatch(rest):
            return True
    return False


def reference_allowed(ref: str, allow: Sequence[str], default: str | None = None) -> str | None:
    """None if a caller may choose ``ref``; otherwise why not (naming the reference, which is not a value).

    ``default`` (the param's own default reference, written by the runbook's author) is always allowed.
    """
    if default is not None and ref == default:
        return None
    scheme, _, rest = ref.partition(":")
    if scheme == "file":
        problem = _path_problem(rest)
        if problem:
            return f"'{ref}' is refused: {problem}"
    if not _matches(ref, allow):
        if allow:
            return f"reference '{ref}' is not allowed for this param (allowed: {', '.join(allow)})"
        only = f"only its default '{default}'" if default else "no reference"
        return (
            f"reference '{ref}' is not allowed: the param declares no `allow:` list, so callers may choose {only} "
            f"(the runbook's author lists the references callers may choose in `allow:`, or the operator in {ENV_SECRET_ALLOW})"
        )
    if scheme == "file":
        real = os.path.realpath(rest)
        if real != rest and not _matches(f"file:{real}", allow):
            return f"'{ref}' resolves to '{real}', which the allow-list does not allow"
    return None


def check_secret_refs(runbook: str, specs: Mapping[str, Any], values: Mapping[str, Any], schemes: Sequence[str],
                      default_allow: Sequence[str] = ()) -> None:  # fmt: skip
    """Refuse, before a run is created, a secret param whose reference the caller may not choose.

    ``specs`` are the runbook's :class:`~runner.params.ParamSpec`; ``schemes`` the registered providers;
    ``default_allow`` the operator's list for params that declare no ``allow:``. Raises
    :class:`~runner.errors.ParamsError` naming each param (and its reference, never a value).
    """
    problems = []
    known = ", ".join(f"{s}:" for s in schemes)
    for name, spec in specs.items():
        ref = values.get(name)
        if not spec.secret or not isinstance(ref, str):
            continue
        if ref.partition(":")[0] not in schemes:  # not echoed: likely the value itself given by mistake
            problems.append(f"{name}: expected a reference with a known scheme ({known}), never the value itself")
            continue
        allow = spec.allow if spec.allow is not None else list(default_allow)
        why = reference_allowed(ref, allow, spec.default if isinstance(spec.default, str) else None)
        if why:
            problems.append(f"{name}: {why}")
    if problems:
        raise ParamsError(runbook, problems)
