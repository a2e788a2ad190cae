"""Dispatchers in memory: the task actions an event triggers, and the task rows it creates.

Dispatchers are grouped by event type. Within a type, a PatternIndex over their filters
finds the matching ones, so many dispatchers with filters cost about one lookup per event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from taskservice.consumers.decode import Event
from taskservice.consumers.expressions import MissingValueError
from taskservice.consumers.patterns import PatternIndex
from taskservice.consumers.rules import (
    ActionRules,
    RuleError,
    check_transition,
    compile_action_rules,
    compile_dispatcher_pattern,
)
from taskservice.ids import new_object_id
from taskservice.schemas.results import DeadLetterReason
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)

# Idempotency keys longer than this keep a digest of the deduplication value instead.
MAX_READABLE_KEY = 512


@dataclass(frozen=True, slots=True)
class TaskAction:
    """A dispatcher's task action: which function to run with which data."""

    dispatcher_id: str
    action_id: str
    function_name: str
    data: dict[str, Any]
    tags: tuple[str, ...]
    start_timestamp: datetime | None
    rules: ActionRules = ActionRules()
    transition: bool = False    # the dispatcher reacts to document transitions


class ActionFailed(ValueError):
    """Raised when an event cannot become a task for an action; the record is dead-lettered."""

    reason: DeadLetterReason = "mapping_failed"


class TaskDataTooLarge(ActionFailed):
    """Raised when an event's task data exceeds the configured limit."""

    reason: DeadLetterReason = "too_large"


class MappingFailed(ActionFailed):
    """Raised when a path of an action's input or keys finds nothing in the event."""


class DispatcherTable:
    """The task actions of every dispatcher, grouped by event type, reloaded on change."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository
        self._by_event_type: dict[str, PatternIndex[tuple[TaskAction, ...]]] = {}
        self._action_count = 0
        self._reload_lock = asyncio.Lock()

    @property
    def action_count(self) -> int:
        """Number of task actions loaded."""
        return self._action_count

    async def reload(self) -> None:
        """Read every task action from the database and swap the table in one step."""
        async with self._reload_lock:
            rows = await self._repository.list_task_actions()
            self._by_event_type, self._action_count = build_index(rows)
        logger.debug("loaded %d task actions", self._action_count, extra={"event": "dispatchers_loaded"})

    def actions_for(self, event: Event) -> list[TaskAction]:
        """Return the task actions that run for this event, in dispatcher order."""
        index = self._by_event_type.get(event.type)
        if index is None:
            return []
        return [action for actions in index.match(event.document) for action in actions]


def build_index(rows: list[Any]) -> tuple[dict[str, PatternIndex[tuple[TaskAction, ...]]], int]:
    """Compile task-action rows (ordered by dispatcher) into one pattern index per event type.

    A dispatcher whose stored rules no longer compile is left out with an error in the log.
    The API checks rules on save, so only rows written around it can fail here.
    """
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row["dispatcher_id"], []).append(row)
    entries: dict[str, list[tuple[tuple[TaskAction, ...], Any]]] = {}
    count = 0
    for dispatcher_id, dispatcher_rows in grouped.items():
        first = dispatcher_rows[0]
        try:
            transition = check_transition(_json(first["transition"]), first["event_type"])
            pattern = compile_dispatcher_pattern(_json(first["filter"]), transition)
            actions = tuple(_task_action(row, transition is not None) for row in dispatcher_rows)
        except RuleError as exc:
            logger.error("dispatcher %s is left out: its stored rules are invalid: %s", dispatcher_id, exc,
                         extra={"event": "dispatcher_invalid", "dispatcher_id": dispatcher_id})
            continue
        entries.setdefault(first["event_type"], []).append((actions, pattern))
        count += len(actions)
    return {event_type: PatternIndex(items) for event_type, items in entries.items()}, count


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def _task_action(row: Any, transition: bool) -> TaskAction:
    fields = {
        "input": _json(row["input"]), "includeEvent": row["include_event"],
        "deduplicationKey": row["deduplication_key"], "concurrencyKey": row["concurrency_key"],
        "delaySeconds": row["delay_s"], "priority": row["priority"],
    }
    return TaskAction(
        dispatcher_id=row["dispatcher_id"],
        action_id=row["action_id"],
        function_name=row["function_name"],
        data=_json(row["data"]),
        tags=tuple(row["tags"]),
        start_timestamp=row["start_timestamp"],
        rules=compile_action_rules(fields, has_start_timestamp=row["start_timestamp"] is not None),
        transition=transition,
    )


def _idempotency_key(event: Event, action: TaskAction) -> str:
    template = action.rules.deduplication_key
    if template is None:
        return f"event:{event.key}:{action.action_id}"
    value = template.render(event.document)
    if len(value) > MAX_READABLE_KEY:
        value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return f"dedup:{action.action_id}:{value}"


def _start_timestamp(event: Event, action: TaskAction) -> str | None:
    if action.start_timestamp is not None:
        return action.start_timestamp.isoformat()
    if action.rules.delay_s is not None:
        base = event.time or datetime.now(UTC)
        return (base + timedelta(seconds=action.rules.delay_s)).isoformat()
    return None


def _task_data(event: Event, action: TaskAction) -> dict[str, Any]:
    data = dict(action.data)
    if action.rules.input is not None:
        data.update(action.rules.input.apply(event.document))
    if action.transition:
        # Data Service transition actions add the document's ids over the action's data.
        document = event.document.get("data") or {}
        for field in ("schemaId", "documentId"):
            if field not in document:
                raise MissingValueError(f"transition event has no data.{field}")
            data[field] = document[field]
    include_event = action.rules.include_event
    if include_event if include_event is not None else not action.transition:
        data["event"] = event.document
    return data


def build_task_row(event: Event, action: TaskAction, max_data_bytes: int) -> dict[str, Any]:
    """Build the task row an action creates for an event.

    The task's data is the action's data, then the mapped input, then (for transition
    dispatchers) the document's schemaId and documentId, and unless includeEvent is false
    the normalised event under `event`, which overwrites an `event` key before it, as
    ExtraHorizon dispatchers do. Raises ActionFailed when the event does not fit.
    """
    try:
        data = _task_data(event, action)
        idempotency_key = _idempotency_key(event, action)
        concurrency_key = action.rules.concurrency_key.render(event.document) if action.rules.concurrency_key else None
    except MissingValueError as exc:
        raise MappingFailed(
            f"dispatcher {action.dispatcher_id} action {action.action_id} (function {action.function_name}): {exc}"
        ) from exc
    size = len(orjson.dumps(data))
    if size > max_data_bytes:
        raise TaskDataTooLarge(
            f"task data for function {action.function_name!r} has {size} bytes, more than the limit "
            f"of {max_data_bytes}; send a smaller event or raise max_task_data_bytes"
        )
    return {
        "id": new_object_id(),
        "function_name": action.function_name,
        "data": data,
        "tags": list(action.tags),
        "priority": action.rules.priority,
        "start_timestamp": _start_timestamp(event, action),
        "idempotency_key": idempotency_key,
        "concurrency_key": concurrency_key,
        "source": "event",
        "event_id": event.event_id,
        "event_timestamp": event.time.isoformat() if event.time else None,
    }


def task_rows_for(dispatchers: DispatcherTable, event: Event, max_data_bytes: int) -> list[dict[str, Any]]:
    """Return the task rows that an event creates: one per matching task action.

    All or nothing: when one action fails, ActionFailed propagates and the event creates
    no task, so a replay of the record after a fix creates all of them.
    """
    return [build_task_row(event, action, max_data_bytes) for action in dispatchers.actions_for(event)]
