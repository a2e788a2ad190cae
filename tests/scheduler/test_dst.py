"""Cron and interval schedules across daylight-saving changes, through the scheduler and the tasks table.

A controlled clock drives the scheduler's own loop step (run_once): after each pass the
clock moves by the delay the scheduler asked for, which is the time to the earliest
next fire time. Zone America/New_York: on 2027-03-14 02:00 EST jumps to 03:00 EDT (a
23-hour day); on 2027-11-07 01:00-02:00 happens twice (a 25-hour day).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from taskservice.scheduler.timing import ScheduleTiming, format_fire_time
from taskservice.store.db import Pool
from tests.scheduler.conftest import Clock

NEW_YORK = ZoneInfo("America/New_York")
SPRING_FORWARD = date(2027, 3, 14)
FALL_BACK = date(2027, 11, 7)


def local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=NEW_YORK).astimezone(UTC)


def local_day(day: date) -> tuple[datetime, datetime]:
    """Return the UTC bounds [start, end) of a local New York date."""
    return local_midnight(day), local_midnight(day + timedelta(days=1))


async def run_scheduler_through(make_scheduler: Callable[..., Any], clock: Clock, end: datetime) -> int:
    """Run scheduler passes, moving the clock by each requested delay, until the clock reaches end."""
    scheduler = make_scheduler(clock, scheduler_tick_s=3600.0)
    passes = 0
    while clock.now < end:
        delay_s = await scheduler.run_once()
        clock.advance(delay_s)
        passes += 1
        assert passes < 5_000, "the scheduler asked for too many passes"
    return passes


async def fire_times_by_schedule(pool: Pool) -> dict[str, list[datetime]]:
    rows = await pool.fetch(
        "SELECT data ->> 'scheduleId' AS schedule_id, data ->> 'scheduledFireTime' AS fire_time, "
        "start_timestamp, idempotency_key, source FROM tasks ORDER BY start_timestamp")
    result: dict[str, list[datetime]] = {}
    for row in rows:
        assert row["source"] == "schedule"
        assert row["fire_time"].endswith("Z"), "fire times in task data are UTC with a Z suffix"
        assert row["fire_time"] == format_fire_time(row["start_timestamp"])
        assert row["idempotency_key"] == f"schedule:{row['schedule_id']}:{row['fire_time']}"
        result.setdefault(row["schedule_id"], []).append(row["start_timestamp"])
    return result


def within(fire_times: list[datetime], bounds: tuple[datetime, datetime]) -> list[datetime]:
    return [fire_time for fire_time in fire_times if bounds[0] <= fire_time < bounds[1]]


def spacings_s(fire_times: list[datetime]) -> set[float]:
    return {(later - earlier).total_seconds() for earlier, later in zip(fire_times, fire_times[1:])}


@pytest.fixture
async def dst_schedules(add_schedule: Callable[..., Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """Create S4-S7 starting at local midnight the day before the transition day."""
    day: date = request.param
    start = local_midnight(day - timedelta(days=1))
    common = {"now": start, "start_timestamp": start}
    return {
        "day": day,
        "start": start,
        "S4": await add_schedule(cron_expression="30 2 * * *", time_zone="America/New_York", **common),
        "S5": await add_schedule(cron_expression="30 1 * * *", time_zone="America/New_York", **common),
        "S6": await add_schedule(cron_expression="*/15 * * * *", time_zone="America/New_York", **common),
        "S7": await add_schedule(interval_s=3600, **common),
    }


@pytest.mark.parametrize("dst_schedules", [SPRING_FORWARD], indirect=True)
async def test_spring_forward_day(dst_schedules: dict[str, Any], make_scheduler: Callable[..., Any],
                                  pool: Pool) -> None:
    clock = Clock(dst_schedules["start"])
    await run_scheduler_through(make_scheduler, clock, local_midnight(SPRING_FORWARD + timedelta(days=2)))
    fires = await fire_times_by_schedule(pool)
    day = local_day(SPRING_FORWARD)

    s4 = fires[dst_schedules["S4"]["id"]]
    assert within(s4, day) == [datetime(2027, 3, 14, 7, 0, tzinfo=UTC)]  # 03:00 EDT, once
    assert within(s4, local_day(SPRING_FORWARD - timedelta(days=1))) == [datetime(2027, 3, 13, 7, 30, tzinfo=UTC)]
    assert within(s4, local_day(SPRING_FORWARD + timedelta(days=1))) == [datetime(2027, 3, 15, 6, 30, tzinfo=UTC)]

    s5 = fires[dst_schedules["S5"]["id"]]
    assert within(s5, day) == [datetime(2027, 3, 14, 6, 30, tzinfo=UTC)]  # 01:30 EST

    s6 = fires[dst_schedules["S6"]["id"]]
    assert len(within(s6, day)) == 92
    assert spacings_s(s6) == {900.0}, "*/15 keeps 15 real minutes, with no one-hour gap"

    s7 = fires[dst_schedules["S7"]["id"]]
    assert len(within(s7, day)) == 23
    assert spacings_s(s7) == {3600.0}

    for schedule_fires in fires.values():
        assert len(schedule_fires) == len(set(schedule_fires)), "two tasks for one UTC instant"


@pytest.mark.parametrize("dst_schedules", [FALL_BACK], indirect=True)
async def test_fall_back_day(dst_schedules: dict[str, Any], make_scheduler: Callable[..., Any], pool: Pool) -> None:
    clock = Clock(dst_schedules["start"])
    await run_scheduler_through(make_scheduler, clock, local_midnight(FALL_BACK + timedelta(days=2)))
    fires = await fire_times_by_schedule(pool)
    day = local_day(FALL_BACK)

    s5 = fires[dst_schedules["S5"]["id"]]
    assert within(s5, day) == [datetime(2027, 11, 7, 5, 30, tzinfo=UTC)]  # 01:30 EDT, the first occurrence
    assert datetime(2027, 11, 7, 6, 30, tzinfo=UTC) not in s5

    s4 = fires[dst_schedules["S4"]["id"]]
    assert within(s4, day) == [datetime(2027, 11, 7, 7, 30, tzinfo=UTC)]  # 02:30 EST

    s6 = fires[dst_schedules["S6"]["id"]]
    assert len(within(s6, day)) == 100
    assert spacings_s(s6) == {900.0}

    s7 = fires[dst_schedules["S7"]["id"]]
    assert len(within(s7, day)) == 25
    assert spacings_s(s7) == {3600.0}

    for schedule_fires in fires.values():
        assert len(schedule_fires) == len(set(schedule_fires)), "two tasks for one UTC instant"


@pytest.mark.parametrize("dst_schedules", [SPRING_FORWARD, FALL_BACK], indirect=True)
async def test_stored_fires_match_timing(dst_schedules: dict[str, Any], make_scheduler: Callable[..., Any],
                                         pool: Pool) -> None:
    """The tasks the scheduler created are exactly the fire times of the pure timing functions."""
    clock = Clock(dst_schedules["start"])
    end = local_midnight(dst_schedules["day"] + timedelta(days=2))
    await run_scheduler_through(make_scheduler, clock, end)
    fires = await fire_times_by_schedule(pool)
    for name in ("S4", "S5", "S6", "S7"):
        row = dst_schedules[name]
        timing = ScheduleTiming.from_schedule(row)
        expected = []
        for fire_time in timing.fire_times_after(dst_schedules["start"], inclusive=True):
            if fire_time >= end:
                break
            expected.append(fire_time)
        assert fires[row["id"]] == expected, name
        stored = await pool.fetchrow("SELECT next_timestamp, last_fire_timestamp FROM schedules WHERE id = $1",
                                     row["id"])
        assert stored["last_fire_timestamp"] == expected[-1]
        assert stored["next_timestamp"] > expected[-1]
        assert stored["next_timestamp"].utcoffset() == timedelta(0)
