"""The contract of a notifier plugin, and the message every notifier renders.

A notifier is a *channel type* (``webhook``, ``slack``, ``email``, or a plugin's own). Plugins contribute them
through the ``runbook_register_notifiers`` hook::

    @hookimpl
    def runbook_register_notifiers(registry):
        registry.add(MyNotifier())

A configured *channel* is a name, a notifier and that notifier's validated ``Config`` (its secret fields
already resolved). The deliverer calls :meth:`Notifier.send` for each channel a notification goes to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

__all__ = ["KIND_TITLES", "Message", "Notifier"]

KIND_TITLES = {
    "waiting_approval": "is waiting for approval",
    "unknown": "needs a decision",
    "failed": "failed",
    "succeeded": "succeeded",
    "cancelled": "was cancelled",
    "breaker_open": "circuit breaker is open",
    "storm_refused": "storm guard refused a run",
    "test": "test message",
}
"""How a message's title ends, by kind."""


@dataclass(frozen=True)
class Message:
    """One notification, ready to render: every text in it is already masked.

    ``commands`` maps what a person may do (``approve``, ``deny``, ``status``, ``retry``, ...) to the exact command
    line; ``url`` is the run's page in the web console when a console URL is configured.
    """

    key: str
    kind: str
    title: str
    reason: str = ""
    run_id: str | None = None
    runbook: str | None = None
    step_id: str | None = None
    started_by: str | None = None
    route: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    created_at: float = 0.0
    test: bool = False

    def facts(self) -> list[tuple[str, str]]:
        """(label, value) pairs a message shows, in order, without the empty ones."""
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        pairs = [("Run", self.run_id), ("Runbook", self.runbook), ("Step", self.step_id), ("Route", self.route),
                 ("Started by", self.started_by), ("Labels", labels)]  # fmt: skip
        return [(k, v) for k, v in pairs if v]

    def text(self) -> str:
        """The message as plain text (email body, chat fallback)."""
        from runner.engine.views import iso

        lines = [self.title, ""]
        lines += [f"{k}: {v}" for k, v in self.facts()]
        if self.reason:
            lines += ["", f"Reason: {self.reason}"]
        if self.commands:
            lines += ["", *[f"{what.capitalize()}: {command}" for what, command in self.commands.items()]]
        if self.url:
            lines += ["", f"Console: {self.url}"]
        lines += ["", f"-- runbook notification {self.key}, {iso(self.created_at)}"]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        """The documented JSON body of a webhook notification (``version`` 1)."""
        from runner.engine.views import iso

        return {
            "version": 1, "key": self.key, "kind": self.kind, "test": self.test, "title": self.title, "reason": self.reason,
            "run": {"id": self.run_id, "runbook": self.runbook, "started_by": self.started_by, "url": self.url}
            if self.run_id else None,
            "step": self.step_id, "route": self.route, "labels": self.labels, "commands": self.commands,
            "created_at": iso(self.created_at),
        }  # fmt: skip


@runtime_checkable
class Notifier(Protocol):
    """What a notifier plugin provides.

    - ``name``: the channel ``type`` that selects it in the configuration.
    - ``Config``: a pydantic model (``extra="forbid"``) validating a channel's settings (every key but ``type``).
    - ``secret_fields``: names of ``Config`` fields that hold secret *references* (``env:NAME``, ``file:PATH``);
      the deliverer resolves them through the secret providers before :meth:`send` sees the model, and masks
      their values everywhere.
    """

    name: str
    Config: ClassVar[type[BaseModel]]
    secret_fields: ClassVar[frozenset[str]]

    def send(self, message: Message, config: Any, *, delivery_id: str, timeout: float) -> str:
        """Deliver ``message``; return a short detail of the receiver's answer (``HTTP 200``, ``250 OK``).

        ``delivery_id`` is unique per notification and channel and the same on every retry: send it where the
        receiver can de-duplicate on it (a header, a Message-ID). Finish within ``timeout`` seconds. Raise
        :class:`~runner.errors.NotifyError` on failure (``retryable=False`` when trying again cannot help); its
        message must not contain a secret.
        """
        ...
