"""Wire forms: JSON responses, timestamps, ids, pages, and rows turned into API objects."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Response

from taskservice.api.errors import IdFormatError
from taskservice.ids import is_object_id

# Maximum and default page sizes. ExtraHorizon's Events Service clamps to its maximum,
# and the SDK asks for limit(50) when it walks every page.
MAX_PAGE_LIMIT = 50
DEFAULT_PAGE_LIMIT = 20
MAX_LOG_LIMIT = 1_000


class WireResponse(Response):
    """A JSON response serialised with orjson, keeping user keys as they are."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def iso(value: datetime | None) -> str | None:
    """Format a timestamp as ISO-8601 UTC with milliseconds, e.g. 2025-01-31T09:00:00.000Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(value: datetime | None) -> int | None:
    """Return a timestamp as epoch milliseconds, the Dispatchers Service form."""
    return None if value is None else int(value.timestamp() * 1000)


def object_id(value: str, what: str = "id") -> str:
    """Return value when it is an ObjectId, else raise ID_FORMAT_EXCEPTION."""
    if not is_object_id(value):
        raise IdFormatError(f"{what} {value!r} is not a 24-character lowercase hexadecimal id")
    return value


def page(data: Sequence[dict[str, Any]], total: int | None, offset: int, limit: int) -> dict[str, Any]:
    """Build the paged envelope; total is left out when skipCount() was asked for."""
    page_info: dict[str, Any] = {"offset": offset, "limit": limit}
    if total is not None:
        page_info = {"total": total, **page_info}
    return {"page": page_info, "data": list(data)}


def selected(item: dict[str, Any], fields: Iterable[str] | None) -> dict[str, Any]:
    """Keep only the select()ed fields, and always the id."""
    if fields is None:
        return item
    keep = {"id", *fields}
    return {key: value for key, value in item.items() if key in keep}


def drop_none(item: dict[str, Any]) -> dict[str, Any]:
    """Leave out absent fields instead of sending null."""
    return {key: value for key, value in item.items() if value is not None}


def task_wire(row: Any, *, with_result: bool = False) -> dict[str, Any]:
    """Build a Task object; the run fields (attempt, started, finished, duration) are extensions."""
    started, finished = row["started_timestamp"], row["finished_timestamp"]
    task = {
        "id": row["id"],
        "functionName": row["function_name"],
        "status": row["status"],
        "statusChangedTimestamp": iso(row["status_changed_timestamp"]),
        "data": row["data"],
        "tags": list(row["tags"]),
        "priority": row["priority"],
        "startTimestamp": iso(row["start_timestamp"]),
        "createdByUserId": row["created_by_user_id"],
        "createdByApplicationId": row["created_by_application_id"],
        "retriedByTaskId": row["retried_by_task_id"],
        "retryForTaskIds": list(row["retry_for_task_ids"]) or None,
        "error": row["error"],
        "attempt": row["attempt"],
        "startedTimestamp": iso(started),
        "finishedTimestamp": iso(finished),
        "duration": (finished - started).total_seconds() if started and finished else None,
        "creationTimestamp": iso(row["creation_timestamp"]),
        "updateTimestamp": iso(row["update_timestamp"]),
    }
    task = drop_none(task)
    if with_result and row["status"] == "complete":
        task["result"] = row["result"]
    return task


def log_lines(rows: Iterable[Any], timestamp_key: str = "timestamp") -> list[dict[str, Any]]:
    """Build log line objects; the deprecated function log uses eventTimestamp."""
    return [{"message": row["message"], timestamp_key: iso(row["timestamp"])} for row in rows]


def affected(count: int) -> WireResponse:
    """Build the write result {"affectedRecords": n}."""
    return WireResponse({"affectedRecords": count})


def both_spellings(register: Callable[..., Any], path: str, **options: Any) -> Callable[[Any], Any]:
    """Register a handler on path with and without a trailing slash; the SDK uses both."""
    other = path[:-1] if path.endswith("/") else path + "/"

    def decorator(handler: Any) -> Any:
        register(other, include_in_schema=False, **options)(handler)
        return register(path, **options)(handler)

    return decorator
