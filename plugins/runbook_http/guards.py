"""Checks made before a request leaves: host allow-lists and secrets in URLs; ``Retry-After`` parsing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from runner.errors import HTTPStepError

if TYPE_CHECKING:
    from runner.secrets import Redactor

__all__ = ["ENV_ALLOWED_HOSTS", "HostPolicy", "display_url", "parse_retry_after", "refuse_secret_in_url"]

ENV_ALLOWED_HOSTS = "RUNBOOK_HTTP_ALLOWED_HOSTS"


def display_url(url: str, redactor: Redactor | None = None) -> str:
    """``url`` as it may be shown: a password in it masked, known secrets masked."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
            netloc += f":{parts.port}" if parts.port else ""
            url = urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # unparsable: shown masked by the redactor only
        pass
    return redactor.text(url) if redactor is not None else url


def refuse_secret_in_url(method: str, url: str, redactor: Redactor) -> None:
    """Raise if the final URL (query included) holds a secret value: URLs end up in logs, proxies and histories."""
    if not redactor:
        return
    for candidate in (url, unquote(url), unquote_plus(url)):  # a secret may sit in the URL percent-encoded
        masked = redactor.text(candidate)
        if masked != candidate:
            raise HTTPStepError(
                f"{method} {display_url(masked)}: the URL contains a secret value; refusing to send it",
                hint="URLs are logged by servers and proxies: pass the secret in a header instead "
                "(auth: {bearer: ...}, auth: {basic: ...} or headers: {...})",
            )


def _parse_entry(entry: str) -> tuple[str, int | None]:
    entry = entry.strip().lower()
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def _matches(host: str, port: int, entry: str) -> bool:
    want_host, want_port = _parse_entry(entry)
    if want_port is not None and want_port != port:
        return False
    if want_host.startswith("*."):
        return host.endswith(want_host[1:]) and host != want_host[2:]
    return host == want_host


class HostPolicy:
    """The allow-lists a request must pass: the step's ``allowed_hosts`` and ``RUNBOOK_HTTP_ALLOWED_HOSTS``."""

    def __init__(self, step_hosts: Iterable[str] | None, env: str | None = None) -> None:
        raw_env = os.environ.get(ENV_ALLOWED_HOSTS, "") if env is None else env
        self.lists: list[tuple[str, list[str]]] = []
        env_hosts = [h.strip() for h in raw_env.split(",") if h.strip()]
        if env_hosts:
            self.lists.append((ENV_ALLOWED_HOSTS, env_hosts))
        if step_hosts is not None:
            self.lists.append(("the step's allowed_hosts", [h for h in step_hosts if h.strip()]))

    def check(self, method: str, scheme: str, host: str, port: int | None, shown_url: str) -> None:
        """Raise :class:`HTTPStepError` naming the host if a list in force does not allow it."""
        host = host.lower().strip("[]")
        port = port or (443 if scheme == "https" else 80)
        for source, entries in self.lists:
            if not any(_matches(host, port, entry) for entry in entries):
                allowed = ", ".join(entries) or "nothing"
                raise HTTPStepError(
                    f"{method} {shown_url}: host '{host}' is not allowed by {source} ({allowed}); nothing was sent",
                    hint=f"add '{host}' to {source} if this request is intended",
                )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta seconds or an HTTP date); None if absent or invalid."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
