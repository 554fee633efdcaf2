"""Values as PostgreSQL stores them: JSON as ``jsonb``, text without NUL, times from the server's clock."""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb

from runner.store.jsontext import compact_encoder
from runner.store.records import JSONText

__all__ = ["NOW", "json_text", "jsonb", "text"]

NOW = "extract(epoch FROM now())::float8"
"""The database's clock in epoch seconds (constant within a transaction): one clock for every host."""

_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def _scrub(value: Any) -> Any:
    """``value`` with NUL characters replaced: PostgreSQL's text and jsonb cannot hold them."""
    if isinstance(value, str):
        return value.replace(_NUL, _REPLACEMENT)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


_encode = compact_encoder()


def json_text(value: Any) -> str:
    """``value`` as JSON text for a ``%s::jsonb`` parameter (one string, the cheapest thing psycopg sends)."""
    out = _encode(value)
    if "\\u0000" in out:  # rare (a step's output with a NUL byte): scrub, then dump again
        out = json.dumps(_scrub(value), separators=(",", ":"), default=lambda o: _scrub(str(o)), ensure_ascii=False)
    return out


def jsonb(value: Any) -> Jsonb | None:
    """``value`` as a ``jsonb`` parameter (None stays SQL NULL), dumped like the SQLite store dumps JSON; a
    :class:`~runner.store.records.JSONText` (already encoded) is sent as it is."""
    if isinstance(value, JSONText):
        return Jsonb(str(value), dumps=_raw)
    return None if value is None else Jsonb(value, dumps=json_text)


def _raw(text: str) -> str:
    """Encoded JSON as it is, unless it holds an escaped NUL (jsonb refuses it): then scrubbed like any value."""
    return json_text(json.loads(text)) if "\\u0000" in text else str(text)


def text(value: str | None) -> str | None:
    """A free-text value (a reason, which may quote a command's output) without NUL characters."""
    return value.replace(_NUL, _REPLACEMENT) if value and _NUL in value else value
