"""The demo: replays real blood-pressure measurements and user deletions through the pipeline.

It starts every role in this process, with embedded servers unless configured, and
creates two dispatchers. It then publishes the events at a fixed rate together with a few
malformed records, waits until every expected task is final and its result is on the
results topic, and returns a summary. Event ids are salted with a per-run id, so that repeated
runs against the same database create new tasks instead of deduplicating.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from taskservice.admin import create_dispatcher, register_functions
from taskservice.config import Settings
from taskservice.demo.dataset import (
    build_document_event,
    distinct_subject_ids,
    format_timestamp,
    load_measurements,
    stable_object_id,
    user_id_for_subject,
)
from taskservice.demo.stub_server import StubCleanupServer
from taskservice.embedded import embedded_servers
from taskservice.errors import ServiceError
from taskservice.kafka import create_producer, ensure_topics
from taskservice.service import Service
from taskservice.store.db import create_pool
from taskservice.store.migrate import migrate
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)

MEASUREMENT_FUNCTION = "analyze-measurement"
CLEANUP_FUNCTION = "gdpr-user-cleanup"
USER_DELETIONS = 25
# Records the ingest must reject: truncated JSON, bytes that are not UTF-8, a wrong schema.
MALFORMED_RECORDS = (b'{"specversion":"1.0","id":"broken",', b"\xff\xfe\x00", b'{"id": 42, "type": null}')

_SUMMARY_QUERY = """
SELECT count(*) AS created,
       count(*) FILTER (WHERE status = 'complete') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_timestamp - event_timestamp))
           AS latency_p50_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_timestamp - event_timestamp))
           AS latency_p99_s
FROM tasks WHERE event_id = ANY($1::text[])
"""


def _salted(event: dict[str, Any], run_id: str) -> dict[str, Any]:
    event = dict(event)
    event["id"] = stable_object_id(run_id, event["id"])
    return event


def build_demo_events(limit: int, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (document events, user_deleted events) for this run, without times yet."""
    measurements = load_measurements(limit=limit)
    if not measurements:
        raise ServiceError("the demo dataset is empty")
    documents = [_salted(build_document_event(m, time=datetime.now(UTC)), run_id) for m in measurements]
    deletions = [
        {"id": stable_object_id(run_id, "user_deleted", subject), "type": "user_deleted",
         "content": {"id": user_id_for_subject(subject)}, "creation_timestamp": 0}
        for subject in distinct_subject_ids(measurements)[:USER_DELETIONS]
    ]
    return documents, deletions


async def _setup(settings: Settings, stub_url: str) -> None:
    assert settings.database_url is not None
    await migrate(settings.database_url)
    if not settings.functions_dir.is_dir():
        raise ServiceError(
            f"functions folder {settings.functions_dir.resolve()} does not exist; run the demo from the "
            "repository root or set TASKSERVICE_FUNCTIONS_DIR"
        )
    await register_functions(settings, settings.functions_dir)
    pool = await create_pool(settings.database_url, size=2, role="demo")
    try:
        repository = Repository(pool)
        await repository.set_function_environment_variable(CLEANUP_FUNCTION, "CLEANUP_API_URL", stub_url)
        for name, event_type, function in (
            ("demo-analyze-measurements", "document.created", MEASUREMENT_FUNCTION),
            ("demo-gdpr-cleanup", "user_deleted", CLEANUP_FUNCTION),
        ):
            if await repository.get_dispatcher_id_by_name(name) is None:
                await create_dispatcher(settings, event_type, function, name, repository=repository)
    finally:
        await pool.close()


async def _expected_tasks(settings: Settings, events: list[dict[str, Any]]) -> int:
    """Count the tasks the stored dispatchers should create for these events."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="demo")
    try:
        actions = await Repository(pool).list_task_actions()
    finally:
        await pool.close()
    per_type: dict[str, int] = {}
    for action in actions:
        per_type[action["event_type"]] = per_type.get(action["event_type"], 0) + 1
    return sum(per_type.get(event["type"], 0) for event in events)


class _Collector:
    """Reads the results and dead-letter topics from the beginning and keeps this run's messages."""

    def __init__(self, settings: Settings, event_ids: set[str], malformed_offsets: set[tuple[int, int]]) -> None:
        self._settings = settings
        self._event_ids = event_ids
        self.malformed_offsets = malformed_offsets
        self.result_keys: set[tuple[str, int]] = set()
        self.result_messages = 0
        self.dead_lettered: set[tuple[int, int]] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self._settings.results_topic, self._settings.dead_letter_topic,
            bootstrap_servers=self._settings.kafka_bootstrap_servers, group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=10,
        )
        await consumer.start()
        try:
            while not stopping.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    for record in records:
                        self._collect(record)
        finally:
            await consumer.stop()

    def _collect(self, record: Any) -> None:
        if record.topic == self._settings.dead_letter_topic:
            headers = {key: value.decode() for key, value in record.headers}
            if headers.get("source_topic") in self._settings.topics:
                location = (int(headers["source_partition"]), int(headers["source_offset"]))
                if location in self.malformed_offsets:
                    self.dead_lettered.add(location)
            return
        message = orjson.loads(record.value)
        if message.get("eventId") in self._event_ids:
            self.result_messages += 1
            self.result_keys.add((message["taskId"], message["attempt"]))


