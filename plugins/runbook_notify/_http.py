"""Posting a JSON body for the HTTP notifiers (``webhook``, ``slack``): one request, errors mapped to NotifyError.

No redirects are followed (a notification must reach the configured URL, and its headers must not travel to
another origin), the environment's proxy settings are not used (``proxy:`` says which one, if any), and the
receiver's answer decides whether trying again may help: 408, 429 and 5xx (and network errors) are retried,
any other refusal is final until the configuration changes.
"""

from __future__ import annotations

import ssl
from typing import Any

from pydantic import BaseModel, Field, field_validator

from runner.errors import NotifyError

__all__ = ["HttpOptions", "post"]

_RETRYABLE = {408, 425, 429}


class HttpOptions(BaseModel):
    """Transport settings shared by the HTTP notifiers."""

    ca_file: str | None = Field(default=None, description="PEM bundle of the CAs to trust (default: the system's)")
    proxy: str | None = Field(default=None, description="proxy URL, e.g. http://proxy.internal:3128 (default: none)")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "socks5://")):
            raise ValueError(f"{value!r} is not a proxy URL (http://, https:// or socks5://)")
        return value


def _verify(options: HttpOptions) -> ssl.SSLContext | bool:
    if options.ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=options.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise NotifyError(f"ca_file '{options.ca_file}' cannot be used: {exc}", retryable=False) from None


def post(url: str, body: bytes, headers: dict[str, str], options: HttpOptions, timeout: float, *, expect: str | None = None) -> str:
    """POST ``body`` to ``url``; the detail of a 2xx answer (``HTTP 200``), else :class:`NotifyError`.

    ``expect``: a body a 2xx answer must have (Slack answers ``ok``); another body is a refusal.
    The URL is never part of an error (a chat webhook URL is a credential).
    """
    import httpx

    if not url.startswith(("http://", "https://")):
        raise NotifyError("the URL is not an http:// or https:// URL", retryable=False)
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, verify=_verify(options), trust_env=False,
                          proxy=options.proxy) as client:  # fmt: skip
            response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise NotifyError(f"no answer within {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise NotifyError(f"cannot reach the receiver: {type(exc).__name__}{_reason(exc)}") from None
    return _judge(response, expect)


def _reason(exc: Exception) -> str:
    """The cause of a transport error, without the URL httpx puts in some messages."""
    cause: Any = exc.__context__ or exc
    text = str(cause).split(" for url", 1)[0]
    return f" ({text})" if text and "://" not in text else ""


def _judge(response: Any, expect: str | None) -> str:
    status, text = response.status_code, response.text.strip()[:200]
    if 200 <= status < 300:
        if expect is not None and text != expect:
            raise NotifyError(f"HTTP {status} but the receiver answered {text!r}, not {expect!r}", retryable=False)
        return f"HTTP {status}"
    said = f": {text}" if text else ""
    if 300 <= status < 400:
        raise NotifyError(f"HTTP {status} redirect, not followed; configure the final URL", retryable=False)
    raise NotifyError(f"HTTP {status}{said}", retryable=status >= 500 or status in _RETRYABLE)
