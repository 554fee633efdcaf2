"""Compact JSON text for the stores' hot path: one C encoder, built once per process."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["compact_encoder"]


def compact_encoder() -> Callable[[Any], str]:
    """Compact JSON (``default=str``, UTF-8 kept) through one C encoder built once.

    ``json.dumps`` with options, and ``JSONEncoder.encode``, build a new encoder per call: a third of the cost
    of the small documents a commit writes. The shared encoder keeps no circular-reference markers (a marker
    dict would be shared between threads); a cyclic value ends in ``RecursionError`` instead of ``ValueError``.
    """
    from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

    if c_make_encoder is None:  # an interpreter without the C accelerator
        encode: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
    else:
        chunks = c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
        join = "".join

        def encode(value: Any) -> str:
            return join(chunks(value, 0))

    def encode_text(value: Any) -> str:
        text = encode(value)
        return text if text.isascii() else utf8_safe(text)

    return encode_text


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """JSON ``text`` a store can write as UTF-8: a lone surrogate (a Python step's output holding a file name that
    is not UTF-8) becomes the six characters of its escape, shown as text (``\\udcff``), not a value that fails the
    journal's write and leaves the step's record behind."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", text)
    return text
