"""Fire-time computation: the interval grid, cron across daylight-saving changes, catch-up plans.

The property tests compare the day-by-day cron iterators with a brute-force reference
that walks every UTC minute and applies the documented rule to the local time it shows.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskservice.scheduler.cron import CronExpression, InvalidScheduleError, parse_cron
from taskservice.scheduler.timing import (
    ScheduleTiming,
    format_fire_time,
    next_fire_times,
    parse_time_zone,
    plan_fires,
)

ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "Pacific/Chatham"]
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron_timing(text: str, zone: str, start: datetime = utc(2020, 1, 1)) -> ScheduleTiming:
    return ScheduleTiming(start=start, cron=parse_cron(text), zone=ZoneInfo(zone))


def take(iterator, count: int) -> list[datetime]:  # type: ignore[no-untyped-def]
    return list(islice(iterator, count))


def between(timing: ScheduleTiming, first: datetime, end: datetime) -> list[datetime]:
    """Return fire times in [first, end)."""
    result = []
    for fire_time in timing.fire_times_after(first, inclusive=True):
        if fire_time >= end:
            break
        result.append(fire_time)
    return result


# Interval grid --------------------------------------------------------------------------


def test_interval_grid_has_no_drift() -> None:
    start = datetime(2027, 3, 13, 5, 0, 0, 123456, tzinfo=UTC)
    timing = ScheduleTiming(start=start, interval_s=3600)
    fires = take(timing.fire_times_after(start, inclusive=True), 10_000)
    assert fires[0] == start
    assert fires[-1] == start + timedelta(hours=9_999)
    assert {later - earlier for earlier, later in zip(fires, fires[1:])} == {timedelta(hours=1)}


def test_interval_next_after_instant() -> None:
    timing = ScheduleTiming(start=utc(2027, 1, 1), interval_s=90)
    assert take(timing.fire_times_after(utc(2027, 1, 1, 0, 3)), 2) == [utc(2027, 1, 1, 0, 4, 30), utc(2027, 1, 1, 0, 6)]
    assert take(timing.fire_times_after(utc(2027, 1, 1, 0, 3), inclusive=True), 1) == [utc(2027, 1, 1, 0, 3)]
    assert take(timing.fire_times_after(utc(2026, 1, 1)), 1) == [utc(2027, 1, 1)], "nothing fires before start"
    assert take(timing.fire_times_before(utc(2027, 1, 1, 0, 3)), 3) == [
        utc(2027, 1, 1, 0, 3), utc(2027, 1, 1, 0, 1, 30), utc(2027, 1, 1)]


def test_interval_counts_real_seconds_across_dst() -> None:
    """23 and 25 fires on New York's 23- and 25-hour days, whatever the zone of the start time."""
    new_york = ZoneInfo("America/New_York")
    start = datetime(2027, 1, 1, tzinfo=new_york)
    timing = ScheduleTiming(start=start, interval_s=3600)
    for day, hours in ((date(2027, 3, 14), 23), (date(2027, 11, 7), 25)):
        first = datetime.combine(day, datetime.min.time(), tzinfo=new_york)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=new_york)
        assert len(between(timing, first, end)) == hours


@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    interval_s=st.integers(min_value=1, max_value=10 * 365 * 86_400),
    offset_s=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
)
def test_interval_properties(start: datetime, interval_s: int, offset_s: float) -> None:
    timing = ScheduleTiming(start=start, interval_s=interval_s)
    after = start + timedelta(seconds=offset_s)
    following = take(timing.fire_times_after(after), 3)
    assert following[0] > after
    assert following[0] >= start
    for fire_time in following:
        steps, remainder = divmod(fire_time - start, timedelta(seconds=interval_s))
        assert remainder == timedelta(0)
        assert steps >= 0
    assert following == sorted(set(following))
    previous = next(timing.fire_times_before(after, inclusive=True), None)
    if previous is not None:
        assert previous <= after < previous + timedelta(seconds=interval_s)
        assert next(timing.fire_times_after(previous)) == following[0]


