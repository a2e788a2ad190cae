"""Exactly one task per (schedule, fire time) with several schedulers in one process, each on its own pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.health import Health
from taskservice.scheduler.definition import task_rows_for_fires
from taskservice.scheduler.scheduler import Scheduler
from taskservice.store.db import Pool, create_pool
from taskservice.store.notify import Notifier
from taskservice.store.repository import Repository
from taskservice.store.schedule_repository import SCHEDULE_TRANSACTION_IDLE_TIMEOUT_MS, ScheduleRepository
from tests.scheduler.conftest import Clock

T0 = datetime(2027, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
async def replica_pools(scheduler_settings: Settings) -> AsyncIterator[list[Pool]]:
    """Three pools, one per simulated replica."""
    assert scheduler_settings.database_url is not None
    pools = [await create_pool(scheduler_settings.database_url, size=3, role=f"replica-{index}") for index in range(3)]
    try:
        yield pools
    finally:
        for opened in pools:
            await opened.close()


async def test_concurrent_schedulers_one_task_each(
        add_schedule: Callable[..., Any], make_scheduler: Callable[..., Any], replica_pools: list[Pool],
        pool: Pool) -> None:
    """Three schedulers share a clock and run every pass at the same moment, 120 passes of 10 s."""
    schedules = [
        await add_schedule(interval_s=10, now=T0),
        await add_schedule(interval_s=30, now=T0, catch_up="all"),
        await add_schedule(cron_expression="* * * * *", now=T0),
        await add_schedule(cron_expression="*/2 * * * *", time_zone="Asia/Kolkata", now=T0),
    ]
    clock = Clock(T0)
    replicas = [make_scheduler(clock, target_pool=replica_pool) for replica_pool in replica_pools]
    handled = []
    for _step in range(120):
        for fires in await asyncio.gather(*(replica.fire_due() for replica in replicas)):
            handled.extend(fires)
        clock.advance(10)

    rows = await pool.fetch("SELECT data ->> 'scheduleId' AS schedule_id, start_timestamp FROM tasks")
    per_schedule = {row["id"]: sorted(r["start_timestamp"] for r in rows if r["schedule_id"] == row["id"])
                    for row in schedules}
    last = T0 + timedelta(seconds=1190)
    assert per_schedule[schedules[0]["id"]] == [T0 + timedelta(seconds=10 * k) for k in range(120)]
    assert per_schedule[schedules[1]["id"]] == [T0 + timedelta(seconds=30 * k) for k in range(40)]
    assert per_schedule[schedules[2]["id"]] == [T0 + timedelta(minutes=k) for k in range(20)]
    assert per_schedule[schedules[3]["id"]] == [T0 + timedelta(minutes=2 * k) for k in range(10)]
    assert all(fire_time <= last for times in per_schedule.values() for fire_time in times)
    created = [fire for fire in handled if fire.task_id is not None]
    assert len(created) == len(rows), "each created task was reported by exactly one replica"


async def test_duplicate_fire_insert_is_no_op(add_schedule: Callable[..., Any],
                                                          make_scheduler: Callable[..., Any], pool: Pool) -> None:
    """A replica that acts on a stale copy of the schedule inserts nothing and fails nothing."""
    schedule = await add_schedule(interval_s=60, now=T0)
    stale_copy = dict(schedule)
    clock = Clock(T0)
    await make_scheduler(clock).fire_due()

    created = await Repository(pool).insert_tasks(task_rows_for_fires(stale_copy, [T0]))
    assert created == []
    rows = await pool.fetch("SELECT status, error FROM tasks")
    assert [(row["status"], row["error"]) for row in rows] == [("new", None)]

    schedules = ScheduleRepository(pool)
    async with schedules.transaction() as connection:
        changed = await schedules.advance_schedules(connection, [{
            "id": schedule["id"], "old_next_timestamp": T0.isoformat(),
            "next_timestamp": (T0 + timedelta(seconds=60)).isoformat(), "pause": False,
            "last_fire_timestamp": None, "last_task_id": None}])
    assert changed == [], "the compare-and-set rejects an update based on the old next fire time"


async def test_stalled_transaction_loses_its_locks(
        add_schedule: Callable[..., Any], make_scheduler: Callable[..., Any], replica_pools: list[Pool],
        pool: Pool) -> None:
    """A replica that stalls while holding a due schedule is cut off; another fires it, once.

    This is the stale-leader case inside one process: the stalled transaction sits idle
    past the server-side timeout, the server ends its session and rolls it back, and its
    late insert fails instead of creating a second task.
    """
    schedule = await add_schedule(interval_s=60, now=T0)
    clock = Clock(T0)
    stalled = ScheduleRepository(replica_pools[0])

    with pytest.raises(DatabaseUnavailableError):
        async with stalled.transaction() as connection:
            claimed = await stalled.claim_due_schedules(connection, T0, 10)
            assert [row["id"] for row in claimed] == [schedule["id"]]
            other = make_scheduler(clock, target_pool=replica_pools[1])
            assert await other.fire_due() == [], "the locked schedule is skipped, not waited for"

            await asyncio.sleep(SCHEDULE_TRANSACTION_IDLE_TIMEOUT_MS / 1000 + 1.5)
            fires = await other.fire_due()
            assert [(fire.fire_time, fire.task_id is not None) for fire in fires] == [(T0, True)]
            await Repository(replica_pools[0]).insert_tasks(task_rows_for_fires(claimed[0], [T0]), connection)

    rows = await pool.fetch("SELECT start_timestamp FROM tasks")
    assert [row["start_timestamp"] for row in rows] == [T0]


async def test_new_schedule_wakes_sleeping_scheduler(
        scheduler_settings: Settings, add_schedule: Callable[..., Any], pool: Pool) -> None:
    """With a 60 s tick, a schedule created while the loop sleeps fires within a second or two."""
    assert scheduler_settings.database_url is not None
    settings = scheduler_settings.model_copy(update={"scheduler_tick_s": 60.0})
    notifier = Notifier(scheduler_settings.database_url, ["taskservice_schedules"])
    health = Health()
    scheduler = Scheduler(settings, Repository(pool), ScheduleRepository(pool), health,
                          notifier.event("taskservice_schedules"))
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(notifier.run(stopping), name="test-notifier"),
             asyncio.create_task(scheduler.run(stopping), name="test-scheduler")]
    try:
        await asyncio.sleep(1.0)  # the loop has run its first pass and sleeps for the tick
        assert health.stalled_roles() == []
        created_at = datetime.now(UTC)
        schedule = await add_schedule(interval_s=3600, now=created_at)
        deadline = asyncio.get_running_loop().time() + 5
        while not await pool.fetchval("SELECT count(*) FROM tasks"):
            assert asyncio.get_running_loop().time() < deadline, "the scheduler did not wake on the notification"
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    row = await pool.fetchrow("SELECT data ->> 'scheduleId' AS schedule_id, start_timestamp FROM tasks")
    assert row["schedule_id"] == schedule["id"]
    assert row["start_timestamp"] == schedule["next_timestamp"]
