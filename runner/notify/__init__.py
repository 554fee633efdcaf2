"""Notifications: tell people when a run needs them (or finished), durably and at least once.

The pieces, each in its own module:

- :mod:`runner.notify.outbox` — which journal events notify (the *kinds*), the records of the store's
  ``notifications`` table (the outbox), and the rows a store writes in the same transaction as the event.
- :mod:`runner.notify.channel` — the contract of a notifier plugin (``runbook_register_notifiers``) and the
  :class:`~runner.notify.channel.Message` every notifier renders.
- :mod:`runner.notify.config` — the ``notify:`` configuration (channels, rules, delivery) and the one loader
  the CLI, ``runbook worker`` and ``runbook serve`` share.
- :mod:`runner.notify.message` — the message for a notification (masked, with the exact commands).
- :mod:`runner.notify.deliver` — the deliverer: claims due notifications with a lease, sends them to the
  channels its rules choose, records every channel's outcome, retries with backoff until delivered or expired.

This package imports nothing heavy: stores import :mod:`runner.notify.outbox` on every commit path.
See ``docs/notifications.md``.
"""
