"""Following redirects ourselves, so that the step's headers only ever reach the origin the runbook named.

httpx drops ``Authorization`` when a redirect leaves the origin but keeps every other header, so a
``X-Api-Key: {{ secrets.x }}`` would reach whatever host a server redirects to. Here a hop to another origin
(scheme, host or port: an https → http downgrade included) is sent without any header the step set, and a
body holding a secret is never resent to another origin.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import httpx

from runbook_http.guards import carries_secret, display_url
from runner.errors import HTTPStepError

if TYPE_CHECKING:
    from runbook_http.transport import Request
    from runner.secrets import Redactor

__all__ = ["MAX_REDIRECTS", "next_hop", "origin", "same_origin"]

MAX_REDIRECTS = 10
_BODY_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding"})
_NEUTRAL_HEADERS = {"Accept-Encoding": "identity"}  # what the step sends by itself, with nothing of the author's


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, the port filled in for http and https."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    return parsed.scheme, parsed.host.lower(), parsed.port or (443 if parsed.scheme == "https" else 80)


def same_origin(a: str | httpx.URL, b: str | httpx.URL) -> bool:
    """True if ``a`` and ``b`` have the same scheme, host and port."""
    return origin(a) == origin(b)


def _method_after(method: str, status: int) -> str:
    """The method of the next hop, as browsers and httpx do it (303 and 302 → GET, 301 turns POST into GET)."""
    if status in (302, 303) and method != "HEAD":
        return "GET"
    if status == 301 and method == "POST":
        return "GET"
    return method


def next_hop(first: Request, current: Request, status: int, location: str, redactor: Redactor) -> Request:
    """The request to send after ``current`` got a ``status`` redirect to ``location``.

    ``first`` is the request the step made: its headers go along only while the hop stays on its origin.
    """
    where = f"{current.method} {current.shown}"
    try:
        url = httpx.URL(current.url).join(location)
    except httpx.InvalidURL:
        raise HTTPStepError(f"{where}: HTTP {status} redirects to an invalid URL; not following it") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise HTTPStepError(f"{where}: HTTP {status} redirects to '{display_url(str(url), redactor)}'; only http:// "
                            "and https:// URLs with a host are followed")  # fmt: skip
    method = _method_after(current.method, status)
    content = current.content if method == current.method else None
    foreign = not same_origin(first.url, url)
    shown = display_url(str(url), redactor)
    if foreign and content is not None and carries_secret(redactor, [content.decode("utf-8", "replace")]):
        raise HTTPStepError(
            f"{where}: HTTP {status} redirects to another origin ({shown}) and would resend the body, which holds "
            "a secret; not following it",
            hint="call the final URL directly, or allow-list only the hosts this step may reach",
        )
    headers = dict(_NEUTRAL_HEADERS) if foreign else dict(first.headers)
    if content is None:
        headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    elif foreign:  # the body goes along (307, 308): keep its type, unless the author's value holds a secret
        kind = next((v for k, v in first.headers.items() if k.lower() == "content-type"), None)
        if kind is not None and not carries_secret(redactor, [kind]):
            headers["Content-Type"] = kind
    return replace(current, method=method, url=str(url), headers=headers, content=content, shown=shown)
