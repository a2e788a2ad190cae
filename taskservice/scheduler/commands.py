"""The `taskservice schedules` command: create, list, pause, resume and delete schedules."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson

from taskservice.config import Settings
from taskservice.errors import NotFoundError, ServiceError
from taskservice.ids import is_object_id
from taskservice.scheduler.cron import InvalidScheduleError
from taskservice.scheduler.definition import DEFAULT_CATCH_UP_MAX, build_schedule
from taskservice.scheduler.timing import CATCH_UP_POLICIES, DEFAULT_CATCH_UP, format_fire_time, next_fire_times

if TYPE_CHECKING:
    from taskservice.store.schedule_repository import ScheduleRepository


def add_schedules_parser(commands: Any) -> None:
    """Add the `schedules` command and its actions to the CLI's subparsers."""
    schedules = commands.add_parser("schedules", help="manage schedules").add_subparsers(dest="action", required=True)

    create = schedules.add_parser("create", help="create an interval or cron schedule; prints its id")
    create.add_argument("--function", required=True, help="function each fire time runs")
    timing = create.add_mutually_exclusive_group(required=True)
    timing.add_argument("--interval", help="seconds between fire times, a whole number of at least 1")
    timing.add_argument("--cron", help="five-field cron expression, e.g. '30 2 * * *' (quote it)")
    create.add_argument("--time-zone", help="IANA time zone of a cron expression (default UTC)")
    create.add_argument("--start", help="ISO-8601 time with offset before which nothing fires (default now)")
    create.add_argument("--data", default="{}", help="task data as a JSON object (default {})")
    create.add_argument("--tags", default="", help="comma-separated tags of the schedule and its tasks")
    create.add_argument("--priority", type=int, help="priority of each task (default: the function's)")
    create.add_argument("--catch-up", choices=CATCH_UP_POLICIES, default=DEFAULT_CATCH_UP,
                        help="which fire times missed during downtime or a pause still run: skip, latest or all "
                             f"(default {DEFAULT_CATCH_UP})")
    create.add_argument("--catch-up-max", type=int, default=DEFAULT_CATCH_UP_MAX,
                        help=f"maximum number of missed fire times that 'all' runs (default {DEFAULT_CATCH_UP_MAX})")

    listing = schedules.add_parser("list", help="list schedules with their next fire times")
    listing.add_argument("--count", type=int, default=3, help="next fire times shown per schedule (default 3)")

    for action, text in (("pause", "stop creating tasks until resumed"),
                         ("resume", "create tasks again; missed fire times follow the catch-up policy"),
                         ("delete", "delete a schedule; tasks it created stay")):
        parser = schedules.add_parser(action, help=text)
        parser.add_argument("schedule_id", help="24-character schedule id")


def run_schedules_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run one `schedules` action and print its result."""
    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL")
    if args.action == "create":
        print(asyncio.run(create_schedule(settings, args)))
    elif args.action == "list":
        if args.count < 0:
            raise ServiceError(f"--count must be 0 or more (got {args.count})")
        for line in asyncio.run(list_schedules(settings, args.count)):
            print(line)
    else:
        if not is_object_id(args.schedule_id):
            raise ServiceError(f"schedule id {args.schedule_id!r} is invalid; ids are 24 lowercase hexadecimal characters")
        print(asyncio.run(change_schedule(settings, args.action, args.schedule_id)))
    return 0


async def create_schedule(settings: Settings, args: argparse.Namespace) -> str:
    """Validate and store the schedule described by the create arguments; return its id."""
    row = build_schedule(
        args.function,
        interval_s=_parse_interval(args.interval) if args.interval is not None else None,
        cron_expression=args.cron,
        time_zone=args.time_zone,
        data=_parse_data(args.data),
        tags=[tag for tag in args.tags.split(",") if tag],
        priority=args.priority,
        start_timestamp=_parse_start(args.start) if args.start else None,
        catch_up=args.catch_up,
        catch_up_max=args.catch_up_max,
        max_data_bytes=settings.max_task_data_bytes,
    )
    from taskservice.store.repository import Repository

    assert settings.database_url is not None
    pool, schedules = await _open(settings)
    try:
        functions = {function["name"] for function in await Repository(pool).list_function_settings()}
        if row["function_name"] not in functions:
            raise NotFoundError(
                f"function {row['function_name']!r} is not registered; register it with `taskservice functions sync`"
            )
        stored = await schedules.insert_schedule(row)
    finally:
        await pool.close()
    return stored["id"]


async def list_schedules(settings: Settings, count: int) -> list[str]:
    """Return the lines of the schedule table, with each schedule's next fire times."""
    pool, schedules = await _open(settings)
    try:
        rows = await schedules.list_schedules()
    finally:
        await pool.close()
    if not rows:
        return ["no schedules"]
    table = [("ID", "FUNCTION", "TIMING", "STATE", "CATCH-UP", "NEXT FIRE TIMES")]
    table.extend(_describe(row, count) for row in rows)
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(line, widths)), line[-1]]).rstrip()
            for line in table]


