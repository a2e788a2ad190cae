"""API functions (/tasks/v1/api/{name}/…) and their API Request records.

A call builds a subset of the AWS API Gateway HTTP API payload 2.0, runs the function
synchronously with it, checks the returned response object and sends it. The server
drops caller-sent `x-exh-requesting-user-id` and `x-exh-requesting-application-id`
headers and sets them for authenticated callers, so a function can trust them. The
caller's Authorization and Cookie headers are not passed on, so user code never receives
the caller's tokens.

The request body is passed as text when it is valid UTF-8 and its Content-Type is
text/*, JSON, XML or form data, and as base64 otherwise; an empty body is "".
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from taskservice.api.auth import caller_if_any, require
from taskservice.api.context import context_of
from taskservice.api.errors import (
    ApiError,
    ApiFunctionTimeLimitError,
    FieldFormatError,
    IllegalStateError,
    InvalidApiFunctionResultError,
    LambdaInvocationError,
    LambdaRuntimeError,
    NoApiRequestLogsFoundError,
    ResourceUnknownError,
)
from taskservice.api.functions import check_run_permission
from taskservice.api.models import ApiRequestPage, ErrorBody, LogPage
from taskservice.api.tasks import compiled_rql, log_window, rql_of
from taskservice.api.wire import WireResponse, both_spellings, drop_none, iso, log_lines, object_id, page, selected
from taskservice.auth.tokens import Caller
from taskservice.functions import TaskOutcome
from taskservice.ids import new_object_id
from taskservice.store.resources import API_REQUESTS

router = APIRouter(prefix="/tasks/v1", tags=["api functions"],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody}})

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
TRUSTED_HEADERS = ("x-exh-requesting-user-id", "x-exh-requesting-application-id")
_WITHHELD_HEADERS = {"authorization", "cookie", *TRUSTED_HEADERS}
_SERVER_HEADERS = {"connection", "content-length", "transfer-encoding"}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")
_TEXT_TYPES = re.compile(r"^(text/|application/(json|xml|x-www-form-urlencoded|[\w.+-]*\+(json|xml)))", re.I)


async def build_event(request: Request, path: str, caller: Caller | None, request_id: str,
                      max_bytes: int) -> dict[str, Any]:
    """Build the API Gateway v2 request object the function receives."""
    raw = await request.body()
    if len(raw) > max_bytes:
        raise FieldFormatError(f"the request body has {len(raw)} bytes, more than {max_bytes}")
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        name = name.lower()
        if name not in _WITHHELD_HEADERS:
            # Repeated headers are joined with commas, as API Gateway payload 2.0 does.
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    if caller is not None:
        headers[TRUSTED_HEADERS[0]] = caller.user_id
        if caller.application_id:
            headers[TRUSTED_HEADERS[1]] = caller.application_id
    body, is_base64 = _body_text(raw, headers.get("content-type", ""))
    query = request.scope.get("query_string", b"").decode("latin-1")
    return {
        "id": request_id,
        "version": "2.0",
        "rawPath": "/" + path,
        "rawQueryString": f"?{query}" if query else "",
        "headers": headers,
        "requestContext": {
            "requestId": request_id,
            "timeEpoch": int(time.time() * 1000),
            "http": {"method": request.method, "path": "/" + path, "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
                     "sourceIp": request.client.host if request.client else "", "userAgent": headers.get("user-agent", "")},
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def _body_text(raw: bytes, content_type: str) -> tuple[str, bool]:
    if not raw:
        return "", False
    if _TEXT_TYPES.match(content_type.strip()):
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(raw).decode(), True


def build_response(result: Any, max_bytes: int) -> Response:
    """Check the function's response object and turn it into the HTTP response; raise 1409."""
    if not isinstance(result, dict):
        raise InvalidApiFunctionResultError(f"the function returned {type(result).__name__}, not a response object")
    status = result.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 499:
        raise InvalidApiFunctionResultError(f"statusCode must be an integer from 200 to 499 (got {status!r})")
    headers = result.get("headers") or {}
    if not isinstance(headers, dict):
        raise InvalidApiFunctionResultError("headers must be an object of strings")
    for name, value in headers.items():
        if not isinstance(value, str) or not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(value):
            raise InvalidApiFunctionResultError(f"header {name!r} must have a [A-Za-z0-9_.-] name and a "
                                                "printable ASCII string value")
    body = _response_body(result)
    if len(body) > max_bytes:
        raise InvalidApiFunctionResultError(f"the response body has {len(body)} bytes, more than {max_bytes}")
    kept = {name: value for name, value in headers.items() if name.lower() not in _SERVER_HEADERS}
    if not any(name.lower() == "content-type" for name in kept):
        kept["Content-Type"] = "application/json"
    return Response(content=body, status_code=status, headers=kept)


def _response_body(result: dict[str, Any]) -> bytes:
    body = result.get("body")
    is_base64 = result.get("isBase64Encoded", False)
    if not isinstance(is_base64, bool):
        raise InvalidApiFunctionResultError("isBase64Encoded must be true or false")
    if body is None:
        return b""
    if is_base64:
        if not isinstance(body, str):
            raise InvalidApiFunctionResultError("a base64 body must be a string")
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidApiFunctionResultError(f"body is not valid base64: {exc}") from exc
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


