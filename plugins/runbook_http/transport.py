"""Sending one HTTP request with httpx: bounded in time and size, retried when asked, errors translated.

Imported only when an ``http`` action runs (httpx costs ~160 ms to import).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from runbook_http.guards import (
    HostPolicy,
    carries_secret,
    display_url,
    parse_retry_after,
    refuse_secret_in_url,
    refuse_secret_to_templated_host,
)  # fmt: skip
from runbook_http.redirects import MAX_REDIRECTS, next_hop
from runner.errors import HTTPStepError

if TYPE_CHECKING:
    from runbook_http.config import HttpConfig, HttpRetry
    from runner.context import Context

__all__ = ["Request", "Response", "map_httpx_errors", "send"]

_CHUNK = 64 * 1024
_STEP_SLACK = 0.1  # a timeout this close to the step's deadline was the step's timeout
# Worth another try: the request may not have reached the server, or the server dropped it.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout,
              httpx.PoolTimeout)  # fmt: skip
_TIMEOUT_WHAT = {
    httpx.ConnectTimeout: "connecting",
    httpx.ReadTimeout: "waiting for the response",
    httpx.WriteTimeout: "sending the request",
    httpx.PoolTimeout: "waiting for a free connection",
}


@dataclass
class Request:
    """A request ready to send: concrete values, secrets already rendered in."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None
    shown: str  # the URL as messages may show it


@dataclass
class Response:
    """What came back, with at most ``cap`` bytes of body."""

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool
    encoding: str
    url: str


@contextmanager
def map_httpx_errors(method: str, shown_url: str, timeouts: tuple[float, float], ctx: Context) -> Iterator[None]:
    """Turn httpx exceptions into :class:`HTTPStepError` naming method and (redacted) URL.

    ``timeouts`` are the configured (connect, read) limits; when the step's own timeout ran out first,
    the message says so instead.
    """
    where = f"{method} {shown_url}"
    redact = ctx.redactor.text
    try:
        yield
    except httpx.TimeoutException as exc:
        what = _TIMEOUT_WHAT.get(type(exc), "waiting")
        if ctx.timeout is not None and (ctx.remaining() or 0.0) < _STEP_SLACK:
            raise HTTPStepError(f"{where}: timed out {what}: the step's timeout of {ctx.timeout:g}s ran out") from None
        limit = timeouts[0] if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else timeouts[1]
        raise HTTPStepError(f"{where}: timed out after {limit:g}s {what}",
                            hint="raise the step's `timeout` if the server is just slow") from None  # fmt: skip
    except httpx.ConnectError as exc:
        text = redact(str(exc) or type(exc).__name__)
        hint = "pass `ca_bundle` (or, for a test server only, `verify_tls: false`)" if "CERTIFICATE" in text.upper() else None
        raise HTTPStepError(f"{where}: cannot connect ({text})", hint=hint) from None
    except httpx.TooManyRedirects:
        raise HTTPStepError(f"{where}: too many redirects") from None
    except httpx.LocalProtocolError:  # its text may quote a header value, i.e. a secret: say what, not what was sent
        raise HTTPStepError(
            f"{where}: the request is invalid (a header name or value holds a newline or other forbidden character)"
        ) from None
    except httpx.UnsupportedProtocol:
        raise HTTPStepError(f"{where}: unsupported URL scheme; use http:// or https://") from None
    except httpx.DecodingError as exc:
        raise HTTPStepError(f"{where}: cannot decode the response body ({redact(str(exc))})") from None
    except httpx.HTTPError as exc:
        raise HTTPStepError(f"{where}: {type(exc).__name__}: {redact(str(exc))}") from None
    except httpx.InvalidURL as exc:
        raise HTTPStepError(f"{where}: invalid URL ({redact(str(exc))})") from None
    except UnicodeEncodeError:
        raise HTTPStepError(f"{where}: a header value is not ASCII; encode it (e.g. base64) first") from None


def _client(config: HttpConfig, policy: HostPolicy, ctx: Context) -> httpx.Client:
    def check_host(request: httpx.Request) -> None:  # runs for every request, redirects included
        policy.check(request.method, request.url.scheme, request.url.host, request.url.port, display_url(str(request.url), ctx.redactor))

    # Redirects are followed by _once, not httpx: httpx would send our custom headers to any origin.
    return httpx.Client(
        timeout=_timeout(config, ctx), follow_redirects=False, verify=_verify(config), trust_env=False,
        event_hooks={"request": [check_host]},
    )  # fmt: skip


def _timeout(config: HttpConfig, ctx: Context) -> httpx.Timeout:
    """The configured timeouts, shortened to what is left of the step's own timeout (asked anew for each try)."""
    connect, read = config.timeouts()
    left = ctx.remaining()
    if left is not None:
        left = max(left, 0.05)
        connect, read = min(connect, left), min(read, left)
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def _verify(config: HttpConfig) -> ssl.SSLContext | bool:
    if not config.verify_tls:
        return False
    if config.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=config.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise HTTPStepError(f"ca_bundle '{config.ca_bundle}' cannot be used: {exc}") from None


