"""Redaction by derivation: whatever a template computes from a secret is masked like the secret.

A redactor that knows a secret's literal value and a few quoted forms misses everything else a template can make
of it: ``tojson`` (which escapes ``& < > '``), ``urlencode`` (which keeps ``/``), ``b64encode``, slicing,
case changes, ``replace``, concatenation... So a template that read a secret while rendering is rendered again,
a few times, with random *stand-ins* for the secrets it read (same length; every character replaced by a
different letter or digit, so no escape sequence of the real character survives in the stand-in's rendering).
The spans of the real result that differ from a stand-in rendering are what the secrets contributed; each
(of at least three characters) is added to the redactor of the run that resolved the secret, so it is masked in
every output, event, reason, journal row and log line from then on, and it counts as "carries a secret" for the
HTTP step's templated-host guard.

Limits (documented in docs/secrets.md): a derived piece shorter than three characters is not masked (it would
shred ordinary text); a property of a secret that the stand-in shares (its length) is not a span and shows;
what a step's own program derives from a secret (a script that reverses it) is outside any template.
"""

from __future__ import annotations

import bisect
import random
import string
from collections.abc import Callable, Iterator
from typing import Any

from runner.secrets import _MIN_LEN, READS, STANDINS

__all__ = ["render_tracked", "standin"]

SHADOWS = 3  # stand-in renderings; a span is masked if any of them differs there
_GAP = 3  # differing spans closer than this are one span (a stand-in character may coincide by chance)
_SAME = 4  # matching blocks shorter than this inside the differing middle are coincidences
_RNG = random.Random()  # stand-ins need to differ, not to be unguessable: they never leave the process


def standin(value: str) -> str:
    """A random string of ``value``'s length whose every character differs from ``value``'s at that position.

    Letters stay letters of the same case and digits stay digits (so numeric and case filters behave alike);
    every other character becomes a letter, so that the stand-in never shares an escape sequence
    (``\\u0026``, ``%2F``, ``&amp;``) with the value.
    """
    out = []
    for ch in value:
        if ch in string.ascii_lowercase:
            pool = string.ascii_lowercase
        elif ch in string.ascii_uppercase:
            pool = string.ascii_uppercase
        elif ch in string.digits:
            pool = string.digits
        else:
            pool = string.ascii_letters
        out.append(_RNG.choice(pool.replace(ch, "")))
    return "".join(out)


def render_tracked(render: Callable[[], Any]) -> Any:
    """``render()``; if it read secrets, register what it derived from them with their redactors.

    ``render`` must be repeatable (a template over the same context). A stand-in rendering that fails (the
    template parses the secret, say) makes every string in the result count as derived.
    """
    outer = READS.get()
    reads: list[Any] = []
    token = READS.set(reads)
    try:
        value = render()
    finally:
        READS.reset(token)
    if not reads:
        return value
    if outer is not None:
        outer.extend(reads)
    redactors = {id(r.redactor): r.redactor for r, _ in reads}
    for piece in _derived_pieces(render, value):
        for redactor in redactors.values():
            redactor.add(piece)
    return value


def _derived_pieces(render: Callable[[], Any], value: Any) -> set[str]:
    spans: dict[str, list[tuple[int, int]]] = {}  # per text of the real result: its differing spans
    leaves = list(_leaves(value))
    for _ in range(SHADOWS):
        table: dict[str, str] = {}
        token = STANDINS.set(lambda real, table=table: table.get(real) or table.setdefault(real, standin(real)))  # type: ignore[misc]
        try:
            shadow = render()
        except Exception:
            return {leaf for leaf in leaves if len(leaf) >= _MIN_LEN}
        finally:
            STANDINS.reset(token)
        for real, other in _pairs(value, shadow):
            if real is _RESHAPED:  # the secret changed the result's shape: every string in it is derived
                return {leaf for leaf in leaves if len(leaf) >= _MIN_LEN}
            spans.setdefault(real, []).extend(_differing(real, other))
    pieces: set[str] = set()
    for text, found in spans.items():
        for start, end in _merge(found):
            if end - start >= _MIN_LEN:
                pieces.add(text[start:end])
    return pieces


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(k)
            yield from _leaves(v)
    elif isinstance(value, list | tuple | set):
        for v in value:
            yield from _leaves(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _pairs(real: Any, shadow: Any) -> Iterator[tuple[str, str]]:
    """(real text, shadow text) to compare; a result of another shape is compared as its JSON text."""
    if isinstance(real, str) and isinstance(shadow, str):
        yield str(real), str(shadow)
    elif isinstance(real, dict) and isinstance(shadow, dict) and len(real) == len(shadow):
        for (rk, rv), (sk, sv) in zip(real.items(), shadow.items(), strict=True):
            yield from _pairs(rk, sk)
            yield from _pairs(rv, sv)
    elif isinstance(real, list | tuple) and isinstance(shadow, list | tuple) and len(real) == len(shadow):
        for rv, sv in zip(real, shadow, strict=True):
            yield from _pairs(rv, sv)
    elif isinstance(real, dict | list | tuple) or isinstance(shadow, dict | list | tuple):
        yield _RESHAPED, ""
    else:
        yield str(real), str(shadow)


_RESHAPED = "\0reshaped"  # a marker, compared by identity


def _differing(real: str, shadow: str) -> list[tuple[int, int]]:
    """Spans of ``real`` that ``shadow`` does not share (common prefix and suffix cut first: cheap and exact)."""
    if real == shadow:
        return []
    head = _common(real, shadow)
    tail = _common(real[head:][::-1], shadow[head:][::-1])
    mid_real, mid_shadow = real[head : len(real) - tail], shadow[head : len(shadow) - tail]
    return [(head + a, head + b) for a, b in _resync(mid_real, mid_shadow)]


def _resync(real: str, shadow: str) -> list[tuple[int, int]]:
    """Spans of ``real`` not shared with ``shadow``, walking both and re-aligning on the nearest common run.

    Only a run of :data:`_SAME` characters counts as shared text: a shorter match is a coincidence (a stand-in
    letter that occurs elsewhere), not a part the secret did not make. Linear in practice: each mismatch looks
    for the next common run through an index of the shadow's runs, so a long template costs what its length does.
    """
    index: dict[str, list[int]] = {}
    for k in range(len(shadow) - _SAME + 1):
        index.setdefault(shadow[k : k + _SAME], []).append(k)
    spans, i, j, aligned = [], 0, 0, False
    while i < len(real):
        if j < len(shadow) and real[i] == shadow[j] and (aligned or real[i : i + _SAME] == shadow[j : j + _SAME]):
            step = _common(real[i:], shadow[j:])  # the whole shared run at once
            i, j, aligned = i + step, j + step, True
            continue
        aligned = False
        start, found = i, None
        while i + _SAME <= len(real) and found is None:
            at = index.get(real[i : i + _SAME])
            if at:
                n = bisect.bisect_left(at, j)  # the nearest run of the shadow at or after where it stands
                found = at[n] if n < len(at) else None
            if found is None:
                i += 1
        if found is None:
            spans.append((start, len(real)))
            break
        if i > start:
            spans.append((start, i))
        i, j, aligned = i + _SAME, found + _SAME, True
    return spans


def _common(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b`` (bisection over slice comparisons: C speed, not a loop)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] < _GAP:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