# Cron across daylight-saving changes --------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expression", "day_start", "expected"),
    [
        # Spring forward: the nonexistent local time runs once at the first valid time after the gap.
        ("America/New_York", "30 2 * * *", utc(2027, 3, 14, 5), [utc(2027, 3, 14, 7)]),
        ("Europe/Berlin", "30 2 * * *", utc(2027, 3, 27, 23), [utc(2027, 3, 28, 1)]),
        ("Australia/Sydney", "30 2 * * *", utc(2027, 10, 2, 14), [utc(2027, 10, 2, 16)]),
        ("Pacific/Chatham", "50 2 * * *", utc(2027, 9, 25, 11, 15), [utc(2027, 9, 25, 14)]),
        # Several nonexistent times run once, together.
        ("America/New_York", "0,15,30,45 2 * * *", utc(2027, 3, 14, 5), [utc(2027, 3, 14, 7)]),
        ("America/New_York", "30 2,3 * * *", utc(2027, 3, 14, 5), [utc(2027, 3, 14, 7), utc(2027, 3, 14, 7, 30)]),
        # Fall back: a repeated local time runs once, at its first occurrence.
        ("America/New_York", "30 1 * * *", utc(2027, 11, 7, 4), [utc(2027, 11, 7, 5, 30)]),
        ("Europe/Berlin", "30 2 * * *", utc(2027, 10, 30, 22), [utc(2027, 10, 31, 0, 30)]),
        ("Australia/Sydney", "30 2 * * *", utc(2027, 4, 3, 13), [utc(2027, 4, 3, 15, 30)]),
        ("Pacific/Chatham", "0 3 * * *", utc(2027, 4, 3, 10, 15), [utc(2027, 4, 3, 13, 15)]),
        # No daylight saving time, and an offset of 5:30.
        ("Asia/Kolkata", "30 2 * * *", utc(2027, 3, 13, 18, 30), [utc(2027, 3, 13, 21)]),
    ],
)
def test_fixed_time_rule(zone: str, expression: str, day_start: datetime, expected: list[datetime]) -> None:
    timing = cron_timing(expression, zone)
    assert between(timing, day_start, day_start + timedelta(hours=24)) == expected


