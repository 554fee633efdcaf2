"""The one error tree of ``runbook``.

Every error a user can see derives from :class:`RunbookError` and carries the
process exit code the CLI uses for it. Messages are built from structured
attributes and, where there is one, say what to do next.

::

    RunbookError                       exit 1 unless a subclass says otherwise
    ├── UsageError                     exit 2: bad input, nothing was changed
    │   ├── ValidationError            one or more located problems (file:line:col)
    │   ├── TemplateError              a template failed to render (names file, step, field)
    │   ├── ParamsError                params do not fit the runbook's params model
    │   ├── RunbookNotFound (KeyError)
    │   ├── RunNotFound (KeyError)
    │   ├── JournalNotFound            a command that reads runs found no journal (and created none)
    │   ├── RunbookChanged             completed steps were edited since the run started
    │   ├── PolicyDenied               an agent policy refused the request
    │   ├── PluginError                a plugin is broken or two plugins claim one name
    │   ├── ConfigError                a configuration file or option is invalid
    │   ├── SecretError                a secret reference cannot be resolved
    │   ├── MissingExtra               an optional feature's packages are not installed
    │   └── AuthError                  a request or webhook failed authentication (401) or authorisation (403)
    ├── ConflictError                  exit 6
    │   ├── LeaseHeld                  another live executor holds the run
    │   ├── LeaseLost                  this executor was fenced off mid-run
    │   ├── LockHeld                   the runbook's lock key is held by another run
    │   └── InvalidState               the run is not in a state that allows the request
    ├── StoreError                     the journal store failed
    ├── InvalidTransition              a state change the run/step tables do not allow (a bug, never written)
    ├── NotifyError                    a notification could not be delivered to a channel (retryable or not)
    └── StepFailed                     an action or probe could not be carried out
        ├── CommandTimeout (TimeoutError)
        ├── SSHError
        │   └── HostKeyError           unknown or changed host key (never accepted silently)
        └── HTTPStepError

    RunControl (BaseException)         control flow user code must not swallow
    ├── PauseRequested
    ├── CancelRequested
    └── Interrupted
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "AuthError",
    "CancelRequested",
    "CommandTimeout",
    "ConfigError",
    "ConflictError",
    "ExitCode",
    "HTTPStepError",
    "HostKeyError",
    "Interrupted",
    "InvalidState",
    "InvalidTransition",
    "JournalNotFound",
    "LeaseHeld",
    "LeaseLost",
    "LockHeld",
    "MissingExtra",
    "NotifyError",
    "ParamsError",
    "PauseRequested",
    "PluginError",
    "PolicyDenied",
    "Problem",
    "RunControl",
    "RunNotFound",
    "RunbookChanged",
    "RunbookError",
    "RunbookNotFound",
    "SSHError",
    "SecretError",
    "StepFailed",
    "StoreError",
    "TemplateError",
    "UsageError",
    "ValidationError",
]


class ExitCode(enum.IntEnum):
    """Process exit codes, as documented in DESIGN.md and ``docs/cli.md``."""

    SUCCEEDED = 0
    FAILED = 1
    USAGE = 2
    PAUSED = 3
    WAITING = 4
    CANCELLED = 5
    CONFLICT = 6
    INTERRUPTED = 130


class RunbookError(Exception):
    """Base of every error ``runbook`` raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}; {hint}")


# --------------------------------------------------------------------------- usage (exit 2)


