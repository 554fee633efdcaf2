"""Cron expressions: the standard five fields, macros, and the slots they name in a time zone.

Syntax (Vixie cron's, which most tools follow)::

    ┌ minute        0-59
    │ ┌ hour        0-23
    │ │ ┌ day of month 1-31
    │ │ │ ┌ month    1-12 or jan-dec
    │ │ │ │ ┌ day of week 0-7 or sun-sat (0 and 7 are Sunday)
    * * * * *

Each field is a comma-separated list of ``*``, ``N``, ``A-B``, with an optional ``/STEP`` (``*/15``,
``8-18/2``, ``5/10`` = ``5-59/10``); names are case-insensitive and may form ranges (``mon-fri``). When
both day fields are restricted (neither starts with ``*``) a day matches if *either* matches, as in Vixie
cron (``0 0 1,15 * mon``: the 1st, the 15th and every Monday). Macros: ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``.

A cron expression names local wall-clock times; :class:`Slots` turns them into instants in a time zone:
a local time that does not exist (the hour skipped when clocks go forward) is no slot, and a local time
that exists twice (the hour repeated when clocks go back) is one slot, at its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

__all__ = ["MACROS", "Cron", "CronError", "Slots", "parse_cron", "zone"]

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip
_MONTHS = {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day-of-month", 1, 31, {}), ("month", 1, 12, _MONTHS),
           ("day-of-week", 0, 7, _DAYS))  # fmt: skip
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: 29 in leap years
_SEARCH_YEARS = 14  # what an expression names recurs within this (the 1st of a month on a given weekday: at most 12 years apart)
_ITEM = re.compile(r"(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>[0-9]+))?")


class CronError(ValueError):
    """A cron expression that is not valid; the message names the field and what was expected."""


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the values each field allows (day of week: 0 = Sunday … 6)."""

    expr: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    either_day: bool
    """Both day fields are restricted: a day matches if either matches (Vixie cron)."""

    def day_matches(self, day: datetime) -> bool:
        """True if the date of ``day`` is one the expression allows."""
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        return (dom or dow) if self.either_day else (dom and dow)

    def matches(self, wall: datetime) -> bool:
        """True if the wall-clock time ``wall`` (its minute) is one the expression names."""
        return wall.month in self.months and self.day_matches(wall) and wall.hour in self.hours and wall.minute in self.minutes

    def next_after(self, wall: datetime) -> datetime | None:
        """The first wall-clock time (naive, whole minute) strictly after ``wall`` that matches; None if none within 14 years."""
        t = wall.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        limit = t.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = datetime(t.year + t.month // 12, t.month % 12 + 1, 1)
            elif not self.day_matches(t):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            elif t.hour not in self.hours:
                later = [h for h in self.hours if h > t.hour]
                t = t.replace(hour=later[0], minute=0) if later else datetime(t.year, t.month, t.day) + timedelta(days=1)
            elif t.minute not in self.minutes:
                later = [m for m in self.minutes if m > t.minute]
                t = t.replace(minute=later[0]) if later else t.replace(minute=0) + timedelta(hours=1)
            else:
                return t
        return None


def parse_cron(text: str) -> Cron:
    """Parse a five-field expression or a macro; raises :class:`CronError` naming the field at fault."""
    if not isinstance(text, str):
        raise CronError(f"expected a cron expression such as '*/5 * * * *', got {type(text).__name__}")
    expr = " ".join(text.split())
    fields = MACROS.get(expr.lower(), expr).split(" ")
    if expr.startswith("@") and expr.lower() not in MACROS:
        raise CronError(f"unknown macro {expr!r}; one of: {', '.join(MACROS)}")
    if len(fields) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @hourly, "
                        f"got {len(fields) if expr else 0} in {text!r}{' (seconds are not supported)' if len(fields) == 6 else ''}")  # fmt: skip
    sets = [_field(value, *spec) for value, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    cron = Cron(expr, tuple(sorted(sets[0])), tuple(sorted(sets[1])), frozenset(sets[2]), frozenset(sets[3]), weekdays,
                either_day=not fields[2].startswith("*") and not fields[4].startswith("*"))  # fmt: skip
    if not cron.either_day and not any(d <= _MONTH_DAYS[m - 1] for m in cron.months for d in cron.days):
        raise CronError(f"{text!r} never matches: no month in the month field has the days in the day-of-month field")
    if cron.next_after(datetime(2000, 1, 1)) is None:
        raise CronError(f"{text!r} never matches: no day has both the day of month and the day of week it names")
    return cron


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    out: set[int] = set()
    for item in text.lower().split(","):
        m = _ITEM.fullmatch(item)
        if not m:
            raise CronError(f"{name} field {text!r}: cannot read {item!r}; expected *, N, A-B, */S or A-B/S ({low}-{high}"
                            f"{', or names such as ' + next(iter(names)) if names else ''})")  # fmt: skip
        step = int(m.group("step")) if m.group("step") is not None else 1
        if step < 1:
            raise CronError(f"{name} field {text!r}: the step in {item!r} must be at least 1")
        part = m.group("range")
        if part == "*":
            start, end = low, high if name != "day-of-week" else 6
        elif "-" in part:
            start, end = (_value(p, item, text, name, low, high, names) for p in part.split("-"))
            if start > end:
                raise CronError(f"{name} field {text!r}: the range {item!r} starts after it ends")
        else:
            start = _value(part, item, text, name, low, high, names)
            end = high if m.group("step") is not None else start  # "5/10": from 5 to the end, every 10
        out.update(range(start, end + 1, step))
    return out


def _value(token: str, item: str, text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if token in names:
        return names[token]
    if not token.isdigit():
        hint = f" (names: {', '.join(names)})" if names else ""
        raise CronError(f"{name} field {text!r}: {token!r} in {item!r} is not a number{hint}")
    value = int(token)
    if not low <= value <= high:
        raise CronError(f"{name} field {text!r}: {value} is out of range {low}-{high}")
    return value


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Paris``); raises :class:`CronError` if it is unknown."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}; expected an IANA name such as UTC or Europe/Paris "
                        "(a system without a time zone database needs `pip install tzdata`)") from None  # fmt: skip


@dataclass(frozen=True)
class Slots:
    """The instants (aware, UTC) a cron expression names in time zone ``tz``.

    Wall-clock times that do not exist in ``tz`` (clocks going forward) are no slot; wall-clock times that
    exist twice (clocks going back) are one slot, at their first occurrence.
    """

    cron: Cron
    tz: tzinfo

    def next_after(self, instant: datetime) -> datetime | None:
        """The first slot strictly after ``instant`` (aware), as an aware UTC datetime; None if there is none."""
        wall = self.cron.next_after(instant.astimezone(self.tz).replace(tzinfo=None))
        while wall is not None:
            first = wall.replace(tzinfo=self.tz, fold=0)
            utc = first.astimezone(UTC)
            exists = utc.astimezone(self.tz).replace(tzinfo=None) == wall  # else clocks went forward over it
            if exists and utc > instant:  # not after ``instant``: ``instant`` is in a repeated hour's second pass
                return utc
            wall = self.cron.next_after(wall)
        return None

    def between(self, after: datetime, until: datetime, *, limit: int = 100_000) -> Iterator[datetime]:
        """Slots in ``(after, until]``, oldest first (at most ``limit``)."""
        t = after
        for _ in range(limit):
            nxt = self.next_after(t)
            if nxt is None or nxt > until:
                return
            yield nxt
            t = nxt