@pytest.mark.parametrize(
    ("zone", "day", "fires"),
    [("America/New_York", date(2027, 3, 14), 92), ("America/New_York", date(2027, 11, 7), 100),
     ("Europe/Berlin", date(2027, 3, 28), 92), ("Europe/Berlin", date(2027, 10, 31), 100),
     ("Australia/Sydney", date(2027, 10, 3), 92), ("Australia/Sydney", date(2027, 4, 4), 100),
     ("Pacific/Chatham", date(2027, 9, 26), 92), ("Pacific/Chatham", date(2027, 4, 4), 100),
     ("Asia/Kolkata", date(2027, 3, 14), 96)],
)
def test_step_expression_keeps_real_spacing(zone: str, day: date, fires: int) -> None:
    tz = ZoneInfo(zone)
    first = datetime.combine(day, datetime.min.time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    found = between(cron_timing("*/15 * * * *", zone), first, end)
    assert len(found) == fires
    assert {later - earlier for earlier, later in zip(found, found[1:])} == {timedelta(minutes=15)}


def test_hourly_wall_clock_fires_in_both_repeated_hours() -> None:
    found = between(cron_timing("30 * * * *", "America/New_York"), utc(2027, 11, 7, 4), utc(2027, 11, 7, 8))
    assert found == [utc(2027, 11, 7, 4, 30), utc(2027, 11, 7, 5, 30), utc(2027, 11, 7, 6, 30), utc(2027, 11, 7, 7, 30)]


def test_next_fire_times_of_row() -> None:
    row = {"start_timestamp": utc(2027, 1, 1), "interval_s": None, "cron_expression": "30 2 * * *",
           "time_zone": "America/New_York"}
    assert next_fire_times(row, utc(2027, 3, 13, 8), 3) == [
        utc(2027, 3, 14, 7), utc(2027, 3, 15, 6, 30), utc(2027, 3, 16, 6, 30)]
    assert next_fire_times({"start_timestamp": utc(2027, 1, 1), "interval_s": 60}, utc(2027, 1, 1), 2) == [
        utc(2027, 1, 1, 0, 1), utc(2027, 1, 1, 0, 2)]


def test_rare_expression_is_found_years_ahead() -> None:
    timing = cron_timing("0 12 29 2 *", "Europe/Berlin")
    assert take(timing.fire_times_after(utc(2097, 3, 1)), 2) == [utc(2104, 2, 29, 11), utc(2108, 2, 29, 11)]


def test_format_fire_time_is_utc_with_milliseconds() -> None:
    berlin = datetime(2027, 7, 1, 14, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    assert format_fire_time(berlin) == "2027-07-01T12:00:00.123Z"


def test_unknown_time_zone_is_rejected() -> None:
    with pytest.raises(InvalidScheduleError, match="'Europe/Atlantis' is not a known IANA time zone"):
        parse_time_zone("Europe/Atlantis")
    with pytest.raises(InvalidScheduleError, match="is not a known IANA time zone"):
        parse_time_zone("../etc/passwd")


# Brute-force reference ------------------------------------------------------------------


def _matches(cron: CronExpression, local: datetime) -> bool:
    return cron.matches_date(local.date()) and local.minute in cron.minutes and local.hour in cron.hours


def reference_fire_times(cron: CronExpression, zone: ZoneInfo, first: datetime, end: datetime) -> list[datetime]:
    """Walk every UTC minute in [first, end) and apply the documented rule to its local time."""
    fires = []
    instant = first
    previous_local = (instant - MINUTE).astimezone(zone)
    while instant < end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        fires_now = _matches(cron, wall) and (cron.follows_wall_clock or local.fold == 0)
        jump = local.utcoffset() - previous_local.utcoffset()  # type: ignore[operator]
        if not cron.follows_wall_clock and jump > timedelta(0):
            # Local times skipped by a forward jump fire once, at the first instant after it.
            skipped = previous_local.replace(tzinfo=None) + MINUTE
            while skipped < wall and not fires_now:
                fires_now = _matches(cron, skipped)
                skipped += MINUTE
        if fires_now:
            fires.append(instant)
        previous_local = local
        instant += MINUTE
    return fires


@functools.cache
def transition_days(zone_name: str) -> list[date]:
    """Return the UTC dates of the zone's offset changes from 2020 to 2040."""
    zone = ZoneInfo(zone_name)
    days = []
    instant = utc(2020, 1, 1)
    offset = instant.astimezone(zone).utcoffset()
    while instant < utc(2040, 1, 1):
        instant += timedelta(hours=1)
        current = instant.astimezone(zone).utcoffset()
        if current != offset:
            days.append(instant.date())
            offset = current
    return days


MINUTE_FIELDS = st.sampled_from(["*", "0", "30", "*/15", "*/7", "0,20,40", "5-10", "45", "15/20", "*/30"])
HOUR_FIELDS = st.sampled_from(["*", "0", "1", "2", "3", "1-3", "2,3", "*/2", "0-23", "12", "*/5", "1,2"])
DAY_FIELDS = st.sampled_from(["*", "*", "*", "1-7", "13", "*/2", "25-31"])
MONTH_FIELDS = st.sampled_from(["*", "*", "3,4,9,10,11", "mar-apr", "oct"])
WEEKDAY_FIELDS = st.sampled_from(["*", "*", "*", "sun", "mon-fri", "0,6", "5"])


@st.composite
def cron_expressions(draw: st.DrawFn) -> CronExpression:
    fields = [draw(MINUTE_FIELDS), draw(HOUR_FIELDS), draw(DAY_FIELDS), draw(MONTH_FIELDS), draw(WEEKDAY_FIELDS)]
    return parse_cron(" ".join(fields))


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, datetime]:
    """Draw a zone and the start of a two-day window, usually around one of its offset changes."""
    zone = draw(st.sampled_from(ZONES))
    days = transition_days(zone)
    if days and draw(st.booleans() | st.just(True)):
        day = draw(st.sampled_from(days))
    else:
        day = draw(st.dates(min_value=date(2020, 1, 2), max_value=date(2039, 12, 30)))
    hour = draw(st.integers(min_value=0, max_value=23))
    return zone, datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - timedelta(days=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cron=cron_expressions(), window=windows())
def test_cron_matches_brute_force_reference(cron: CronExpression, window: tuple[str, datetime]) -> None:
    zone_name, first = window
    zone = ZoneInfo(zone_name)
    end = first + timedelta(days=2)
    timing = ScheduleTiming(start=utc(2019, 1, 1), cron=cron, zone=zone)
    expected = reference_fire_times(cron, zone, first, end)

    found = between(timing, first, end)
    assert found == expected

    backwards = []
    for fire_time in timing.fire_times_before(end, inclusive=False):
        if fire_time < first:
            break
        backwards.append(fire_time)
    assert backwards[::-1] == expected


@settings(max_examples=150, deadline=None)
@given(cron=cron_expressions(), window=windows(), count=st.integers(min_value=2, max_value=40))
def test_cron_fire_times_are_unique_increasing_utc(cron: CronExpression, window: tuple[str, datetime],
                                                   count: int) -> None:
    zone_name, after = window
    zone = ZoneInfo(zone_name)
    fires = take(ScheduleTiming(start=utc(2019, 1, 1), cron=cron, zone=zone).fire_times_after(after), count)
    assert all(fire_time.tzinfo is UTC for fire_time in fires)
    assert all(earlier < later for earlier, later in zip(fires, fires[1:])), "strictly increasing"
    assert fires[0] > after
    if not cron.follows_wall_clock:
        locals_ = [fire_time.astimezone(zone) for fire_time in fires]
        assert all(local.fold == 0 for local in locals_), "a repeated local time fires at its first occurrence"
        assert len({local.replace(tzinfo=None) for local in locals_}) == len(fires)


@settings(max_examples=80, deadline=None)
@given(zone=st.sampled_from(ZONES), step=st.sampled_from([1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30]),
       day=st.sampled_from([day for zone in ZONES for day in transition_days(zone)[:12]]))
def test_step_expressions_keep_real_spacing(zone: str, step: int, day: date) -> None:
    """Every offset change of these zones is a whole hour, so minute steps dividing 60 keep their spacing."""
    first = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=12)
    fires = between(cron_timing(f"*/{step} * * * *", zone), first, first + timedelta(hours=36))
    assert {later - earlier for earlier, later in zip(fires, fires[1:])} == {timedelta(minutes=step)}


