"""Compact JSON text for the stores' hot path: one C encoder, built once per process."""

from __future__ import annotations

import json
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
        return json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
    chunks = c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
    join = "".join
    return lambda value: join(chunks(value, 0))
