"""Durations as runbooks write them: ``90s``, ``1m30s``, ``2h``, ``500ms`` or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

__all__ = ["Duration", "format_duration", "parse_duration", "parse_time"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(value: Any) -> float:
    """Return seconds for ``value``; raise ``ValueError`` naming what was expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30s', '5m' or '1h30m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            if not _WHOLE.fullmatch(text):
                raise ValueError(f"expected a duration such as '30s', '5m', '1h30m' or '500ms', got {value!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        if seconds < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return seconds
    raise ValueError(f"expected a duration such as '30s', got {type(value).__name__}")


def parse_time(value: str, *, now: float | None = None) -> float:
    """Epoch seconds of a point in time: a duration ago (``2h``, ``1d12h``, ``90``), or an ISO 8601 date or time
    (``2026-12-07``, ``2026-12-07T13:00``, ``2026-12-07 13:00:00Z``, ``...+01:00``; without a zone, local time).

    Raises ``ValueError`` naming the accepted forms.
    """
    import time
    from datetime import datetime

    text = value.strip()
    try:
        return (time.time() if now is None else now) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(
            f"expected a duration ago such as '2h' or '1d', or an ISO 8601 date or time such as '2026-12-07' or "
            f"'2026-12-07T13:00:00Z', got {value!r}"
        ) from None
    return moment.timestamp()  # a naive time is local time, as `date` shows it


def format_duration(seconds: float) -> str:
    """Short human form: ``850ms``, ``12.3s``, ``4m05s``, ``2h10m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _validate(value: Any) -> float:
    return parse_duration(value)


def _duration_type() -> Any:
    from pydantic import BeforeValidator, WithJsonSchema

    schema = {
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)\s*)+$|^\d+(\.\d+)?$"},
        ],
        "description": "Duration: seconds, or e.g. '30s', '5m', '1h30m', '500ms'",
    }
    return Annotated[float, BeforeValidator(_validate), WithJsonSchema(schema)]


Duration = _duration_type()
"""Pydantic field type: accepts seconds or a duration string, stores float seconds."""
