"""Shared verification helpers: constant-time comparisons over the raw body, replay windows.

Every comparison runs over all candidates without an early exit, so the time taken does not
tell which secret (or how much of one) matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from runner.alerts import AuthError

__all__ = ["check_basic", "check_bearer", "check_timestamp", "header", "hex_hmac", "matches_any"]


def hex_hmac(secret: str, message: bytes) -> str:
    """``hex(HMAC-SHA256(secret, message))``."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def matches_any(offered: Sequence[str], expected: Sequence[str]) -> bool:
    """True if any offered value equals any expected value (constant work per request)."""
    ok = False
    for e in expected:
        for o in offered:
            ok |= hmac.compare_digest(e.encode(), o.encode())
    return ok


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name`` (headers are given with lower-case names)."""
    value = headers.get(name.lower())
    return value.strip() if isinstance(value, str) else None


def check_bearer(headers: Mapping[str, str], tokens: Sequence[str], *, what: str) -> bool:
    """True if ``Authorization: Bearer T`` carries one of ``tokens``; raises 401 without an Authorization header."""
    auth = header(headers, "authorization")
    if not auth:
        raise AuthError(f"{what}: missing Authorization header", status=401)
    scheme, _, value = auth.partition(" ")
    return scheme.lower() == "bearer" and matches_any([value.strip()], tokens)


def check_basic(headers: Mapping[str, str], username: str, password: str, *, what: str) -> bool:
    """True if ``Authorization: Basic`` carries ``username:password``."""
    auth = header(headers, "authorization")
    if not auth:
        raise AuthError(f"{what}: missing Authorization header", status=401)
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return matches_any([decoded], [f"{username}:{password}"])


def check_timestamp(value: str | None, max_skew: float, *, what: str, header_name: str) -> int:
    """The signed timestamp (unix seconds) if it is within ``max_skew`` of now; else a 401 naming why."""
    if not value:
        raise AuthError(f"{what}: missing {header_name} header", status=401)
    try:
        ts = int(value)
    except ValueError:
        raise AuthError(f"{what}: {header_name} is not unix seconds", status=401) from None
    skew = abs(time.time() - ts)
    if skew > max_skew:
        raise AuthError(f"{what}: timestamp is {skew:.0f}s away from now (replay window {max_skew:.0f}s); refusing a replayed "
                        "or delayed delivery", status=401, hint="check the sender's clock")  # fmt: skip
    return ts