# Catch-up plans ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    interval_s=st.integers(min_value=1, max_value=7200),
    elapsed_s=st.integers(min_value=0, max_value=200_000),
    policy=st.sampled_from(["skip", "latest", "all"]),
    catch_up_max=st.integers(min_value=1, max_value=50),
)
def test_plan_properties(interval_s: int, elapsed_s: int, policy: str, catch_up_max: int) -> None:
    start = utc(2027, 1, 1)
    timing = ScheduleTiming(start=start, interval_s=interval_s)
    now = start + timedelta(seconds=elapsed_s)
    plan = plan_fires(timing, start, now, policy, catch_up_max, misfire_grace_s=60)  # type: ignore[arg-type]
    due = elapsed_s // interval_s + 1
    assert len(plan.fire_times) + plan.missed == due
    assert plan.fire_times == sorted(set(plan.fire_times))
    assert all(start <= fire_time <= now for fire_time in plan.fire_times)
    assert plan.next_timestamp is not None and now < plan.next_timestamp <= now + timedelta(seconds=interval_s)
    latest_due = start + timedelta(seconds=(elapsed_s // interval_s) * interval_s)
    if policy == "latest":
        assert plan.fire_times == [latest_due]
    elif policy == "all":
        assert len(plan.fire_times) == min(due, catch_up_max)
        assert plan.fire_times[-1] == latest_due
    else:
        assert plan.fire_times == ([latest_due] if (now - latest_due).total_seconds() <= 60 else [])


def test_plan_before_due_changes_nothing() -> None:
    timing = ScheduleTiming(start=utc(2027, 1, 1), interval_s=60)
    plan = plan_fires(timing, utc(2027, 1, 1, 0, 1), utc(2027, 1, 1, 0, 0, 59), "latest", 100, 60)
    assert (plan.fire_times, plan.missed, plan.next_timestamp) == ([], 0, utc(2027, 1, 1, 0, 1))


def test_plan_with_cron_counts_missed_fire_times() -> None:
    timing = cron_timing("*/5 * * * *", "Europe/Berlin")
    plan = plan_fires(timing, utc(2027, 5, 1, 10), utc(2027, 5, 1, 11, 2), "all", 3, 60)
    assert plan.fire_times == [utc(2027, 5, 1, 10, 50), utc(2027, 5, 1, 10, 55), utc(2027, 5, 1, 11)]
    assert plan.missed == 10
    assert plan.next_timestamp == utc(2027, 5, 1, 11, 5)
