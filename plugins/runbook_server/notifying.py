"""Notifications in ``runbook serve`` and ``runbook worker``: a background deliverer thread over the shared store.

The settings come from :func:`runner.notify.config.load_notify`: the server config's ``notify:`` if it has one,
else ``RUNBOOK_CONFIG``, the project's ``.runbook/config.yaml`` or the user's configuration, exactly as the CLI
reads them. Channel secrets are resolved once at start; the environment variables they came from are removed
(no step inherits them), and their values join the process's log redaction.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from runbook_server.config import ServerConfig
    from runner.cli.app import AppState
    from runner.engine import Engine
    from runner.notify.deliver import DelivererThread
    from runner.secrets import Redactor

__all__ = ["start_notifications"]


def start_notifications(state: AppState, who: str, *, config: ServerConfig | None = None, redactor: Redactor | None = None,
                        engines: list[Engine] | tuple[Engine, ...] = ()) -> DelivererThread | None:  # fmt: skip
    """Start delivering if notifications are configured (None if not); ``engines`` wake it when an event may notify."""
    from runner.notify.config import load_notify
    from runner.notify.deliver import Deliverer, DelivererThread, holder_name
    from runner.notify.outbox import NOTIFY_EVENT_TYPES

    section = (config.notify, getattr(config, "_located", None), config.file) if config is not None and config.notify is not None else None
    notify = load_notify(state.host.notifiers, state.host.secret_providers, state.settings, server_section=section, redactor=redactor)
    if notify is None:
        return None
    for name in sorted(notify.env_names):
        os.environ.pop(name, None)
    thread = DelivererThread(Deliverer(state.store, notify, holder=holder_name(who)))

    def wake(event: Any, _run: Any) -> None:
        if event.type in NOTIFY_EVENT_TYPES:
            thread.wake()

    for engine in engines:
        engine.observers.append(wake)
    thread.start()
    channels = ", ".join(f"{n} ({c.notifier.name})" for n, c in notify.channels.items()) or "none"
    click.echo(f"runbook {who}: notifications from {notify.file}: channels {channels}; {len(notify.config.rules)} rule(s)", err=True)
    return thread
