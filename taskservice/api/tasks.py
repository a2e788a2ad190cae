"""Routes under /tasks/v1: list, create, read and cancel tasks, and read task logs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request

from taskservice import metrics
from taskservice.api.auth import require
from taskservice.api.context import context_of
from taskservice.api.errors import (
    FieldFormatError,
    IllegalStateError,
    InvalidRqlError,
    NoTaskLogsFoundError,
    ResourceUnknownError,
)
from taskservice.api.models import AffectedRecords, EmptyBody, ErrorBody, LogPage, Task, TaskCreate, TaskPage
from taskservice.api.rql import Query, RqlError, parse_query, simple_terms
from taskservice.api.wire import (
    DEFAULT_PAGE_LIMIT,
    MAX_LOG_LIMIT,
    MAX_PAGE_LIMIT,
    WireResponse,
    affected,
    both_spellings,
    log_lines,
    object_id,
    page,
    selected,
    task_wire,
)
from taskservice.auth.tokens import Caller
from taskservice.ids import new_object_id
from taskservice.store.resources import TASKS
from taskservice.store.rql_sql import CompiledQuery, Resource, compile_query

router = APIRouter(prefix="/tasks/v1", tags=["tasks"], responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}})


def rql_of(request: Request) -> Query:
    """Parse the request's raw query string as RQL; raise INVALID_RQL_EXCEPTION."""
    try:
        return parse_query(request.scope.get("query_string", b"").decode("latin-1"))
    except RqlError as exc:
        raise InvalidRqlError(str(exc)) from exc


def compiled_rql(request: Request, resource: Resource) -> CompiledQuery:
    """Parse and compile the request's RQL for resource."""
    try:
        return compile_query(rql_of(request), resource, default_limit=DEFAULT_PAGE_LIMIT, max_limit=MAX_PAGE_LIMIT)
    except RqlError as exc:
        raise InvalidRqlError(str(exc)) from exc


def log_window(query: Query, field: str = "timestamp") -> tuple[datetime | None, int, int]:
    """Read the only RQL log queries allow: ge(timestamp,…) terms and limit(); return (since, limit, offset)."""
    since: datetime | None = None
    try:
        terms = simple_terms(query.filter)
    except RqlError as exc:
        raise InvalidRqlError(f"log queries accept only ge({field},<date>) and limit(): {exc}") from exc
    for operator, name, value in terms:
        if operator != "ge" or name != field:
            raise InvalidRqlError(f"log queries accept only ge({field},<date>) or {field}>=<date>, and limit()")
        if value.date is None:
            raise InvalidRqlError(f"{value.text!r} is not an ISO-8601 date such as 2025-01-31T09:00:00.000Z")
        since = value.date if since is None else max(since, value.date)
    if query.sort or query.select is not None:
        raise InvalidRqlError("log queries accept only ge() on the timestamp and limit()")
    return since, min(query.limit or MAX_LOG_LIMIT, MAX_LOG_LIMIT), query.offset


@both_spellings(router.get, "/", response_model=TaskPage, summary="List tasks (RQL)")
async def list_tasks(request: Request, _caller: Caller = require("VIEW_TASKS")) -> WireResponse:
    """Return a page of tasks matching the RQL query string."""
    compiled = compiled_rql(request, TASKS)
    total, rows = await context_of(request).api.list_tasks(compiled)
    items = [selected(task_wire(row), compiled.select) for row in rows]
    return WireResponse(page(items, total, compiled.offset, compiled.limit))


@both_spellings(router.post, "/", response_model=Task, summary="Create a task")
async def create_task(request: Request, body: TaskCreate, caller: Caller = require("CREATE_TASKS")) -> WireResponse:
    """Create a task of an enabled function; it runs when due."""
    context = context_of(request)
    data = body.data or {}
    size = len(orjson.dumps(data))
    if size > context.settings.max_task_data_bytes:
        raise FieldFormatError(f"data takes {size} bytes as JSON, more than {context.settings.max_task_data_bytes}")
    start = body.startTimestamp
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    row = await context.api.insert_task({
        "id": new_object_id(), "function_name": body.functionName, "data": data, "tags": body.tags or [],
        "priority": body.priority, "start_timestamp": start, "concurrency_key": body.concurrencyKey,
        "user_id": caller.user_id, "application_id": caller.application_id,
    })
    if row is None:
        raise ResourceUnknownError(f"no function named {body.functionName!r}")
    if not row["enabled"]:
        raise IllegalStateError(f"function {body.functionName!r} is disabled; enable it first")
    metrics.TASKS_CREATED.labels(source="api", function=body.functionName).inc()
    return WireResponse(task_wire(row))


@router.get("/{task_id}", response_model=Task, summary="Get one task with its result (extension)")
async def get_task(request: Request, task_id: str, _caller: Caller = require("VIEW_TASKS")) -> WireResponse:
    """Return one task with its run fields and, when complete, its result."""
    row = await context_of(request).api.get_task(object_id(task_id, "taskId"))
    if row is None:
        raise ResourceUnknownError(f"no task with id {task_id}")
    return WireResponse(task_wire(row, with_result=True))


@router.post("/{task_id}/cancel", response_model=AffectedRecords, summary="Cancel a new task")
async def cancel_task(request: Request, task_id: str, _body: EmptyBody | None = None,
                      _caller: Caller = require("CANCEL_TASKS")) -> WireResponse:
    """Cancel a task that has not started; a started task cannot be cancelled."""
    row = await context_of(request).api.cancel_task(object_id(task_id, "taskId"))
    if row is None:
        raise ResourceUnknownError(f"no task with id {task_id}")
    if row["previous_status"] != "new":
        raise IllegalStateError(f"task {task_id} is {row['previous_status']}; only new tasks can be cancelled")
    return affected(1)


@both_spellings(router.get, "/{task_id}/logs", response_model=LogPage, summary="Task log lines")
async def task_logs(request: Request, task_id: str, _caller: Caller = require("VIEW_TASK_LOGS")) -> WireResponse:
    """Return the log lines of a task's runs, optionally from ge(timestamp,…) on."""
    context = context_of(request)
    object_id(task_id, "taskId")
    since, limit, offset = log_window(rql_of(request))
    state = await context.api.get_task_state(task_id)
    if state is None:
        raise ResourceUnknownError(f"no task with id {task_id}")
    if state["attempt"] == 0:
        raise IllegalStateError(f"task {task_id} has not run yet, so it has no logs")
    rows = await context.api.list_task_logs(task_id, since, limit, offset)
    if not rows and not await context.api.list_task_logs(task_id, None, 1, 0):
        raise NoTaskLogsFoundError(f"no log lines of task {task_id} are stored yet; they follow the run")
    return WireResponse(_log_page(rows, offset, limit))


def _log_page(rows: list[Any], offset: int, limit: int) -> dict[str, Any]:
    return {"page": {"offset": offset, "limit": limit}, "data": log_lines(rows)}