async def change_schedule(settings: Settings, action: str, schedule_id: str) -> str:
    """Pause, resume or delete a schedule; return a confirmation line."""
    pool, schedules = await _open(settings)
    try:
        operation = {"pause": schedules.pause_schedule, "resume": schedules.resume_schedule,
                     "delete": schedules.delete_schedule}[action]
        if await operation(schedule_id):
            return {"pause": "paused", "resume": "resumed", "delete": "deleted"}[action] + f" schedule {schedule_id}"
        existing = await schedules.get_schedule(schedule_id)
    finally:
        await pool.close()
    if existing is None:
        raise NotFoundError(f"schedule {schedule_id} does not exist; `taskservice schedules list` shows the ids")
    state = "paused" if existing["paused"] else "active"
    raise ServiceError(f"schedule {schedule_id} is already {state}")


async def _open(settings: Settings) -> tuple[Any, ScheduleRepository]:
    # The store is imported here, as the CLI's other commands do, so `taskservice --help`
    # does not load the database driver.
    from taskservice.store.db import create_pool
    from taskservice.store.schedule_repository import ScheduleRepository

    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="admin")
    return pool, ScheduleRepository(pool)


def _describe(row: Any, count: int) -> tuple[str, ...]:
    if row["interval_s"] is not None:
        timing = f"every {row['interval_s']} s"
    else:
        timing = f"cron '{row['cron_expression']}' {row['time_zone']}"
    state = "paused" if row["paused"] else "active"
    catch_up = row["catch_up"] + (f" (max {row['catch_up_max']})" if row["catch_up"] == "all" else "")
    fire_times: list[datetime] = []
    if count:
        fire_times = [row["next_timestamp"], *next_fire_times(row, row["next_timestamp"], count - 1)]
    return (row["id"], row["function_name"], timing, state, catch_up,
            ", ".join(_format_with_local(row, fire_time) for fire_time in fire_times))


def _format_with_local(row: Any, fire_time: datetime) -> str:
    text = format_fire_time(fire_time)
    if row["cron_expression"] is None or row["time_zone"] == "UTC":
        return text
    local = fire_time.astimezone(ZoneInfo(row["time_zone"]))
    return f"{text} ({local.strftime('%Y-%m-%d %H:%M %Z')})"


def _parse_interval(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise InvalidScheduleError(f"--interval {text!r} is not a number of seconds") from None


def _parse_data(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidScheduleError(f"--data {text!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidScheduleError(f"--data must be a JSON object, got {type(data).__name__}")
    return data


def _parse_start(text: str) -> datetime:
    try:
        start = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError as exc:
        raise InvalidScheduleError(f"--start {text!r} is not an ISO-8601 time, e.g. 2027-01-01T00:00:00Z") from exc
    if start.tzinfo is None:
        raise InvalidScheduleError(f"--start {text!r} has no offset; add 'Z' or '+01:00'")
    return start
