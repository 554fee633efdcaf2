"""Built-in notifiers: a signed JSON ``webhook``, ``slack`` (Block Kit over an incoming webhook) and ``email`` (SMTP),
and the ``runbook notify`` commands (``test``, ``list``, ``deliver``).

Notifications are configured under ``notify:`` (see ``docs/notifications.md``); delivery itself is the core's
(:mod:`runner.notify.deliver`), so a third-party notifier registered through ``runbook_register_notifiers`` is
used exactly like these. This module stays cheap to import: ``httpx`` is imported when a message is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.plugin import hookimpl

if TYPE_CHECKING:
    import click

    from runner.registry import NotifierRegistry

__all__ = ["runbook_add_commands", "runbook_register_notifiers"]


@hookimpl
def runbook_register_notifiers(registry: NotifierRegistry) -> None:
    """Register ``webhook``, ``slack`` and ``email``."""
    from runbook_notify.mail import EmailNotifier
    from runbook_notify.slack import SlackNotifier
    from runbook_notify.webhook import WebhookNotifier

    for notifier in (WebhookNotifier(), SlackNotifier(), EmailNotifier()):
        registry.add(notifier)


@hookimpl
def runbook_add_commands(cli: click.Group) -> None:
    """Add ``runbook notify``."""
    from runbook_notify.cli import notify_group

    cli.add_command(notify_group)
