"""Routes under /tasks/v1/functions: deploy, read, update, delete, enable, disable, execute."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request

from taskservice.api.auth import caller_if_any, require
from taskservice.api.code import check_entry_point, check_name, check_settings, decode_code
from taskservice.api.context import ApiContext, context_of
from taskservice.api.errors import (
    DirectExecutionTimeLimitError,
    EmptyRqlError,
    FieldFormatError,
    IllegalStateError,
    InvalidRqlError,
    LambdaInvocationError,
    LambdaRuntimeError,
    NoPermissionError,
    ResourceAlreadyExistsError,
    ResourceUnknownError,
    UserNotAuthenticatedError,
)
from taskservice.api.models import (
    AffectedRecords,
    EmptyBody,
    ErrorBody,
    ExecuteBody,
    FunctionCreate,
    FunctionDetails,
    FunctionPage,
    FunctionUpdate,
    LogPage,
    Task,
)
from taskservice.api.rql import RqlError, simple_terms
from taskservice.api.tasks import rql_of
from taskservice.api.wire import MAX_LOG_LIMIT, WireResponse, affected, both_spellings, iso, log_lines, task_wire
from taskservice.auth.tokens import Caller
from taskservice.ids import new_object_id
from taskservice.store.db import Record

router = APIRouter(prefix="/tasks/v1/functions", tags=["functions"],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody}})

MAX_FUNCTION_LOG_WINDOW = timedelta(hours=24)


def details(row: Record) -> dict[str, Any]:
    """Build a function's details object; everything but the code."""
    options = row["execution_options"] or {}
    item = {
        "name": row["name"],
        "description": row["description"],
        "entryPoint": row["entry_point"],
        "runtime": row["runtime"],
        "timeLimit": row["time_limit_s"],
        "memoryLimit": row["memory_limit_mb"],
        "environmentVariables": row["environment_variables"] or {},
        "executionOptions": {"permissionMode": options.get("permissionMode", "permissionRequired"),
                             "defaultPriority": options.get("defaultPriority", 0)},
        "retryPolicy": row["retry_policy"] or {"enabled": False, "errorsToRetry": []},
        "enabled": row["enabled"],
        "concurrencyLimit": row["concurrency_limit"],
        "creationTimestamp": iso(row["creation_timestamp"]),
        "updateTimestamp": iso(row["update_timestamp"]),
    }
    return {key: value for key, value in item.items() if value is not None}


async def _function(context: ApiContext, name: str) -> Record:
    row = await context.api.get_function(name)
    if row is None:
        raise ResourceUnknownError(f"no function named {name!r}")
    return row


@both_spellings(router.get, "/", response_model=FunctionPage, summary="List functions")
async def list_functions(request: Request, _caller: Caller = require("VIEW_TASK_FUNCTIONS")) -> WireResponse:
    """Return every function in one page; RQL is ignored."""
    rows = await context_of(request).api.list_functions()
    items = [{"name": row["name"], "description": row["description"], "updateTimestamp": iso(row["update_timestamp"])}
             for row in rows]
    items = [{key: value for key, value in item.items() if value is not None} for item in items]
    return WireResponse({"page": {"total": len(items), "offset": 0, "limit": len(items)}, "data": items})


@both_spellings(router.post, "/", response_model=FunctionDetails, summary="Deploy a function")
async def create_function(request: Request, body: FunctionCreate,
                          _caller: Caller = require("CREATE_TASK_FUNCTION")) -> WireResponse:
    """Validate the zip code and settings, then store the function."""
    context = context_of(request)
    check_name(body.name)
    code = decode_code(body.code)
    check_entry_point(body.entryPoint, code.names)
    row = {
        "name": body.name,
        "description": body.description,
        "entry_point": body.entryPoint,
        "runtime": body.runtime,
        "code_zip": code.zip_bytes,
        "code_digest": code.digest,
        "time_limit_s": 30 if body.timeLimit is None else body.timeLimit,
        "memory_limit_mb": 128 if body.memoryLimit is None else body.memoryLimit,
        "environment_variables": {key: {"value": value.value} for key, value in (body.environmentVariables or {}).items()},
        "execution_options": (body.executionOptions.model_dump() if body.executionOptions
                              else {"permissionMode": "permissionRequired", "defaultPriority": 0}),
        "retry_policy": body.retryPolicy.model_dump() if body.retryPolicy else {"enabled": False, "errorsToRetry": []},
        "concurrency_limit": body.concurrencyLimit,
    }
    check_settings(row)
    if not await context.api.insert_function(row):
        raise ResourceAlreadyExistsError(f"a function named {body.name!r} already exists; update it with PUT")
    return WireResponse(details(await _function(context, body.name)))