class UsageError(RunbookError):
    """Bad input: nothing was started or changed."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Problem:
    """One located problem in a runbook or configuration file."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    where: str | None = None  # e.g. "step 'restart', field 'ssh.port'"
    included_from: str | None = None
    """``file:line:column`` of the ``include`` that brought ``file`` into the runbook, when it was included."""

    def __str__(self) -> str:
        loc = self.file or "<input>"
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        where = f" ({self.where})" if self.where else ""
        via = f" (included from {self.included_from})" if self.included_from else ""
        return f"{loc}{where}: {self.message}{via}"

    def as_dict(self) -> dict[str, object]:
        """JSON shape used by ``--json`` output."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "where": self.where,
            "message": self.message,
            "included_from": self.included_from,
        }


class ValidationError(UsageError):
    """One or more located problems; ``problems`` keeps them all, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid input"
        more = len(self.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        super().__init__(first + suffix)


class TemplateError(UsageError):
    """A template failed to render; names the file, step and field."""

    def __init__(self, detail: str, *, file: str | None, step: str | None, field: str | None) -> None:
        self.detail, self.file, self.step, self.field = detail, file, step, field
        parts = [p for p in (file, f"step '{step}'" if step else None, f"field '{field}'" if field else None) if p]
        super().__init__(f"{', '.join(parts) or 'template'}: {detail}")


class ParamsError(UsageError):
    """Params do not fit the runbook's params model."""

    def __init__(self, runbook: str, problems: Sequence[str]) -> None:
        self.runbook, self.problems = runbook, list(problems)
        super().__init__(
            f"invalid params for runbook '{runbook}': " + "; ".join(self.problems),
            hint=f"see `runbook show {runbook}` for the params it takes",
        )


class RunbookNotFound(UsageError, KeyError):
    """No runbook of that name is in the catalog."""

    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        self.name = name
        close = [k for k in known if k.startswith(name[:3])][:3]
        hint = f"did you mean {', '.join(close)}?" if close else "`runbook list` shows what is available"
        super().__init__(f"no runbook named '{name}'", hint=hint)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class RunNotFound(UsageError, KeyError):
    """No run with that id is in the store."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id '{run_id}'", hint="`runbook runs` lists recent runs")

    def __str__(self) -> str:
        return str(self.args[0])


class JournalNotFound(UsageError):
    """A command that reads runs found no journal where the store URL points; it created none.

    ``missing_dir`` is the directory that does not exist when the URL names one (an error worth fixing: the URL
    is probably wrong); without it the journal simply does not exist yet (nothing has run with this store).
    """

    def __init__(self, where: str, *, missing_dir: str | None = None) -> None:
        self.where, self.missing_dir = where, missing_dir
        if missing_dir is not None:
            super().__init__(
                f"no journal at {where}: the directory {missing_dir} does not exist",
                hint="check --store / RUNBOOK_STORE (commands that read runs never create a journal)",
            )
        else:
            super().__init__(f"no journal at {where} yet: nothing has run with this store", hint="`runbook run NAME` records the first run")


class RunbookChanged(UsageError):
    """Steps that already completed were edited since the run started."""

    def __init__(self, run_id: str, changed: Sequence[str], details: Sequence[str] = ()) -> None:
        self.run_id, self.changed, self.details = run_id, list(changed), list(details)
        names = ", ".join(f"'{s}'" for s in self.changed)
        what = f" ({'; '.join(self.details)})" if self.details else ""
        super().__init__(
            f"run {run_id}: completed step{'s' if len(changed) > 1 else ''} {names} changed since the run started{what}",
            hint=f"review the change, then run `runbook resume {run_id} --accept-changes` to continue with the edited runbook",
        )


class PolicyDenied(UsageError):
    """An agent policy refused the request; ``reason`` says which rule."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"refused by agent policy: {reason}")


class PluginError(UsageError):
    """A plugin is broken, or two plugins claim one name."""


class ConfigError(UsageError):
    """A configuration file or option is invalid."""


class SecretError(UsageError):
    """A secret reference cannot be resolved (the value itself is never shown)."""


class MissingExtra(UsageError):
    """An optional feature's packages are not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature, self.extra, self.module = feature, extra, module
        super().__init__(
            f"{feature} needs the '{module}' package, which is not installed",
            hint=f"install it with `pip install 'runbook[{extra}]'`",
        )


class AuthError(UsageError):
    """A request or webhook delivery failed authentication (401) or authorisation (403).

    The message says what was wrong (missing header, bad signature, stale timestamp) and never
    contains a credential.
    """

    def __init__(self, message: str, *, status: int = 401, hint: str | None = None) -> None:
        self.status = status
        super().__init__(message, hint=hint)


# --------------------------------------------------------------------------- conflicts (exit 6)


class ConflictError(RunbookError):
    """The request conflicts with another executor, run or state."""

    exit_code = ExitCode.CONFLICT


class LeaseHeld(ConflictError):
    """Another live executor holds the run's lease."""

    def __init__(self, run_id: str, holder: str, expires_in: float | None) -> None:
        self.run_id, self.holder, self.expires_in = run_id, holder, expires_in
        when = f"; its lease expires in {expires_in:.0f}s" if expires_in is not None else ""
        super().__init__(
            f"run {run_id} is being executed by {holder}{when}",
            hint=f"wait, or take it over with `runbook resume {run_id} --force` if that executor is gone",
        )


class LeaseLost(ConflictError):
    """This executor's fencing token is stale: another executor took the run over."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was taken over by another executor; this one stopped writing")


class LockHeld(ConflictError):
    """The runbook's ``lock`` key is held by another active run."""

    def __init__(self, key: str, run_id: str) -> None:
        self.key, self.run_id = key, run_id
        super().__init__(
            f"lock '{key}' is held by run {run_id}",
            hint=f"wait for run {run_id} to finish (`runbook status {run_id}`), then start this run again",
        )


class InvalidState(ConflictError):
    """The run is not in a state that allows the request."""

    def __init__(self, run_id: str, state: str, wanted: str) -> None:
        self.run_id, self.state, self.wanted = run_id, state, wanted
        super().__init__(f"run {run_id} is {state}; cannot {wanted}")


# --------------------------------------------------------------------------- runtime failures (exit 1)


class StoreError(RunbookError):
    """The journal store failed or holds data this version cannot read."""


class InvalidTransition(RunbookError):
    """The engine asked for a state change that :mod:`runner.store.transitions` does not allow; nothing was written."""

    def __init__(self, what: str, state: str, event: str) -> None:
        self.what, self.state, self.event = what, state, event
        super().__init__(f"internal error: a {what} in state '{state}' cannot take the event '{event}'")


class NotifyError(RunbookError):
    """A notifier could not deliver a message; ``retryable`` says whether trying again later may succeed.

    Not retryable: the receiver refused the message for good (a 4xx other than 408/429, a rejected recipient);
    sending it again would fail the same way until the configuration changes.
    """

    def __init__(self, message: str, *, retryable: bool = True, hint: str | None = None) -> None:
        self.retryable = retryable
        super().__init__(message, hint=hint)


class StepFailed(RunbookError):
    """An action or probe could not be carried out (as opposed to running and failing its expectations)."""


class CommandTimeout(StepFailed, TimeoutError):
    """A command ran past its timeout and was stopped."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what, self.timeout = what, timeout
        super().__init__(f"{what} timed out after {timeout:g}s and was stopped")


class SSHError(StepFailed):
    """An SSH connection or command failed."""


class HostKeyError(SSHError):
    """The host key is unknown or does not match known_hosts; nothing was run."""

    def __init__(self, host: str, fingerprint: str, known_hosts: str, *, changed: bool) -> None:
        self.host, self.fingerprint, self.known_hosts, self.changed = host, fingerprint, known_hosts, changed
        what = "does NOT match the key recorded" if changed else "is not in"
        super().__init__(
            f"host key for {host} ({fingerprint}) {what} {known_hosts}; refusing to connect",
            hint="verify the fingerprint out of band, then add it to known_hosts (e.g. with ssh-keyscan)",
        )


class HTTPStepError(StepFailed):
    """An HTTP request could not be made or its response was refused (size, host allow-list)."""


# --------------------------------------------------------------------------- control flow


class RunControl(BaseException):
    """Control flow that user step code must not swallow with ``except Exception``."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason)


class PauseRequested(RunControl):
    """Someone asked the run to pause."""


class CancelRequested(RunControl):
    """Someone asked the run to stop for good."""


class Interrupted(RunControl):
    """A second SIGINT/SIGTERM interrupted the current step."""