async def _publish(settings: Settings, topic: str, events: list[dict[str, Any]], rate: float) -> None:
    producer = create_producer(settings, linger_ms=0)
    await producer.start()
    try:
        started = time.monotonic()
        futures = []
        for index, event in enumerate(events):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = datetime.now(UTC)
            if "specversion" in event:
                event["time"] = format_timestamp(now)
            else:
                event["creation_timestamp"] = int(now.timestamp() * 1000)
            key = (event.get("subject") or event["id"]).encode()
            futures.append(await producer.send(topic, value=orjson.dumps(event), key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _publish_malformed(settings: Settings, topic: str) -> set[tuple[int, int]]:
    producer = create_producer(settings, linger_ms=0)
    await producer.start()
    try:
        metadata = [await producer.send_and_wait(topic, value=value) for value in MALFORMED_RECORDS]
    finally:
        await producer.stop()
    return {(item.partition, item.offset) for item in metadata}


def _topic_for(settings: Settings, topic_format: str) -> str:
    for topic, fmt in settings.topics.items():
        if fmt == topic_format:
            return topic
    raise ServiceError(f"no topic has format {topic_format!r}; add one to the topics setting")


async def _run(settings: Settings, limit: int, rate: float, timeout_s: float) -> dict[str, Any]:
    run_id = uuid.uuid4().hex
    documents, deletions = build_demo_events(limit, run_id)
    stub = StubCleanupServer()
    stub.start()
    try:
        await _setup(settings, stub.url)
        expected = await _expected_tasks(settings, documents + deletions)
        service = Service(settings.model_copy(update={"http_port": 0}),
                          ("ingest", "worker", "relay", "sweeper"))
        service_task = asyncio.create_task(service.run(), name="demo-service")
        document_topic = _topic_for(settings, "cloudevents")
        await ensure_topics(settings, [*settings.topics, settings.results_topic, settings.dead_letter_topic])
        await _wait_until_consuming(service, service_task)
        malformed = await _publish_malformed(settings, document_topic)
        event_ids = {event["id"] for event in documents + deletions}
        collector = _Collector(settings, event_ids, malformed)
        stopping = asyncio.Event()
        collector_task = asyncio.create_task(collector.run(stopping), name="demo-collector")
        await asyncio.gather(
            _publish(settings, document_topic, documents, rate),
            _publish(settings, _topic_for(settings, "exh"), deletions, rate),
        )
        counts = await _wait_for_results(settings, collector, event_ids, expected, timeout_s, service_task)
        stopping.set()
        service.stop()
        await asyncio.gather(collector_task, service_task, return_exceptions=True)
    finally:
        stub.stop()
    summary = {
        "events_published": len(documents) + len(deletions),
        "malformed_published": len(MALFORMED_RECORDS),
        "tasks_expected": expected,
        "tasks_created": counts["created"],
        "tasks_completed": counts["completed"],
        "tasks_failed": counts["failed"],
        "results_received": len(collector.result_keys),
        "result_messages": collector.result_messages,
        "dead_lettered": len(collector.dead_lettered),
        "users_cleaned_up": len(stub.deleted_user_ids),
        "latency_p50_ms": round((counts["latency_p50_s"] or 0) * 1000, 1),
        "latency_p99_ms": round((counts["latency_p99_s"] or 0) * 1000, 1),
    }
    summary["all_accounted_for"] = (
        summary["tasks_created"] == expected
        and summary["tasks_completed"] == expected
        and summary["results_received"] == expected
        and summary["dead_lettered"] == len(MALFORMED_RECORDS)
    )
    return summary


async def _wait_until_consuming(service: Service, service_task: asyncio.Task[Any]) -> None:
    """Wait for the ingest consumer's first partition assignment, so latency excludes the group join."""
    waiter = asyncio.create_task(service.ingest_assigned.wait())
    await asyncio.wait({waiter, service_task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if service_task.done():
        service_task.result()
        raise ServiceError("the service stopped before it consumed anything; see the log above")


async def _wait_for_results(
    settings: Settings, collector: _Collector, event_ids: set[str], expected: int, timeout_s: float,
    service_task: asyncio.Task[Any],
) -> dict[str, Any]:
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="demo")
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            row = await pool.fetchrow(_SUMMARY_QUERY, list(event_ids))
            counts = dict(row)
            done = counts["completed"] + counts["failed"]
            finished = (counts["created"] >= expected and done >= counts["created"]
                        and len(collector.result_keys) >= done
                        and len(collector.dead_lettered) >= len(collector.malformed_offsets))
            if finished or time.monotonic() > deadline or service_task.done():
                if not finished:
                    logger.error("demo timed out or the service stopped before every result arrived",
                                 extra={"event": "demo_incomplete"})
                return counts
            await asyncio.sleep(0.2)
    finally:
        await pool.close()


def run_demo(settings: Settings, *, limit: int, rate: float, timeout_s: float) -> dict[str, Any]:
    """Run the demo with embedded servers where none are configured; return the summary."""
    with embedded_servers(settings) as resolved:
        return asyncio.run(_run(resolved, limit, rate, timeout_s))
