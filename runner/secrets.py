"""Secret references and redaction.

A secret is named by reference (``env:NAME``, ``file:PATH`` or a plugin's
scheme) and resolved only when a step needs it. Every resolved value is added
to the run's :class:`Redactor`, which replaces it (by literal match, regex
metacharacters included, and in the forms quoting gives it: JSON-escaped,
``repr()``, URL-encoded, shell-quoted) in every output, event, error and log
line before anything is stored or printed.

Whatever a template derives from a secret is a secret too: while a template renders, the resolver records which
secrets it read, and :mod:`runner.derived` renders it again with stand-ins to find (and add to the redactor)
the spans of the result that came from them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from runner.errors import SecretError
from runner.registry import SecretProviderRegistry

__all__ = ["MASK", "Redactor", "SecretResolver", "SecretsUnavailable", "SecretsView", "refuse_secret_in_argv", "resolve_at_start"]

MASK = "***"
_MIN_LEN = 3  # shorter values would shred ordinary text; secrets that short are refused

READS: ContextVar[list[tuple[SecretResolver, str]] | None] = ContextVar("runbook_secret_reads", default=None)
"""While set (by :func:`runner.derived.render_tracked`), every secret value resolved is appended to it."""
STANDINS: ContextVar[Callable[[str], str] | None] = ContextVar("runbook_secret_standins", default=None)
"""While set, the resolver answers with ``STANDINS(value)`` instead of the value (a second, shadow rendering)."""


class Redactor:
    """Replaces known secret values by :data:`MASK` in strings and nested JSON values."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self._lock = threading.Lock()
        for v in values:
            self.add(v)

    def add(self, value: str) -> None:
        """Start redacting ``value`` and the forms it takes when quoted: JSON, ``repr()``, URL-encoded, shell-quoted."""
        from urllib.parse import quote, quote_plus

        escaped = json.dumps(value)[1:-1]
        forms = {
            value, value.strip(), escaped, json.dumps(escaped)[1:-1],  # JSON, and JSON inside JSON (a body echoed in a body)
            repr(value)[1:-1], quote(value, safe=""), quote_plus(value),  # Python messages, URLs and form bodies
            value.replace("'", "'\"'\"'"),  # inside a shell single-quoted word (shlex.quote, remote command lines)
        }  # fmt: skip
        with self._lock:
            new = [f for f in forms if len(f) >= _MIN_LEN and f not in self._values]
            if new:
                # a new list, swapped in whole: another thread masking meanwhile keeps a consistent (older) list
                self._values = sorted([*self._values, *new], key=len, reverse=True)  # longest first

    def __bool__(self) -> bool:
        return bool(self._values)

    @property
    def secrets(self) -> list[str]:
        """The values being masked (to seed another redactor)."""
        return list(self._values)

    def text(self, text: str) -> str:
        """``text`` with every secret value masked."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like ``value`` with secrets masked in every string, key included."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


class SecretResolver:
    """Resolves references through the registered providers, feeding the redactor."""

    def __init__(self, providers: SecretProviderRegistry, redactor: Redactor) -> None:
        self.providers, self.redactor = providers, redactor
        self._cache: dict[str, str] = {}
        self.env_names: set[str] = set()
        """Environment variables read through ``env:`` references (a server removes its own from what steps inherit)."""

    def resolve(self, ref: str, *, name: str = "secret") -> str:
        """The value behind ``ref``; raises :class:`SecretError` naming the reference, never the value.

        During a shadow rendering (:data:`STANDINS` set) the answer is the value's stand-in.
        """
        value = self._cache.get(ref)
        if value is None:
            value = self._resolve(ref, name)
        reads = READS.get()
        if reads is not None:
            reads.append((self, value))
        standin = STANDINS.get()
        return standin(value) if standin is not None else value

    def _resolve(self, ref: str, name: str) -> str:
        scheme, sep, rest = ref.partition(":")
        if not sep or scheme not in self.providers:
            # Not echoed: a string without a known scheme is likely a secret value given by mistake.
            known = ", ".join(f"{s}:" for s in self.providers.names())
            raise SecretError(f"{name}: the reference does not start with a known scheme ({known}); "
                              "secrets are given by reference, never by value")  # fmt: skip
        try:
            value = self.providers.get(scheme)(rest)
        except SecretError:
            raise
        except Exception as exc:  # a provider's bug or an unexpected error: still a clear secret error, never an internal one
            raise SecretError(f"{name}: provider '{scheme}' failed for '{ref}': {type(exc).__name__}") from None
        if scheme == "env":
            self.env_names.add(rest)
        if not isinstance(value, str):
            raise SecretError(f"{name}: provider '{scheme}' returned {type(value).__name__}, expected a string")
        if len(value) < _MIN_LEN:
            raise SecretError(f"{name}: the value behind '{ref}' is shorter than {_MIN_LEN} characters; refusing to use it")
        self.redactor.add(value)
        self._cache[ref] = value
        return value


class SecretsView(Mapping[str, str]):
    """``secrets`` in templates: resolves a declared secret on first access."""

    def __init__(self, refs: Mapping[str, str], resolver: SecretResolver) -> None:
        self._refs, self._resolver = dict(refs), resolver

    def __getitem__(self, key: str) -> str:
        if key not in self._refs:
            raise KeyError(f"no secret named '{key}' is declared under 'secrets:'")
        return self._resolver.resolve(self._refs[key], name=f"secret '{key}'")

    def __getattr__(self, key: str) -> str:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(str(exc)) from None

    def __iter__(self) -> Any:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"<secrets {', '.join(self._refs)}>"


class SecretsUnavailable(SecretError):
    """A run's secrets could not all be resolved when it started: the run fails with this reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.reason = "cannot resolve the run's secrets: " + "; ".join(problems)
        super().__init__(self.reason, hint="fix the reference or what it names, then start a new run")

    def run_columns(self, state: Any) -> dict[str, Any]:
        """The run row of a run in ``state`` that failed for this reason at start (``failed`` frees its lock)."""
        import time

        from runner.store.transitions import RunEvent, run_after

        return {"state": run_after(run_after(state, RunEvent.DRIVE), RunEvent.FAIL), "reason": self.reason, "finished_at": time.time()}


def resolve_at_start(secrets: Mapping[str, str], params: Mapping[str, Any], specs: Mapping[str, Any],
                     values: Mapping[str, Any]) -> None:  # fmt: skip
    """Resolve every declared secret (``secrets``) and every secret param with a value, so each is masked from
    the first step on; raise :class:`SecretsUnavailable` listing every one that cannot be resolved."""
    problems = []
    for name in secrets:
        try:
            secrets[name]
        except SecretError as exc:
            problems.append(str(exc))
    for name, spec in specs.items():
        if spec.secret and values.get(name) is not None:
            try:
                params[name]
            except SecretError as exc:
                problems.append(str(exc))
    if problems:
        raise SecretsUnavailable(problems)


def refuse_secret_in_argv(argv: Iterable[Any], redactor: Redactor, what: str) -> None:
    """Raise :class:`~runner.errors.StepFailed` if an argument of a command line holds a secret (or what a
    template derived from one): every user of the host reads command lines (``ps``, ``/proc/*/cmdline``)."""
    from runner.errors import StepFailed

    if redactor and any(redactor.text(str(a)) != str(a) for a in argv):
        raise StepFailed(f"{what}: the command line carries a secret; refusing to run it (command lines are visible to "
                         "every user of the host in `ps`)", hint="pass the secret in `env:` (or `stdin:`) and use $NAME")  # fmt: skip