async def call_api_function(request: Request, name: str, path: str, caller: Caller | None) -> Response:
    """Run an API function for one request and record the call."""
    context = context_of(request)
    settings = context.settings
    function = await context.api.get_function(name)
    if function is None:
        raise ResourceUnknownError(f"no function named {name!r}")

    check_run_permission(function, caller, "EXECUTE_API_FUNCTION")
    if not function["enabled"]:
        raise IllegalStateError(f"function {name!r} is disabled; enable it first")
    if function["time_limit_s"] > settings.sync_execution_max_time_limit_s:
        raise ApiFunctionTimeLimitError(
            f"timeLimit of {name!r} is {function['time_limit_s']} s; API functions allow at most "
            f"{settings.sync_execution_max_time_limit_s} s"
        )

    request_id = new_object_id()
    started = datetime.now(UTC)
    record = {"id": request_id, "function_name": name, "method": request.method,
              "path": "/" + path + (f"?{request.url.query}" if request.url.query else ""),
              "user_id": caller.user_id if caller else None,
              "application_id": caller.application_id if caller else None, "timestamp": started}
    outcome: TaskOutcome | None = None

    try:
        with context.executor.slot("api"):
            event = await build_event(request, path, caller, request_id, settings.api_function_max_payload_bytes)
            spec = await context.executor.spec_for(function)
            outcome = await context.executor.run_request(spec, event)
        response = _outcome_response(outcome, name, request_id, settings.api_function_max_payload_bytes)
    except ApiError as exc:
        error_type = "response" if isinstance(exc, InvalidApiFunctionResultError) else (
            "runtime" if isinstance(exc, LambdaRuntimeError) else "invocation")
        _record(context, record, started, exc.status, outcome,
                {"type": error_type, "name": exc.name, "message": exc.message})
        raise

    _record(context, record, started, response.status_code, outcome, None)
    return response


def _outcome_response(outcome: TaskOutcome, name: str, request_id: str, max_bytes: int) -> Response:
    if outcome.ok:
        return build_response(outcome.result, max_bytes)
    error = outcome.error or {}
    if error.get("type") == "invocation":
        raise LambdaInvocationError(f"function {name!r} could not be started: {error.get('message')}",
                                    apiRequestId=request_id)
    raise LambdaRuntimeError(f"function {name!r} failed: {error.get('name')}: {error.get('message')}",
                             apiRequestId=request_id,
                             runtimeError={"name": error.get("name"), "message": error.get("message")})


def _record(context: Any, record: dict[str, Any], started: datetime, status: int, outcome: TaskOutcome | None,
            error: dict[str, Any] | None) -> None:
    record = {**record, "status_code": status, "error": error,
              "duration": (datetime.now(UTC) - started).total_seconds()}
    context.executor.record_request(record, outcome.logs if outcome is not None else [])


async def api_function_root(request: Request, name: str, caller: Caller | None = caller_if_any()) -> Response:
    """Run the API function with the request; respond with what it returned."""
    return await call_api_function(request, name, "", caller)


async def api_function_path(request: Request, name: str, path: str,
                            caller: Caller | None = caller_if_any()) -> Response:
    """Run the API function with the request on a sub-path; respond with what it returned."""
    return await call_api_function(request, name, path, caller)


# One route per method, so each gets its own OpenAPI operation id.
for _method in METHODS:
    router.add_api_route("/api/{name}", api_function_root, methods=[_method], summary="Call an API function",
                         name=f"api_function_{_method.lower()}")
    router.add_api_route("/api/{name}/{path:path}", api_function_path, methods=[_method],
                         summary="Call an API function on a sub-path", name=f"api_function_path_{_method.lower()}")


def api_request_wire(row: Any) -> dict[str, Any]:
    """Build an API Request record object."""
    return drop_none({
        "id": row["id"], "functionName": row["function_name"], "method": row["method"], "path": row["path"],
        "userId": row["user_id"], "applicationId": row["application_id"], "statusCode": row["status_code"],
        "timestamp": iso(row["timestamp"]), "duration": row["duration"], "error": row["error"],
    })


@both_spellings(router.get, "/apiRequests", response_model=ApiRequestPage, summary="List API requests (RQL)")
async def list_api_requests(request: Request,
                            _caller: Caller = require("VIEW_API_FUNCTION_REQUESTS")) -> WireResponse:
    """Return a page of API-function call records."""
    compiled = compiled_rql(request, API_REQUESTS)
    total, rows = await context_of(request).api.list_api_requests(compiled)
    items = [selected(api_request_wire(row), compiled.select) for row in rows]
    return WireResponse(page(items, total, compiled.offset, compiled.limit))


@both_spellings(router.get, "/apiRequests/{request_id}/logs", response_model=LogPage, summary="API request logs")
async def api_request_logs(request: Request, request_id: str,
                           _caller: Caller = require("VIEW_API_FUNCTION_REQUEST_LOGS")) -> WireResponse:
    """Return the log lines of one API-function call."""
    context = context_of(request)
    object_id(request_id, "apiRequestId")
    since, limit, offset = log_window(rql_of(request))
    if not await context.api.api_request_exists(request_id):
        raise ResourceUnknownError(f"no API request with id {request_id}")
    rows = await context.api.list_api_request_logs(request_id, since, limit, offset)
    if not rows and not await context.api.list_api_request_logs(request_id, None, 1, 0):
        raise NoApiRequestLogsFoundError(f"no log lines of API request {request_id} are stored")
    return WireResponse({"page": {"offset": offset, "limit": limit}, "data": log_lines(rows)})
