"""Catch-up policies after downtime, pause and resume, with a controlled clock and the real tasks table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskservice import metrics
from taskservice.store.db import Pool
from taskservice.store.schedule_repository import ScheduleRepository
from tests.scheduler.conftest import Clock

T0 = datetime(2027, 5, 3, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def task_fire_times(pool: Pool, schedule_id: str) -> list[datetime]:
    rows = await pool.fetch(
        "SELECT start_timestamp FROM tasks WHERE data ->> 'scheduleId' = $1 ORDER BY start_timestamp", schedule_id)
    return [row["start_timestamp"] for row in rows]


def missed_count(policy: str) -> float:
    return metrics.SCHEDULE_FIRES_MISSED.labels(policy=policy)._value.get()  # noqa: SLF001 - reading a test metric


async def fire_at(make_scheduler: Callable[..., Any], clock: Clock, when: datetime, **overrides: Any) -> list[Any]:
    clock.set(when)
    return await make_scheduler(clock, **overrides).fire_due()


@pytest.mark.parametrize(
    ("policy", "catch_up_max", "expected_seconds", "expected_missed"),
    [
        ("skip", 100, [0], 10),
        ("latest", 100, [0, 600], 9),
        ("all", 4, [0, 420, 480, 540, 600], 6),
        ("all", 100, [0, *range(60, 601, 60)], 0),
    ],
)
async def test_policy_after_outage(add_schedule: Callable[..., Any], make_scheduler: Callable[..., Any], pool: Pool,
                                   policy: str, catch_up_max: int, expected_seconds: list[int],
                                   expected_missed: int) -> None:
    """An interval of 60 s; the scheduler runs at T0, then not until T0 + 650 s (ten fire times due)."""
    schedule = await add_schedule(interval_s=60, now=T0, catch_up=policy, catch_up_max=catch_up_max)
    clock = Clock(T0)
    first = await fire_at(make_scheduler, clock, T0, scheduler_misfire_grace_s=30.0)
    assert [fire.fire_time for fire in first] == [T0]

    before = missed_count(policy)
    await fire_at(make_scheduler, clock, at(650), scheduler_misfire_grace_s=30.0)

    assert await task_fire_times(pool, schedule["id"]) == [at(second) for second in expected_seconds]
    assert missed_count(policy) - before == expected_missed
    stored = await ScheduleRepository(pool).get_schedule(schedule["id"])
    assert stored["next_timestamp"] == at(660), "the next fire time lies after the outage in every policy"


async def test_skip_runs_fire_time_within_grace(add_schedule: Callable[..., Any], make_scheduler: Callable[..., Any],
                                               pool: Pool) -> None:
    schedule = await add_schedule(interval_s=60, now=T0, catch_up="skip")
    clock = Clock(T0)
    await fire_at(make_scheduler, clock, at(0))
    await fire_at(make_scheduler, clock, at(610), scheduler_misfire_grace_s=30.0)
    assert await task_fire_times(pool, schedule["id"]) == [at(0), at(600)]


async def test_on_time_fires_never_count_as_missed(add_schedule: Callable[..., Any],
                                                  make_scheduler: Callable[..., Any], pool: Pool) -> None:
    schedule = await add_schedule(interval_s=60, now=T0, catch_up="skip")
    clock = Clock(T0)
    before = missed_count("skip")
    for second in range(0, 601, 60):
        await fire_at(make_scheduler, clock, at(second) + timedelta(milliseconds=5))
    assert await task_fire_times(pool, schedule["id"]) == [at(second) for second in range(0, 601, 60)]
    assert missed_count("skip") == before


async def test_cron_catch_up_across_spring_forward(add_schedule: Callable[..., Any],
                                                   make_scheduler: Callable[..., Any], pool: Pool) -> None:
    """Down from 2027-03-13 12:00 to 03-15 12:00 UTC: 'latest' runs 03-15 06:30 UTC, skips 03-14 07:00 UTC."""
    start = datetime(2027, 3, 13, 12, 0, tzinfo=UTC)
    latest = await add_schedule(cron_expression="30 2 * * *", time_zone="America/New_York", now=start)
    every = await add_schedule(cron_expression="30 2 * * *", time_zone="America/New_York", now=start,
                               catch_up="all")
    clock = Clock(start)
    await fire_at(make_scheduler, clock, datetime(2027, 3, 15, 12, 0, tzinfo=UTC))
    assert await task_fire_times(pool, latest["id"]) == [datetime(2027, 3, 15, 6, 30, tzinfo=UTC)]
    assert await task_fire_times(pool, every["id"]) == [
        datetime(2027, 3, 14, 7, 0, tzinfo=UTC), datetime(2027, 3, 15, 6, 30, tzinfo=UTC)]


async def test_paused_schedule_creates_nothing(add_schedule: Callable[..., Any], make_scheduler: Callable[..., Any],
                                               pool: Pool) -> None:
    schedule = await add_schedule(interval_s=60, now=T0)
    schedules = ScheduleRepository(pool)
    clock = Clock(T0)
    await fire_at(make_scheduler, clock, at(0))
    assert await schedules.pause_schedule(schedule["id"])
    assert not await schedules.pause_schedule(schedule["id"]), "pausing twice changes nothing"

    for second in (60, 120, 300):
        assert await fire_at(make_scheduler, clock, at(second)) == []
    assert await task_fire_times(pool, schedule["id"]) == [at(0)]
    assert await schedules.next_schedule_timestamp() is None, "a paused schedule does not wake the scheduler"


@pytest.mark.parametrize(
    ("policy", "expected_seconds"),
    [("latest", [0, 300]), ("all", [0, 60, 120, 180, 240, 300]), ("skip", [0])],
)
async def test_resume_applies_catch_up_policy(add_schedule: Callable[..., Any], make_scheduler: Callable[..., Any],
                                              pool: Pool, policy: str, expected_seconds: list[int]) -> None:
    """Paused from T0 + 30 s to T0 + 320 s; fire times 60..300 s were missed while paused."""
    schedule = await add_schedule(interval_s=60, now=T0, catch_up=policy)
    schedules = ScheduleRepository(pool)
    clock = Clock(T0)
    await fire_at(make_scheduler, clock, at(0))
    assert await schedules.pause_schedule(schedule["id"])
    await fire_at(make_scheduler, clock, at(200))
    assert await schedules.resume_schedule(schedule["id"])
    assert not await schedules.resume_schedule(schedule["id"]), "resuming twice changes nothing"

    await fire_at(make_scheduler, clock, at(320), scheduler_misfire_grace_s=10.0)
    assert await task_fire_times(pool, schedule["id"]) == [at(second) for second in expected_seconds]
    stored = await schedules.get_schedule(schedule["id"])
    assert stored["next_timestamp"] == at(360)


async def test_task_carries_schedule_fields(add_schedule: Callable[..., Any], make_scheduler: Callable[..., Any],
                                            pool: Pool) -> None:
    schedule = await add_schedule(interval_s=60, now=T0, data={"report": "daily", "scheduleId": "overwritten"},
                                  tags=["reports", "nightly"], priority=7, created_by_user_id="u" * 24,
                                  created_by_application_id="a" * 24)
    clock = Clock(T0)
    fires = await fire_at(make_scheduler, clock, at(0))
    task = await pool.fetchrow("SELECT * FROM tasks")
    assert task["id"] == fires[0].task_id
    assert task["function_name"] == "echo"
    assert task["data"] == {"report": "daily", "scheduleId": schedule["id"],
                            "scheduledFireTime": "2027-05-03T12:00:00.000Z"}
    assert task["tags"] == ["reports", "nightly"]
    assert task["priority"] == 7
    assert task["status"] == "new"
    assert task["source"] == "schedule"
    assert (task["created_by_user_id"], task["created_by_application_id"]) == ("u" * 24, "a" * 24)
    stored = await ScheduleRepository(pool).get_schedule(schedule["id"])
    assert stored["last_task_id"] == task["id"]
    assert stored["last_fire_timestamp"] == T0


async def test_invalid_stored_schedule_is_paused(add_schedule: Callable[..., Any],
                                                 make_scheduler: Callable[..., Any], pool: Pool) -> None:
    """A row changed behind the API's back to an unknown zone pauses; other schedules still fire."""
    broken = await add_schedule(cron_expression="* * * * *", now=T0)
    healthy = await add_schedule(interval_s=60, now=T0)
    await pool.execute("UPDATE schedules SET time_zone = 'Mars/Olympus_Mons' WHERE id = $1", broken["id"])
    clock = Clock(T0)
    fires = await fire_at(make_scheduler, clock, at(0))
    assert [fire.schedule_id for fire in fires] == [healthy["id"]]
    stored = await ScheduleRepository(pool).get_schedule(broken["id"])
    assert stored["paused"]
