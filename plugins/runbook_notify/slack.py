"""``type: slack``: a Slack incoming webhook (or a Slack-compatible one: Mattermost, Rocket.Chat, Zulip's Slack
endpoint) with a Block Kit message: what happened to which run and step, why, the exact commands to run, and a
button to the run's page when ``console_url`` is configured. ``text`` carries the same as a plain fallback.

The webhook URL is a credential (whoever has it can post to the channel): ``url`` is a secret reference.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from runbook_notify._http import HttpOptions, post
from runner.notify.channel import Message

__all__ = ["SlackConfig", "SlackNotifier", "blocks"]

_HEADER_MAX, _TEXT_MAX, _FIELD_MAX = 150, 2900, 1900
_COMMAND_TITLES = {"approve": "Approve", "deny": "Deny", "retry_step": "Run the step again", "skip_step": "Treat the step as done",
                   "retry": "Retry after fixing the cause", "status": "Status", "reset": "Reset the breaker", "decisions": "Decisions",
                   "again": "Send again"}  # fmt: skip


class SlackConfig(HttpOptions):
    """A ``slack`` channel."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="secret reference to the incoming webhook URL, e.g. env:SLACK_WEBHOOK_URL")
    channel: str | None = Field(default=None, description="channel override, where the receiver allows one")
    username: str | None = Field(default=None, description="display name override, where the receiver allows one")
    icon_emoji: str | None = Field(default=None, description="icon override, e.g. ':robot_face:'")


def _esc(text: str) -> str:
    """Slack mrkdwn escaping: ``&``, ``<`` and ``>`` are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocks(message: Message) -> list[dict[str, Any]]:
    """The Block Kit blocks of ``message``."""
    out: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": _cut(message.title, _HEADER_MAX)}}]
    fields = [{"type": "mrkdwn", "text": _cut(f"*{k}*\n{_esc(v)}", _FIELD_MAX)} for k, v in message.facts()]
    if fields:
        out.append({"type": "section", "fields": fields[:10]})
    if message.reason:
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*Reason*\n{_esc(message.reason)}", _TEXT_MAX)}})
    if message.commands:
        lines = [f"*{_COMMAND_TITLES.get(k, k)}*\n```{_esc(v)}```" for k, v in message.commands.items()]
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut("\n".join(lines), _TEXT_MAX)}})
    if message.url:
        out.append({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open the run"},
                                                     "url": message.url, "action_id": "open_run"}]})  # fmt: skip
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _esc(f"runbook · {message.kind} · {message.key}")}]})
    return out


class SlackNotifier:
    """Posts a Block Kit message to an incoming webhook (Slack answers ``ok``)."""

    name = "slack"
    Config: ClassVar[type[BaseModel]] = SlackConfig
    secret_fields: ClassVar[frozenset[str]] = frozenset({"url"})

    def send(self, message: Message, config: Any, *, delivery_id: str, timeout: float) -> str:
        """Post the message; 429 and 5xx are retried, other refusals (a revoked webhook: 403/404/410) are final."""
        from runner._version import __version__

        assert isinstance(config, SlackConfig)
        payload: dict[str, Any] = {"text": _cut(_esc(message.text()), 3000), "blocks": blocks(message)}
        for key in ("channel", "username", "icon_emoji"):
            if getattr(config, key):
                payload[key] = getattr(config, key)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"runbook/{__version__}", "X-Runbook-Delivery": delivery_id}
        return post(config.url, body, headers, config, timeout)
