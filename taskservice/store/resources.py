"""RQL field tables of the listed resources: wire name → SQL expression and type."""

from __future__ import annotations

from taskservice.store.queries import API_DISPATCHER_ACTIONS
from taskservice.store.rql_sql import Field, FieldType, Resource

TEXT, NUMBER, TIMESTAMP, ARRAY, JSON = (FieldType.TEXT, FieldType.NUMBER, FieldType.TIMESTAMP,
                                        FieldType.TEXT_ARRAY, FieldType.JSON)

TASKS = Resource(
    name="tasks",
    fields={
        "id": Field("id", TEXT),
        "functionName": Field("function_name", TEXT),
        "status": Field("status", TEXT),
        "statusChangedTimestamp": Field("status_changed_timestamp", TIMESTAMP),
        "data": Field("data", JSON),
        "tags": Field("tags", ARRAY),
        "priority": Field("priority", NUMBER),
        "startTimestamp": Field("start_timestamp", TIMESTAMP),
        "createdByUserId": Field("created_by_user_id", TEXT),
        "createdByApplicationId": Field("created_by_application_id", TEXT),
        "creationTimestamp": Field("creation_timestamp", TIMESTAMP),
        "updateTimestamp": Field("update_timestamp", TIMESTAMP),
        "retriedByTaskId": Field("retried_by_task_id", TEXT),
        "retryForTaskIds": Field("retry_for_task_ids", ARRAY),
        "error": Field("error", JSON),
        "attempt": Field("attempt", NUMBER),
        "startedTimestamp": Field("started_timestamp", TIMESTAMP),
        "finishedTimestamp": Field("finished_timestamp", TIMESTAMP),
    },
    default_order="creation_timestamp ASC",
    tiebreak="id",
)

DISPATCHERS = Resource(
    name="dispatchers",
    fields={
        "id": Field("d.id", TEXT),
        "name": Field("d.name", TEXT),
        "description": Field("d.description", TEXT),
        "eventType": Field("d.event_type", TEXT),
        "tags": Field("d.tags", ARRAY),
        # The aggregate of the list query, so that contains(actions, eq(functionName,x)) works.
        "actions": Field(f"({API_DISPATCHER_ACTIONS.strip()})", JSON, sortable=False),
        "creationTimestamp": Field("d.creation_timestamp", TIMESTAMP),
        "updateTimestamp": Field("d.update_timestamp", TIMESTAMP),
    },
    default_order="d.creation_timestamp ASC",
    tiebreak="d.id",
)

API_REQUESTS = Resource(
    name="apiRequests",
    fields={
        "id": Field("id", TEXT),
        "functionName": Field("function_name", TEXT),
        "method": Field("method", TEXT),
        "path": Field("path", TEXT),
        "userId": Field("user_id", TEXT),
        "applicationId": Field("application_id", TEXT),
        "statusCode": Field("status_code", NUMBER),
        "timestamp": Field("timestamp", TIMESTAMP),
        "duration": Field("duration", NUMBER),
        "error": Field("error", JSON),
    },
    default_order="timestamp ASC",
    tiebreak="id",
)

SCHEDULES = Resource(
    name="schedules",
    fields={
        "id": Field("id", TEXT),
        "functionName": Field("function_name", TEXT),
        "interval": Field("interval_s", NUMBER),
        "data": Field("data", JSON),
        "tags": Field("tags", ARRAY),
        "priority": Field("priority", NUMBER),
        "startTimestamp": Field("start_timestamp", TIMESTAMP),
        "nextTimestamp": Field("next_timestamp", TIMESTAMP),
        "createdByUserId": Field("created_by_user_id", TEXT),
        "createdByApplicationId": Field("created_by_application_id", TEXT),
        "creationTimestamp": Field("creation_timestamp", TIMESTAMP),
        "updateTimestamp": Field("update_timestamp", TIMESTAMP),
    },
    default_order="creation_timestamp ASC",
    tiebreak="id",
)
