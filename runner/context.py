"""The :class:`Context` a step sees while it runs.

Step types receive it in ``execute``; Python step functions receive it as their
first argument. It carries the run's params and earlier outputs, the step's
persisted ``state`` (for steps that wait), cancellation, logging that is
redacted and journaled, and helpers to run other step types
(``ctx.shell([...])``, ``ctx.ssh(host).run([...])``, ``ctx.http("GET", url)``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from runner.errors import CancelRequested, Interrupted

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runner.model import Check
    from runner.secrets import Redactor, SecretsView
    from runner.settings import Settings
    from runner.steptypes import ActionResult, Wait

__all__ = ["Context", "Services"]


class Services(Protocol):
    """What the engine offers step types beyond the context's own data."""

    def run_action(self, ctx: Context, type_name: str, config: dict[str, Any]) -> ActionResult | Wait:
        """Validate and run ``config`` with the step type ``type_name``."""

    def evaluate_checks(self, ctx: Context, checks: list[Check], kind: str) -> tuple[bool, list[dict[str, Any]]]:
        """Evaluate compiled checks; returns (all hold, evidence per check)."""

    def approvals(self, ctx: Context) -> list[dict[str, Any]]:
        """Approval decisions recorded for the current step since it started waiting."""

    def child_run(self, ctx: Context, runbook: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start or advance the sub-runbook of the current step; returns its run view."""

    def journal(self, ctx: Context, kind: str, data: dict[str, Any]) -> None:
        """Append an informational event for the current step."""

    def output(self, ctx: Context, stream: str, line: str) -> None:
        """A line the current step's command just wrote (``stdout``/``stderr``), for live views; not its result."""

    def last_seq(self) -> int:
        """Sequence number of the run's latest event (approvals after it count)."""

    def persist_state(self, ctx: Context) -> None:
        """Write ``ctx.state`` now, before an effect that must not be repeated."""

    def resource(self, key: str, factory: Callable[[], Any]) -> Any:
        """A run-scoped resource (e.g. an SSH connection), created once, closed when the run stops."""


class Context:
    """Everything one step execution may read or do."""

    def __init__(
        self,
        *,
        run_id: str,
        runbook: str,
        step_id: str,
        attempt: int,
        params: BaseModel,
        param_values: Mapping[str, Any],
        outputs: Mapping[str, Any],
        settings: Settings,
        secrets: SecretsView,
        redactor: Redactor,
        services: Services,
        started_by: str,
        state: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        timeout: float | None = None,
        item: Any = None,
        unit: str | None = None,
        cancel: threading.Event | None = None,
        release: Callable[[Context], None] | None = None,
    ) -> None:
        self.run_id, self.runbook, self.step_id, self.attempt = run_id, runbook, step_id, attempt
        self.params, self.settings = params, settings
        self._outputs: Mapping[str, Any] = outputs
        self._outputs_copy: dict[str, Any] | None = None
        self.param_values = param_values  # plain values, secret params resolved (and redacted everywhere)
        self.secrets, self.redactor, self.services = secrets, redactor, services
        self.started_by = started_by
        self.state: dict[str, Any] = state if state is not None else {}
        self.target = target
        """The fan-out target (host) this action runs on: name, address, port, user, key, known_hosts, vars."""
        self.item = item
        """The ``for_each`` item this action runs for (None outside a ``for_each`` step)."""
        self.unit = unit if unit is not None else (str(target.get("name")) if target else None)
        """The name of the target, or the key of the item, this action runs for (None for a step that does not fan out)."""
        self.timeout = timeout
        self.started = time.monotonic()
        self._cancel = cancel or threading.Event()
        self._on_cancel: list[Callable[[], None]] = []
        self._release = release
        self.cancel_reason = ""
        self.raw_config: dict[str, Any] | None = None
        """The action's config as the runbook wrote it, before templates were rendered (set by the engine)."""
        self.kind = "action"
        """What this context runs: ``action``, ``rollback``, or a probe (``check``, ``precondition``, ``verify``, ``wait``)."""
        self._cancel_exc: type[CancelRequested | Interrupted] = CancelRequested

    @property
    def outputs(self) -> dict[str, Any]:
        """The outputs of the steps completed before this one, by step id: a dict of its own, made on first read
        (a long run holds each output once, in its step record; only an action that reads this pays for the copy)."""
        if self._outputs_copy is None:
            self._outputs_copy = dict(self._outputs)
        return self._outputs_copy

    # ------------------------------------------------------------------ time and cancellation

    def remaining(self, default: float | None = None) -> float | None:
        """Seconds left before this step's timeout (``default`` when it has none)."""
        if self.timeout is None:
            return default
        return max(0.0, self.timeout - (time.monotonic() - self.started))

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled or interrupted while this step ran."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`CancelRequested` (or :class:`Interrupted`) if the step should stop now."""
        if self._cancel.is_set():
            raise self._cancel_exc(self.cancel_reason or "cancelled")

    def on_cancel(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn`` (e.g. kill a process group) if the step is cancelled; returns an unregister function."""
        self._on_cancel.append(fn)
        if self._cancel.is_set():
            fn()
        return lambda: self._on_cancel.remove(fn) if fn in self._on_cancel else None

    def cancel(self, reason: str, *, interrupt: bool = False) -> None:
        """Stop the step: set the flag and call every registered canceller (idempotent)."""
        self.cancel_reason = reason
        self._cancel_exc = Interrupted if interrupt else CancelRequested
        self._cancel.set()
        for fn in list(self._on_cancel):
            with contextlib.suppress(Exception):  # a failed kill must not hide the cancellation
                fn()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (and raising) if the step is cancelled."""
        if self._cancel.wait(max(0.0, seconds)):
            self.raise_if_cancelled()

    def release(self) -> None:
        """The action or probe this context was made for is over (the engine stops tracking it)."""
        if self._release is not None:
            self._release(self)

    # ------------------------------------------------------------------ journal

    def log(self, message: str, **data: Any) -> None:
        """Record a (redacted) log line in the run's journal (``runbook logs`` shows it; so does the live view)."""
        self.services.journal(self, "log", {"message": self.redactor.text(str(message)), **self.redactor.value(data)})

    @property
    def streaming(self) -> bool:
        """True if live views want the lines this context's command writes (actions and rollbacks, not probes)."""
        return self.kind in ("action", "rollback") and hasattr(self.services, "output")

    def output(self, stream: str, line: str) -> None:
        """Tell live views a line the step's command wrote (step types that capture output call this as it comes)."""
        emit = getattr(self.services, "output", None)  # services written before live output had no such method
        if emit is not None:
            emit(self, stream, line)

    # ------------------------------------------------------------------ other step types

    def action(self, type_name: str, config: dict[str, Any]) -> ActionResult:
        """Run another step type's action with ``config`` (already concrete values, not templates)."""
        from runner.steptypes import ActionResult

        result = self.services.run_action(self, type_name, config)
        if not isinstance(result, ActionResult):
            raise TypeError(f"step type '{type_name}' cannot be used from Python: it waits")
        return result

    def shell(self, command: list[str], **options: Any) -> ActionResult:
        """Run ``command`` (an argv list, no shell) like a ``shell`` step; see its options in docs/steps.md."""
        return self.action("shell", {"command": [str(c) for c in command], **options})

    def http(self, method: str, url: str, **options: Any) -> ActionResult:
        """Make an HTTP request like an ``http`` step."""
        return self.action("http", {"method": method, "url": url, **options})

    def ssh(self, host: str, **options: Any) -> _SSHHandle:
        """``ctx.ssh(host).run([...])`` runs a command on ``host`` like an ``ssh`` step."""
        return _SSHHandle(self, host, options)


class _SSHHandle:
    def __init__(self, ctx: Context, host: str, options: dict[str, Any]) -> None:
        self.ctx, self.host, self.options = ctx, host, options

    def run(self, command: list[str], **options: Any) -> ActionResult:
        """Run ``command`` on the host; each argument is quoted for the remote shell."""
        return self.ctx.action("ssh", {"host": self.host, "command": [str(c) for c in command], **self.options, **options})