def final_url(url: str, query: dict[str, Any]) -> str:
    """``url`` with ``query`` merged in (lists repeat the key)."""
    if not query:
        return str(httpx.URL(url))
    return str(httpx.URL(url).copy_merge_params({k: _query_value(v) for k, v in query.items()}))


def _query_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_query_value(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def send(config: HttpConfig, request: Request, ctx: Context) -> tuple[Response, float]:
    """Send ``request`` (retrying as ``config.retry_on`` says); (response, seconds taken)."""
    refuse_secret_in_url(request.method, request.url, ctx.redactor)
    policy = HostPolicy(config.allowed_hosts)
    if carries_secret(ctx.redactor, _texts(request)):
        refuse_secret_to_templated_host(request.method, request.url, ctx.raw_config, policy, ctx.redactor)
    started = time.monotonic()
    with map_httpx_errors(request.method, request.shown, config.timeouts(), ctx):
        u = httpx.URL(request.url)
        policy.check(request.method, u.scheme, u.host, u.port, request.shown)  # before any connection is made
        with _client(config, policy, ctx) as client:
            response = _with_retries(client, config, request, ctx)
    return response, time.monotonic() - started


def _texts(request: Request) -> list[str]:
    """Everything of ``request`` that goes on the wire as text: URL, header names and values, body."""
    body = request.content.decode("utf-8", "replace") if request.content else ""
    return [request.url, body, *request.headers, *request.headers.values()]


def _with_retries(client: httpx.Client, config: HttpConfig, request: Request, ctx: Context) -> Response:
    retry: HttpRetry | None = config.retry_on
    attempts = retry.attempts if retry is not None else 1
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        try:
            response = _once(client, request, config, ctx)
        except _RETRYABLE as exc:
            if last or retry is None or not _pause(ctx, retry, attempt, None, f"{type(exc).__name__} on {request.method} {request.shown}"):
                raise
            continue
        if last or retry is None or response.status not in retry.statuses:
            return response
        wait_for = parse_retry_after(response.headers.get("retry-after"))
        if not _pause(ctx, retry, attempt, wait_for, f"HTTP {response.status} from {request.method} {request.shown}"):
            return response
    raise AssertionError("unreachable: the last attempt returns or raises")


def _pause(ctx: Context, retry: HttpRetry, attempt: int, retry_after: float | None, why: str) -> bool:
    """Wait before retry ``attempt + 1``; False if the step's time would run out first."""
    delay = retry.delay * retry.backoff ** (attempt - 1) if retry_after is None else retry_after
    delay = min(delay, retry.max_delay)
    left = ctx.remaining()
    if left is not None and delay >= left:
        return False
    ctx.log(f"{why}; retry {attempt} of {retry.attempts - 1} in {delay:g}s")
    ctx.sleep(delay)
    return True


def _once(client: httpx.Client, request: Request, config: HttpConfig, ctx: Context) -> Response:
    """One request, and its redirects when ``follow_redirects`` (the step's headers stay on its own origin)."""
    hop = request
    for _ in range(MAX_REDIRECTS + 1):
        ctx.raise_if_cancelled()
        if hop is not request and ctx.remaining() == 0.0:
            raise HTTPStepError(f"{request.method} {request.shown}: the step's timeout ran out while following redirects")
        stream = client.stream(hop.method, hop.url, headers=hop.headers, content=hop.content, timeout=_timeout(config, ctx))
        with stream as resp:
            if not (config.follow_redirects and resp.is_redirect):
                return _read(resp, hop, config, ctx)
            status, location = resp.status_code, resp.headers["location"]  # the redirect's body is never read
        hop = next_hop(request, hop, status, location, ctx.redactor)
    raise HTTPStepError(f"{request.method} {request.shown}: more than {MAX_REDIRECTS} redirects; not following any further")


def _read(resp: httpx.Response, request: Request, config: HttpConfig, ctx: Context) -> Response:
    """Read at most ``max_response_bytes`` of body, then stop reading."""
    cap = config.max_response_bytes
    chunks: list[bytes] = []
    size, truncated = 0, False
    for chunk in resp.iter_bytes(_CHUNK):
        ctx.raise_if_cancelled()
        if ctx.remaining() == 0.0:  # a server trickling bytes must not outlive the step's timeout
            raise HTTPStepError(f"{request.method} {request.shown}: the step's timeout ran out while reading the response")
        room = cap - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    return Response(
        status=resp.status_code, headers=dict(resp.headers.items()), body=b"".join(chunks), truncated=truncated,
        encoding=resp.charset_encoding or "utf-8", url=str(resp.url),
    )  # fmt: skip
