"""Routes under /tasks/v1/schedules: list, create and delete interval schedules.

The scheduler role creates the tasks: one per fire time `startTimestamp + k × interval`,
each copying the schedule's functionName, data and priority. Cron schedules made by
other means are listed too, with their `cronExpression` and `timeZone` as extensions.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request

from taskservice.api.auth import require
from taskservice.api.context import context_of
from taskservice.api.errors import FieldFormatError, ResourceUnknownError
from taskservice.api.models import AffectedRecords, ErrorBody, Schedule, ScheduleCreate, SchedulePage
from taskservice.api.tasks import compiled_rql
from taskservice.api.wire import WireResponse, affected, both_spellings, drop_none, iso, object_id, page, selected
from taskservice.auth.tokens import Caller
from taskservice.ids import new_object_id
from taskservice.scheduler.cron import InvalidScheduleError
from taskservice.scheduler.timing import next_fire_times
from taskservice.store.resources import SCHEDULES

router = APIRouter(prefix="/tasks/v1/schedules", tags=["schedules"],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody}})


# Upcoming fire times returned with each schedule, an extension of the upstream object.
NEXT_FIRE_TIMES_SHOWN = 5


def _next_fire_times(row: Any) -> list[str]:
    after = row["next_timestamp"] - timedelta(microseconds=1)
    try:
        return [iso(moment) for moment in next_fire_times(row, after, NEXT_FIRE_TIMES_SHOWN)]
    except InvalidScheduleError:
        return []


def schedule_wire(row: Any) -> dict[str, Any]:
    """Build a Schedule object, with the extensions cron, tags, pause and upcoming fire times."""
    return drop_none({
        "id": row["id"],
        "functionName": row["function_name"],
        "interval": row["interval_s"],
        "cronExpression": row["cron_expression"],
        "timeZone": row["time_zone"] if row["cron_expression"] else None,
        "data": row["data"],
        "priority": row["priority"],
        "startTimestamp": iso(row["start_timestamp"]),
        "nextTimestamp": iso(row["next_timestamp"]),
        "nextFireTimestamps": _next_fire_times(row),
        "tags": list(row["tags"]) if row["tags"] else None,
        "paused": row["paused"],
        "catchUp": row["catch_up"],
        "createdByUserId": row["created_by_user_id"],
        "createdByApplicationId": row["created_by_application_id"],
        "creationTimestamp": iso(row["creation_timestamp"]),
        "updateTimestamp": iso(row["update_timestamp"]),
    })


@both_spellings(router.get, "", response_model=SchedulePage, summary="List schedules (RQL)")
async def list_schedules(request: Request, _caller: Caller = require("VIEW_TASK_SCHEDULES")) -> WireResponse:
    """Return a page of schedules."""
    compiled = compiled_rql(request, SCHEDULES)
    total, rows = await context_of(request).api.list_schedules(compiled)
    items = [selected(schedule_wire(row), compiled.select) for row in rows]
    return WireResponse(page(items, total, compiled.offset, compiled.limit))


@both_spellings(router.post, "", response_model=Schedule, summary="Create a schedule")
async def create_schedule(request: Request, body: ScheduleCreate,
                          caller: Caller = require("CREATE_TASK_SCHEDULE")) -> WireResponse:
    """Create an interval schedule; its first task is due at startTimestamp (default now)."""
    context = context_of(request)
    data = body.data or {}
    if len(orjson.dumps(data)) > context.settings.max_task_data_bytes:
        raise FieldFormatError(f"data is larger than {context.settings.max_task_data_bytes} bytes as JSON")
    start = body.startTimestamp
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    row = await context.api.insert_schedule({
        "id": new_object_id(), "function_name": body.functionName, "interval_s": body.interval, "data": data,
        "priority": body.priority, "start_timestamp": start,
        "user_id": caller.user_id, "application_id": caller.application_id,
    })
    if row is None:
        raise ResourceUnknownError(f"no function named {body.functionName!r}")
    return WireResponse(schedule_wire(row))


@router.delete("/{schedule_id}", response_model=AffectedRecords, summary="Delete a schedule")
async def delete_schedule(request: Request, schedule_id: str,
                          _caller: Caller = require("DELETE_TASK_SCHEDULE")) -> WireResponse:
    """Delete a schedule; tasks it created stay."""
    if not await context_of(request).api.delete_schedule(object_id(schedule_id, "scheduleId")):
        raise ResourceUnknownError(f"no schedule with id {schedule_id}")
    return affected(1)
