"""Dispatchers in memory: event type to task actions, and the task rows an event creates."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from taskservice.consumers.decode import Event
from taskservice.ids import new_object_id
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TaskAction:
    """A dispatcher's task action: which function to run with which data."""

    dispatcher_id: str
    action_id: str
    function_name: str
    data: dict[str, Any]
    tags: tuple[str, ...]
    start_timestamp: datetime | None


class TaskDataTooLarge(ValueError):
    """Raised when an event's task data exceeds the configured limit."""


class DispatcherTable:
    """The task actions of every dispatcher, grouped by event type, reloaded on change."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository
        self._by_event_type: dict[str, list[TaskAction]] = {}
        self._reload_lock = asyncio.Lock()

    @property
    def action_count(self) -> int:
        """Number of task actions loaded."""
        return sum(len(actions) for actions in self._by_event_type.values())

    async def reload(self) -> None:
        """Read every task action from the database and swap the table in one step."""
        async with self._reload_lock:
            rows = await self._repository.list_task_actions()
            table: dict[str, list[TaskAction]] = {}
            for row in rows:
                action = TaskAction(
                    dispatcher_id=row["dispatcher_id"],
                    action_id=row["action_id"],
                    function_name=row["function_name"],
                    data=orjson.loads(row["data"]),
                    tags=tuple(row["tags"]),
                    start_timestamp=row["start_timestamp"],
                )
                table.setdefault(row["event_type"], []).append(action)
            self._by_event_type = table
        logger.debug("loaded %d task actions", self.action_count, extra={"event": "dispatchers_loaded"})

    def actions_for(self, event_type: str) -> list[TaskAction]:
        """Return the task actions that run for events of this type."""
        return self._by_event_type.get(event_type, [])


def build_task_row(event: Event, action: TaskAction, max_data_bytes: int) -> dict[str, Any]:
    """Build the task row an action creates for an event.

    The task's data is the action's data plus the normalised event under `event`, which
    overwrites an `event` key of the action's data, as ExtraHorizon dispatchers do.
    """
    data = dict(action.data)
    data["event"] = event.document
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
        "priority": None,
        "start_timestamp": action.start_timestamp.isoformat() if action.start_timestamp else None,
        "idempotency_key": f"event:{event.key}:{action.action_id}",
        "source": "event",
        "event_id": event.event_id,
        "event_timestamp": event.time.isoformat() if event.time else None,
    }


def task_rows_for(dispatchers: DispatcherTable, event: Event, max_data_bytes: int) -> list[dict[str, Any]]:
    """Return the task rows that an event creates: one per matching task action."""
    return [build_task_row(event, action, max_data_bytes) for action in dispatchers.actions_for(event.type)]
