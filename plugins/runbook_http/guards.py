"""Checks made before a request leaves: host allow-lists, secrets in URLs, secrets sent to a templated host;
``Retry-After`` parsing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from runner.errors import HTTPStepError
from runner.steptypes import is_template

if TYPE_CHECKING:
    from runner.secrets import Redactor

__all__ = [
    "ENV_ALLOWED_HOSTS", "HostPolicy", "carries_secret", "display_url", "parse_retry_after", "refuse_secret_in_url",
    "refuse_secret_to_templated_host", "templated_origin", "templated_origin_part",
]  # fmt: skip

ENV_ALLOWED_HOSTS = "RUNBOOK_HTTP_ALLOWED_HOSTS"
_TEMPLATE_MARKERS = ("{{", "{%", "{#")


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


def templated_origin(url: str) -> bool:
    """True if a template in ``url`` (as written, before rendering) can change its scheme, host or port.

    The origin is literal only when the text before the first template marker already holds
    ``scheme://authority`` and the ``/``, ``?`` or ``#`` that ends it: Jinja copies that text verbatim. A
    backslash does not end the authority here (``https://lb\\{{ x }}`` can render to ``...\\@evil/``).
    """
    return templated_origin_part(url) is not None


def templated_origin_part(url: str) -> str | None:
    """Which part of ``url``'s origin a template chooses (``"port"``, ``"host"`` or ``"scheme, host and port"``),
    or None when the origin is written literally (see :func:`templated_origin`)."""
    found = [i for i in (url.find(marker) for marker in _TEMPLATE_MARKERS) if i >= 0]
    if not found:
        return None
    literal = url[: min(found)]
    scheme_end = literal.find("://")
    if scheme_end <= 0:
        return "scheme, host and port"
    authority = literal[scheme_end + 3 :]
    end = next((i for i, ch in enumerate(authority) if ch in "/?#"), -1)
    if end > 0:
        return None  # the authority ends before the template, and a host is written
    host_port = authority.rpartition("@")[2]
    if host_port and ":" in host_port.rpartition("]")[2]:
        return "port"  # `https://lb.internal:{{ params.port }}`: the host is written, the port is not
    return "host"


def carries_secret(redactor: Redactor, texts: Iterable[str]) -> bool:
    """True if any of ``texts`` (header names and values, the body, the URL) holds a value ``redactor`` masks."""
    return bool(redactor) and any(redactor.text(text) != text for text in texts)


def refuse_secret_to_templated_host(method: str, url: str, raw: Mapping[str, Any] | None, policy: HostPolicy,
                                    redactor: Redactor) -> None:  # fmt: skip
    """Raise if a request carrying a secret goes to a host a template chose and no allow-list pins it.

    Whoever may start a run chooses the params: with ``url: "{{ params.lb_url }}/..."`` and a bearer token
    they could send the token to their own server. ``raw`` is the step's config as written (``ctx.raw_config``);
    the caller has already found a secret in the request.
    """
    raw_url = raw.get("url") if raw is not None else None
    part = templated_origin_part(raw_url) if isinstance(raw_url, str) else None
    if part is None or policy.pinned(raw):
        return
    shown = display_url(url, redactor)
    try:
        host = redactor.text(urlsplit(url).hostname or "?")
    except ValueError:
        host = "?"
    what = f"the port of its URL (host '{host}')" if part == "port" else f"its host '{host}'"
    raise HTTPStepError(
        f"{method} {shown}: the request carries a secret and {what} comes from a template; refusing to send it (nothing was sent)",
        hint=f"whoever starts the run could point it at their own server: pin the hosts this step may reach with "
        f"`allowed_hosts: [{host}]` in the step (or the operator with {ENV_ALLOWED_HOSTS}={host}), "
        f"or write the {'port' if part == 'port' else 'host'} literally in `url`",
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
        self.env_hosts = [h.strip() for h in raw_env.split(",") if h.strip()]
        if self.env_hosts:
            self.lists.append((ENV_ALLOWED_HOSTS, self.env_hosts))
        self.step_hosts = None if step_hosts is None else [h for h in step_hosts if h.strip()]
        if self.step_hosts is not None:
            self.lists.append(("the step's allowed_hosts", self.step_hosts))

    def pinned(self, raw: Mapping[str, Any] | None) -> bool:
        """True if a list in force was written by someone other than the run's starter.

        The operator's list always counts; the step's counts unless one of its entries, as written in ``raw``
        (the unrendered config), is a template: a param could then allow any host it likes.
        """
        if self.env_hosts:
            return True
        if self.step_hosts is None:
            return False
        written = raw.get("allowed_hosts") if raw is not None else None
        return not (isinstance(written, list) and any(is_template(h) for h in written))

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