@router.get("/{name}", response_model=FunctionDetails, summary="Function details")
async def get_function(request: Request, name: str,
                       _caller: Caller = require("VIEW_TASK_FUNCTION_DETAILS")) -> WireResponse:
    """Return a function's settings, environment variables in clear text, without code."""
    return WireResponse(details(await _function(context_of(request), name)))


@router.put("/{name}", response_model=AffectedRecords, summary="Update a function")
async def update_function(request: Request, name: str, body: FunctionUpdate,
                          _caller: Caller = require("UPDATE_TASK_FUNCTION")) -> WireResponse:
    """Change the given settings and, when code is given, the code; other fields keep their value."""
    context = context_of(request)
    given = body.model_fields_set
    code = decode_code(body.code) if "code" in given and body.code is not None else None
    async with context.api.transaction() as connection:
        current = await context.api.lock_function(connection, name)
        if current is None:
            raise ResourceUnknownError(f"no function named {name!r}")
        row = _merged(current, body, given)
        if code is not None:
            row["code_zip"], row["code_digest"] = code.zip_bytes, code.digest
        if code is not None or "entryPoint" in given:
            names = code.names if code is not None else await _stored_names(context, connection, name)
            check_entry_point(row["entry_point"], names)
        check_settings(row)
        await context.api.update_function(connection, row)
    return affected(1)


def _merged(current: Record, body: FunctionUpdate, given: set[str]) -> dict[str, Any]:
    options = dict(current["execution_options"] or {})
    if "executionOptions" in given and body.executionOptions is not None:
        options.update(body.executionOptions.model_dump(include=body.executionOptions.model_fields_set))
    variables = current["environment_variables"] or {}
    if "environmentVariables" in given:
        variables = {key: {"value": value.value} for key, value in (body.environmentVariables or {}).items()}
    retry_policy = current["retry_policy"]
    if "retryPolicy" in given:
        retry_policy = body.retryPolicy.model_dump() if body.retryPolicy else {"enabled": False, "errorsToRetry": []}

    def pick(field: str, column: str) -> Any:
        value = getattr(body, field)
        return value if field in given and value is not None else current[column]

    return {
        "name": current["name"],
        "description": body.description if "description" in given else current["description"],
        "entry_point": pick("entryPoint", "entry_point"),
        "runtime": pick("runtime", "runtime"),
        "time_limit_s": pick("timeLimit", "time_limit_s"),
        "memory_limit_mb": pick("memoryLimit", "memory_limit_mb"),
        "environment_variables": variables,
        "execution_options": options,
        "retry_policy": retry_policy,
        "concurrency_limit": body.concurrencyLimit if "concurrencyLimit" in given else current["concurrency_limit"],
    }


async def _stored_names(context: ApiContext, connection: Any, name: str) -> frozenset[str]:
    code_zip = await context.api.get_function_zip(connection, name)
    with zipfile.ZipFile(io.BytesIO(code_zip or b"")) as archive:
        return frozenset(archive.namelist())


@router.delete("/{name}", response_model=AffectedRecords, summary="Delete a function")
async def delete_function(request: Request, name: str,
                          _caller: Caller = require("DELETE_TASK_FUNCTION")) -> WireResponse:
    """Delete a function; its tasks and their logs stay."""
    if not await context_of(request).api.delete_function(name):
        raise ResourceUnknownError(f"no function named {name!r}")
    return affected(1)


@router.post("/{name}/enable", response_model=AffectedRecords, summary="Enable a function")
async def enable_function(request: Request, name: str, _body: EmptyBody | None = None,
                          _caller: Caller = require("UPDATE_TASK_FUNCTION")) -> WireResponse:
    """Enable a function; affectedRecords is 1 whenever it exists."""
    return await _set_enabled(request, name, True)


@router.post("/{name}/disable", response_model=AffectedRecords, summary="Disable a function")
async def disable_function(request: Request, name: str, _body: EmptyBody | None = None,
                           _caller: Caller = require("UPDATE_TASK_FUNCTION")) -> WireResponse:
    """Disable a function; its tasks fail when due with FUNCTION_DISABLED."""
    return await _set_enabled(request, name, False)


async def _set_enabled(request: Request, name: str, enabled: bool) -> WireResponse:
    if not await context_of(request).api.set_function_enabled(name, enabled):
        raise ResourceUnknownError(f"no function named {name!r}")
    return affected(1)


