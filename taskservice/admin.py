"""Administrative operations shared by the CLI, the demo and the tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

from taskservice.config import Settings
from taskservice.consumers.rules import RuleError, action_rule_columns, dispatcher_rule_columns
from taskservice.definitions import FUNCTION_NAME, load_function_folders
from taskservice.errors import AlreadyExistsError, InvalidDefinitionError, ServiceError
from taskservice.ids import new_object_id
from taskservice.kafka import create_producer, ensure_topics
from taskservice.store.api_repository import ApiRepository
from taskservice.store.db import create_pool
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)


async def register_functions(settings: Settings, folder: Path) -> list[str]:
    """Store every function folder under folder; return the names created or changed."""
    definitions = load_function_folders(folder)
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="admin")
    try:
        repository = Repository(pool)
        changed = [definition["name"] for definition in definitions if await repository.upsert_function(definition)]
    finally:
        await pool.close()
    for name in changed:
        logger.info("registered function %s", name, extra={"event": "function_registered", "function": name})
    return changed


async def create_dispatcher(
    settings: Settings,
    event_type: str,
    function_name: str,
    name: str | None = None,
    data: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    *,
    rules: dict[str, Any] | None = None,
    repository: Repository | None = None,
) -> str:
    """Create a dispatcher with one task action; return its id.

    rules contains the optional rule fields by wire name: `filter` and `transition` of the
    dispatcher; `input`, `includeEvent`, `deduplicationKey`, `concurrencyKey`,
    `delaySeconds` and `priority` of the action. They are checked as the HTTP API checks them.
    """
    if not event_type or len(event_type) > 256:
        raise InvalidDefinitionError(f"event type {event_type!r} must have 1 to 256 characters")
    if not FUNCTION_NAME.match(function_name):
        raise InvalidDefinitionError(f"function name {function_name!r} must be 1 to 64 letters, digits or '-'")
    fields = {"eventType": event_type, **(rules or {})}
    try:
        dispatcher = {"id": new_object_id(), "name": name, "event_type": event_type, "tags": [],
                      **dispatcher_rule_columns(fields)}
        action = {"id": new_object_id(), "type": "task", "function_name": function_name, "data": data or {},
                  "tags": tags or [], **action_rule_columns(fields, "task")}
    except RuleError as exc:
        raise InvalidDefinitionError(str(exc)) from exc
    owned_pool = None
    if repository is None:
        assert settings.database_url is not None
        owned_pool = await create_pool(settings.database_url, size=2, role="admin")
        repository = Repository(owned_pool)
    try:
        await ApiRepository(repository.pool).insert_dispatcher(dispatcher, [action])
    except AlreadyExistsError as exc:
        raise AlreadyExistsError(f"a dispatcher named {name!r} already exists; choose another name") from exc
    finally:
        if owned_pool is not None:
            await owned_pool.close()
    return dispatcher["id"]


def _record_key(body: Any) -> bytes | None:
    if not isinstance(body, dict):
        return None
    key = body.get("subject") or body.get("id")
    return str(key).encode() if key is not None else None


async def publish_lines(settings: Settings, topic: str, text: str, *, raw: bool, source: str) -> int:
    """Publish each non-empty line of JSON Lines text as one record; return the count.

    Lines that are not JSON are rejected with their line number unless raw is set, in
    which case they are sent as they are (useful to exercise the dead-letter topic).
    """
    values: list[tuple[bytes | None, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if not raw:
                raise ServiceError(f"{source}:{number} is not valid JSON ({exc}); fix the line or pass --raw") from exc
            body = None
        values.append((_record_key(body), line.encode()))
    if not settings.kafka_bootstrap_servers:
        raise ServiceError("kafka_bootstrap_servers is not set; set KAFKA_BOOTSTRAP_SERVERS to the broker")
    await ensure_topics(settings, [topic])
    producer = create_producer(settings, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in values]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(values)
