"""Fixtures for scheduler tests: settings on a fresh database, pools and a controlled clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskservice.config import Settings
from taskservice.health import Health
from taskservice.scheduler.definition import build_schedule
from taskservice.scheduler.scheduler import Scheduler
from taskservice.store.db import Pool, create_pool
from taskservice.store.repository import Repository
from taskservice.store.schedule_repository import ScheduleRepository


class Clock:
    """A clock that moves only when the test moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, value: datetime) -> None:
        """Move the clock to value, which must not be in its past."""
        value = value.astimezone(UTC)
        assert value >= self.now, f"clock moved backwards from {self.now} to {value}"
        self.now = value

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def scheduler_settings(database_url: str, tmp_path: Any) -> Settings:
    """Settings on this test's database, with a short scheduler tick."""
    return Settings(database_url=database_url, scheduler_tick_s=1.0, state_dir=tmp_path / "state", log_format="text")


@pytest.fixture
async def pool(scheduler_settings: Settings) -> AsyncIterator[Pool]:
    """A connection pool on this test's database."""
    assert scheduler_settings.database_url is not None
    opened = await create_pool(scheduler_settings.database_url, size=4, role="scheduler-test")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def make_scheduler(scheduler_settings: Settings, pool: Pool) -> Callable[..., Scheduler]:
    """Return a factory of Scheduler objects on the test pool, each with the given clock."""

    def make(clock: Callable[[], datetime], target_pool: Pool | None = None, **overrides: Any) -> Scheduler:
        settings = scheduler_settings.model_copy(update=overrides)
        used = target_pool or pool
        return Scheduler(settings, Repository(used), ScheduleRepository(used), Health(), now=clock)

    return make


@pytest.fixture
def add_schedule(pool: Pool) -> Callable[..., Any]:
    """Return a coroutine function that validates and stores a schedule; it returns the row."""

    async def add(function_name: str = "echo", *, now: datetime, **fields: Any) -> Any:
        row = build_schedule(function_name, now=now, **fields)
        return await ScheduleRepository(pool).insert_schedule(row)

    return add