def check_run_permission(function: Record, caller: Caller | None, permission: str) -> None:
    """Apply the function's permissionMode to a direct execution or API-function call."""
    mode = (function["execution_options"] or {}).get("permissionMode", "permissionRequired")
    if mode == "public":
        return
    if caller is None:
        raise UserNotAuthenticatedError(f"function {function['name']!r} needs an authenticated caller")
    if mode == "permissionRequired" and not caller.has(permission, function["name"]):
        raise NoPermissionError(f"permission {permission} or {permission}:{function['name']} is required")


@router.post("/{name}/execute", response_model=Task, summary="Execute a function directly")
async def execute_function(request: Request, name: str, body: ExecuteBody | None = None,
                           caller: Caller | None = caller_if_any()) -> WireResponse:
    """Run the function at once and return its finished task with `result`."""
    context = context_of(request)
    settings = context.settings
    function = await _function(context, name)
    check_run_permission(function, caller, "EXECUTE_TASK_FUNCTION")
    if not function["enabled"]:
        raise IllegalStateError(f"function {name!r} is disabled; enable it first")
    if function["time_limit_s"] > settings.sync_execution_max_time_limit_s:
        raise DirectExecutionTimeLimitError(
            f"timeLimit of {name!r} is {function['time_limit_s']} s; direct execution allows at most "
            f"{settings.sync_execution_max_time_limit_s} s"
        )
    data = (body.data if body is not None else None) or {}
    if len(orjson.dumps(data)) > settings.max_task_data_bytes:
        raise FieldFormatError(f"data is larger than {settings.max_task_data_bytes} bytes as JSON")
    with context.executor.slot("execute"):
        spec = await context.executor.spec_for(function)
        row = await context.api.insert_running_task(
            {"id": new_object_id(), "function_name": name, "data": data,
             "user_id": caller.user_id if caller else None,
             "application_id": caller.application_id if caller else None},
            context.executor.worker_id, function["time_limit_s"] + settings.lease_s,
        )
        if row is None or row["id"] is None:
            raise ResourceUnknownError(f"function {name!r} was deleted or disabled meanwhile")
        outcome = await context.executor.run_task(spec, row)
    task = task_wire(await context.api.get_task(row["id"]))
    if outcome.ok:
        task["result"] = outcome.result
        return WireResponse(task)
    error = outcome.error or {}
    if error.get("type") == "invocation":
        raise LambdaInvocationError(f"function {name!r} could not be started: {error.get('message')}",
                                    taskId=row["id"])
    raise LambdaRuntimeError(f"function {name!r} failed: {error.get('name')}: {error.get('message')}",
                             taskId=row["id"], runtimeError={"name": error.get("name"), "message": error.get("message")})


@both_spellings(router.get, "/{name}/logs", response_model=LogPage, summary="Function log lines (deprecated)")
async def function_logs(request: Request, name: str,
                        _caller: Caller = require("VIEW_TASK_FUNCTION_LOGS")) -> WireResponse:
    """Return log lines of the function's tasks between eventTimestamp>= and eventTimestamp<=, at most 24 h apart."""
    context = context_of(request)
    query = rql_of(request)
    bounds: dict[str, Any] = {}
    try:
        terms = simple_terms(query.filter)
    except RqlError as exc:
        raise InvalidRqlError(f"function logs accept only eventTimestamp bounds and limit(): {exc}") from exc
    for operator, field, value in terms:
        if operator not in ("ge", "le") or field != "eventTimestamp":
            raise InvalidRqlError("function logs accept only eventTimestamp>=<date>, eventTimestamp<=<date> and limit()")
        if value.date is None:
            raise InvalidRqlError(f"{value.text!r} is not an ISO-8601 date")
        bounds[operator] = value.date
    if set(bounds) != {"ge", "le"}:
        raise EmptyRqlError("function logs need both eventTimestamp>=<date> and eventTimestamp<=<date>")
    if bounds["le"] - bounds["ge"] > MAX_FUNCTION_LOG_WINDOW or bounds["le"] < bounds["ge"]:
        raise InvalidRqlError("eventTimestamp bounds must be in order and at most 24 hours apart")
    await _function(context, name)
    limit = min(query.limit or MAX_LOG_LIMIT, MAX_LOG_LIMIT)
    rows = await context.api.list_function_logs(name, bounds["ge"], bounds["le"], limit, query.offset)
    return WireResponse({"page": {"offset": query.offset, "limit": limit},
                         "data": log_lines(rows, "eventTimestamp")})
