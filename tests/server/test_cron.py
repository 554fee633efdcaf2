"""The cron matcher: parsing, the next matching time, and slots in time zones across daylight-saving changes.

The jump-ahead search is checked against a minute-by-minute scan, and the time-zone slots against a scan of
real instants (each UTC minute whose local time matches, counted once when the local time repeats).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runbook_server.cron import MACROS, CronError, Slots, parse_cron, zone


@pytest.mark.parametrize(
    ("expr", "field", "expected"),
    [
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("5/20 * * * *", "minutes", (5, 25, 45)),
        ("1,2,10-12 * * * *", "minutes", (1, 2, 10, 11, 12)),
        ("0 8-18/2 * * *", "hours", (8, 10, 12, 14, 16, 18)),
        ("0 0 * jan,MAR-may *", "months", frozenset({1, 3, 4, 5})),
        ("0 0 * * mon-fri", "weekdays", frozenset({1, 2, 3, 4, 5})),
        ("0 0 * * 7", "weekdays", frozenset({0})),
        ("0 0 * * 0,7", "weekdays", frozenset({0})),
        ("0 0 * * */2", "weekdays", frozenset({0, 2, 4, 6})),
        ("0 0 L,1 * *", None, None),
    ],
    ids=[
        "step",
        "start-step",
        "list-range",
        "range-step",
        "month-names",
        "day-names",
        "seven-is-sunday",
        "zero-and-seven",
        "dow-step",
        "unsupported-L",
    ],
)
def test_fields(expr: str, field: str | None, expected: object) -> None:
    if field is None:
        with pytest.raises(CronError, match="day-of-month field 'L,1': 'l' in 'l' is not a number"):
            parse_cron(expr)
        return
    assert getattr(parse_cron(expr), field) == expected


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_macros_are_their_expressions(macro: str) -> None:
    assert replace(parse_cron(macro.upper()), expr="") == replace(parse_cron(MACROS[macro]), expr="")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @hourly, got 4"),
        ("0 * * * * *", "got 6 in '0 * * * * *' (seconds are not supported)"),
        ("", "got 0"),
        ("60 * * * *", "minute field '60': 60 is out of range 0-59"),
        ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
        ("* * * 13 *", "month field '13': 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week field '8': 8 is out of range 0-7"),
        ("* * * foo *", "month field 'foo': 'foo' in 'foo' is not a number (names: jan, feb"),
        ("* * * * mon-funday", "'funday' in 'mon-funday' is not a number (names: sun, mon"),
        ("30-10 * * * *", "minute field '30-10': the range '30-10' starts after it ends"),
        ("*/0 * * * *", "the step in '*/0' must be at least 1"),
        ("1,,2 * * * *", "minute field '1,,2': cannot read ''"),
        ("0 0 30 2 *", "never matches: no month in the month field has the days in the day-of-month field"),
        ("0 0 31 4,6,9,11 *", "never matches"),
        ("@reboot", "unknown macro '@reboot'; one of: @yearly"),
    ],
    ids=lambda v: v if len(v) < 24 else v[:24],
)
def test_invalid_expressions_say_which_field_and_what_was_expected(expr: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert message in str(info.value)


def test_a_day_matches_either_day_field_when_both_are_restricted() -> None:
    both = parse_cron("0 9 1,15 * mon")  # Vixie cron: the 1st, the 15th, and every Monday
    assert both.either_day
    assert both.matches(datetime(2026, 6, 1, 9, 0))  # a Monday and the 1st
    assert both.matches(datetime(2026, 6, 8, 9, 0))  # a Monday
    assert both.matches(datetime(2026, 6, 15, 9, 0))  # the 15th (a Monday too)
    assert both.matches(datetime(2026, 7, 1, 9, 0))  # the 1st, a Wednesday
    assert not both.matches(datetime(2026, 6, 9, 9, 0))  # a Tuesday, the 9th
    star = parse_cron("0 9 */10 * mon")  # a field that starts with '*' does not count as restricted: both must match
    assert not star.either_day
    assert star.matches(datetime(2026, 6, 1, 9, 0)) and not star.matches(datetime(2026, 6, 8, 9, 0))
    assert parse_cron("0 0 29 2 *").next_after(datetime(2026, 1, 1)) == datetime(2028, 2, 29)


def _scan(expr: str, start: datetime, minutes: int) -> datetime | None:
    cron = parse_cron(expr)
    t = start.replace(second=0, microsecond=0)
    for _ in range(minutes):
        t += timedelta(minutes=1)
        if cron.matches(t):
            return t
    return None


FIELD = st.one_of(
    st.just("*"),
    st.integers(1, 30).map(lambda s: f"*/{s}"),
    st.lists(st.integers(0, 59), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
    st.tuples(st.integers(0, 59), st.integers(0, 59), st.integers(1, 9)).map(lambda t: f"{min(t[:2])}-{max(t[:2])}/{t[2]}"),
)


def _clip(field: str, high: int, low: int = 0) -> str:
    def one(part: str) -> str:
        rng, _, step = part.partition("/")
        if rng == "*":
            return part
        nums = [min(max(int(n), low), high) for n in rng.split("-")]
        return "-".join(map(str, nums)) + (f"/{step}" if step else "")

    return ",".join(one(p) for p in field.split(","))


@settings(max_examples=80, deadline=None)
@given(minute=FIELD, hour=FIELD, dom=FIELD, month=FIELD, dow=FIELD, start=st.datetimes(datetime(2020, 1, 1), datetime(2035, 1, 1)))
def test_next_after_is_the_first_matching_minute(minute: str, hour: str, dom: str, month: str, dow: str, start: datetime) -> None:
    expr = " ".join([_clip(minute, 59), _clip(hour, 23), _clip(dom, 31, 1), _clip(month, 12, 1), _clip(dow, 7)])
    try:
        cron = parse_cron(expr)
    except CronError as exc:
        assert "never matches" in str(exc)
        return
    found = cron.next_after(start)
    window = 24 * 60 * 20
    expected = _scan(expr, start, window)
    if expected is None:
        assert found is None or found > start + timedelta(minutes=window)
    else:
        assert found == expected


# ---------------------------------------------------------------------- time zones

ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
DST_DAYS = [datetime(2026, 3, 29), datetime(2026, 10, 25), datetime(2026, 3, 8), datetime(2026, 11, 1), datetime(2026, 4, 5),
            datetime(2026, 10, 4)]  # fmt: skip


def _instants(expr: str, tz: str, start: datetime, hours: int) -> list[datetime]:
    """Reference: every UTC minute whose local wall time matches, once per wall time (its first occurrence)."""
    cron, zi = parse_cron(expr), ZoneInfo(tz)
    out = []
    for m in range(1, hours * 60 + 1):
        u = start + timedelta(minutes=m)
        wall = u.astimezone(zi)
        if wall.fold == 0 and cron.matches(wall.replace(tzinfo=None)):
            out.append(u)
    return out


@settings(max_examples=60, deadline=None)
@given(expr=st.sampled_from(["*/7 * * * *", "30 2 * * *", "0,30 1-3 * * *", "15 * * * *", "45 0-4/2 * * sun", "@daily"]),
       tz=st.sampled_from(ZONES), day=st.sampled_from(DST_DAYS), offset=st.integers(-30 * 60, 30 * 60))  # fmt: skip
def test_slots_match_a_scan_of_real_instants(expr: str, tz: str, day: datetime, offset: int) -> None:
    start = day.replace(tzinfo=UTC) + timedelta(minutes=offset) - timedelta(hours=14)
    slots = Slots(parse_cron(expr), zone(tz))
    assert list(slots.between(start, start + timedelta(hours=48))) == _instants(expr, tz, start, 48)


def test_a_local_time_that_does_not_exist_is_no_slot_and_a_repeated_one_is_one_slot() -> None:
    paris = Slots(parse_cron("30 2 * * *"), ZoneInfo("Europe/Paris"))
    spring = [
        s.astimezone(paris.tz).isoformat() for s in paris.between(datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    ]
    assert spring == ["2026-03-27T02:30:00+01:00", "2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00"]  # no 29 March
    autumn = [
        s.astimezone(paris.tz).isoformat() for s in paris.between(datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC))
    ]
    assert autumn == ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]  # once, the first
    every20 = Slots(parse_cron("*/20 * * * *"), ZoneInfo("Europe/Paris"))
    back = [s.isoformat() for s in every20.between(datetime(2026, 10, 24, 23, 30, tzinfo=UTC), datetime(2026, 10, 25, 2, 0, tzinfo=UTC))]
    # 02:00-02:59 happens twice (00:00-00:59Z and 01:00-01:59Z): its times fire in the first pass only
    assert back == ["2026-10-24T23:40:00+00:00", "2026-10-25T00:00:00+00:00", "2026-10-25T00:20:00+00:00", "2026-10-25T00:40:00+00:00",
                    "2026-10-25T02:00:00+00:00"]  # fmt: skip


def test_next_after_from_inside_the_repeated_hour() -> None:
    paris = Slots(parse_cron("*/20 * * * *"), ZoneInfo("Europe/Paris"))
    second_pass = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10+01:00, the second 02:10
    assert paris.next_after(second_pass) == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)  # 03:00+01:00


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", ""])
def test_unknown_time_zones(name: str) -> None:
    with pytest.raises(CronError, match=r"unknown time zone .*expected an IANA name such as UTC or Europe/Paris"):
        zone(name)
