"""Validation of new schedules, and the task rows a fire time creates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from taskservice.definitions import FUNCTION_NAME
from taskservice.ids import new_object_id
from taskservice.scheduler.cron import InvalidScheduleError, parse_cron
from taskservice.scheduler.timing import (
    CATCH_UP_POLICIES,
    DEFAULT_CATCH_UP,
    ScheduleTiming,
    format_fire_time,
    parse_time_zone,
    to_utc,
)

DEFAULT_CATCH_UP_MAX = 100
MAX_CATCH_UP_MAX = 10_000
# Task priorities are JavaScript-safe integers on the wire.
MAX_PRIORITY = 9_007_199_254_740_991

# Keys every scheduled task gets in its data, overwriting keys of the schedule's data.
SCHEDULE_ID_KEY = "scheduleId"
FIRE_TIME_KEY = "scheduledFireTime"
# Room kept for those two keys when the schedule's data size is checked.
_FIRE_KEYS_BYTES = 100


def build_schedule(
    function_name: str,
    *,
    interval_s: int | float | None = None,
    cron_expression: str | None = None,
    time_zone: str | None = None,
    data: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    priority: int | None = None,
    start_timestamp: datetime | None = None,
    catch_up: str = DEFAULT_CATCH_UP,
    catch_up_max: int = DEFAULT_CATCH_UP_MAX,
    created_by_user_id: str | None = None,
    created_by_application_id: str | None = None,
    now: datetime | None = None,
    max_data_bytes: int = 256_000,
) -> dict[str, Any]:
    """Validate a new schedule and return its row for ScheduleRepository.insert_schedule.

    Give exactly one of interval_s (whole seconds) and cron_expression; time_zone applies
    to cron only and defaults to UTC. start_timestamp defaults to now. The first fire
    time is the first one at or after both start_timestamp and now, so creating a
    schedule never catches up on fire times from before it existed. Raises
    InvalidScheduleError with a message naming the field and value.
    """
    now = to_utc(now or datetime.now(UTC))
    if not isinstance(function_name, str) or not FUNCTION_NAME.match(function_name):
        raise InvalidScheduleError(
            f"function name {function_name!r} is invalid; use 1 to 64 letters, digits or '-'"
        )
    interval_s, cron_expression, zone_name = _check_timing_fields(interval_s, cron_expression, time_zone)
    start = _check_start(start_timestamp, now)
    timing = ScheduleTiming(
        start=start,
        interval_s=interval_s,
        cron=parse_cron(cron_expression) if cron_expression is not None else None,
        zone=parse_time_zone(zone_name),
    )
    next_timestamp = timing.first_fire_time(not_before=now)
    if next_timestamp is None:
        raise InvalidScheduleError(f"cron expression {cron_expression!r} has no fire time after {now.isoformat()}")

    return {
        "id": new_object_id(),
        "function_name": function_name,
        "interval_s": interval_s,
        "cron_expression": cron_expression,
        "time_zone": zone_name,
        "data": _check_data(data, max_data_bytes),
        "tags": _check_tags(tags),
        "priority": _check_priority(priority),
        "start_timestamp": start,
        "next_timestamp": next_timestamp,
        "catch_up": _check_catch_up(catch_up),
        "catch_up_max": _check_catch_up_max(catch_up_max),
        "created_by_user_id": created_by_user_id,
        "created_by_application_id": created_by_application_id,
    }


def task_rows_for_fires(schedule: Mapping[str, Any], fire_times: Sequence[datetime]) -> list[dict[str, Any]]:
    """Return one task row per fire time for Repository.insert_tasks.

    The idempotency key 'schedule:<schedule id>:<fire time>' makes a second insert of the
    same fire time, by any replica, a no-op. The task starts at its fire time and its
    data is the schedule's data plus scheduleId and scheduledFireTime.
    """
    rows = []
    for fire_time in fire_times:
        fire_text = format_fire_time(fire_time)
        rows.append({
            "id": new_object_id(),
            "function_name": schedule["function_name"],
            "data": {**(schedule["data"] or {}), SCHEDULE_ID_KEY: schedule["id"], FIRE_TIME_KEY: fire_text},
            "tags": list(schedule["tags"] or []),
            "priority": schedule["priority"],
            "start_timestamp": to_utc(fire_time).isoformat(),
            "idempotency_key": schedule_idempotency_key(schedule["id"], fire_time),
            "source": "schedule",
            "created_by_user_id": schedule.get("created_by_user_id"),
            "created_by_application_id": schedule.get("created_by_application_id"),
        })
    return rows


def schedule_idempotency_key(schedule_id: str, fire_time: datetime) -> str:
    """Return the task idempotency key of one fire time of a schedule."""
    return f"schedule:{schedule_id}:{format_fire_time(fire_time)}"


def _check_timing_fields(
    interval_s: int | float | None, cron_expression: str | None, time_zone: str | None
) -> tuple[int | None, str | None, str]:
    if (interval_s is None) == (cron_expression is None):
        raise InvalidScheduleError("give exactly one of an interval in seconds and a cron expression")
    if cron_expression is not None:
        parse_cron(cron_expression)
        zone_name = time_zone or "UTC"
        parse_time_zone(zone_name)
        return None, cron_expression.strip(), zone_name
    if time_zone not in (None, "UTC"):
        raise InvalidScheduleError(
            f"time zone {time_zone!r} applies to cron schedules only; interval schedules count real seconds"
        )
    if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)):
        raise InvalidScheduleError(f"interval must be a number of seconds (got {interval_s!r})")
    if not math.isfinite(interval_s) or interval_s != int(interval_s) or interval_s < 1:
        raise InvalidScheduleError(f"interval must be a whole number of seconds of at least 1 (got {interval_s!r})")
    return int(interval_s), None, "UTC"


def _check_start(start_timestamp: datetime | None, now: datetime) -> datetime:
    if start_timestamp is None:
        return now
    if start_timestamp.tzinfo is None or start_timestamp.utcoffset() is None:
        raise InvalidScheduleError(
            f"start time {start_timestamp.isoformat()} has no time zone; give an offset such as 'Z'"
        )
    return to_utc(start_timestamp)


def _check_data(data: Mapping[str, Any] | None, max_data_bytes: int) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidScheduleError(f"data must be a JSON object (got {type(data).__name__})")
    size = len(orjson.dumps(dict(data))) + _FIRE_KEYS_BYTES
    if size > max_data_bytes:
        raise InvalidScheduleError(f"data is {size} bytes as JSON with the fire-time keys; the limit is {max_data_bytes}")
    return dict(data)


def _check_tags(tags: Sequence[str]) -> list[str]:
    if isinstance(tags, str) or not all(isinstance(tag, str) and tag for tag in tags):
        raise InvalidScheduleError(f"tags must be a list of non-empty strings (got {tags!r})")
    return list(tags)


def _check_priority(priority: int | None) -> int | None:
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise InvalidScheduleError(f"priority must be an integer from -{MAX_PRIORITY} to {MAX_PRIORITY} (got {priority!r})")
    return priority


def _check_catch_up(catch_up: str) -> str:
    if catch_up not in CATCH_UP_POLICIES:
        raise InvalidScheduleError(f"catch-up policy {catch_up!r} is unknown; use skip, latest or all")
    return catch_up


def _check_catch_up_max(catch_up_max: int) -> int:
    if isinstance(catch_up_max, bool) or not isinstance(catch_up_max, int) or not 1 <= catch_up_max <= MAX_CATCH_UP_MAX:
        raise InvalidScheduleError(f"catch-up maximum must be an integer from 1 to {MAX_CATCH_UP_MAX} (got {catch_up_max!r})")
    return catch_up_max
