"""Helpers for tests that drive the service against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from taskservice.admin import create_dispatcher, register_functions
from taskservice.config import Settings
from taskservice.kafka import ensure_topics
from taskservice.service import Service

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.1,
                   message: str = "condition") -> None:
    """Poll check until it returns True; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(interval)


def exh_event(event_id: str, event_type: str = "user_deleted", **content: Any) -> dict[str, Any]:
    """Build an ExtraHorizon event."""
    return {"id": event_id, "type": event_type, "content": content, "creation_timestamp": int(time.time() * 1000)}


def document_event(event_id: str, event_type: str = "document.created", **data: Any) -> dict[str, Any]:
    """Build a document-change CloudEvent."""
    return {
        "specversion": "1.0", "id": event_id, "source": "/data/v1/tests", "type": event_type,
        "time": "2027-01-01T00:00:00.000Z", "datacontenttype": "application/json", "subject": f"doc-{event_id}",
        "data": {"schemaId": "5f0000000000000000000001", "schemaName": "tests", "documentId": f"doc-{event_id}",
                 "status": "active", "data": data},
    }


async def publish(settings: Settings, topic: str, values: Iterable[bytes | dict[str, Any]], *,
                  partition: int | None = None) -> list[Any]:
    """Publish values in order (dicts as JSON, keyed by id); return their metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0,
                                enable_idempotence=False)
    await producer.start()
    try:
        metadata = []
        for value in values:
            if isinstance(value, dict):
                key = str(value.get("id", "")).encode()
                value = orjson.dumps(value)
            else:
                key = None
            metadata.append(await producer.send_and_wait(topic, value=value, key=key, partition=partition))
        return metadata
    finally:
        await producer.stop()


async def publish_paced(settings: Settings, topic: str, events: Iterable[dict[str, Any]], *, chunk: int,
                        interval_s: float, sent: list[Any]) -> None:
    """Publish events keyed by id, chunk records every interval_s seconds, on one producer.

    Appends the metadata of each record to sent as soon as its chunk is acknowledged, so
    the caller can follow the progress while this runs in a background task.
    """
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0,
                                enable_idempotence=False)
    await producer.start()
    try:
        pending = list(events)
        for start in range(0, len(pending), chunk):
            futures = [
                await producer.send(topic, value=orjson.dumps(event), key=str(event["id"]).encode())
                for event in pending[start:start + chunk]
            ]
            sent.extend(await asyncio.gather(*futures))
            if start + chunk < len(pending):
                await asyncio.sleep(interval_s)
    finally:
        await producer.stop()


def next_offsets(metadata: Iterable[Any]) -> dict[int, int]:
    """Return, per partition, the offset after the last of the published records."""
    offsets: dict[int, int] = {}
    for record in metadata:
        offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)
    return offsets


class TopicReader:
    """Reads a topic from the beginning in the background and keeps every record."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self.records: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        await ensure_topics(self._settings, [self._topic])
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(self._topic, bootstrap_servers=self._settings.kafka_bootstrap_servers,
                                    group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=5)
        await consumer.start()
        self._consumer = consumer
        try:
            while not self._stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    self.records.extend(records)
        finally:
            self._consumer = None
            await consumer.stop()

    async def caught_up(self) -> bool:
        """Return whether every partition has been read up to its last fetched high-water mark.

        Once nothing more is written to the topic, a True result means records contains the
        whole topic.
        """
        consumer = self._consumer
        if consumer is None:
            return False
        partitions = consumer.assignment()
        if not partitions:
            return False
        for partition in partitions:
            highwater = consumer.highwater(partition)
            if highwater is None or await consumer.position(partition) < highwater:
                return False
        return True

    def json_values(self) -> list[dict[str, Any]]:
        """Return every record value decoded as JSON."""
        return [orjson.loads(record.value) for record in self.records]


async def prepare(settings: Settings, dispatchers: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Register the test functions and create one dispatcher per (event type, function)."""
    await register_functions(settings, settings.functions_dir)
    await ensure_topics(settings, [*settings.topics, settings.results_topic, settings.dead_letter_topic])
    return [await create_dispatcher(settings, event_type, function) for event_type, function in dispatchers]


async def set_function_env(settings: Settings, function: str, name: str, value: str) -> None:
    """Set an environment variable of a registered function."""
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.execute(
            "UPDATE functions SET environment_variables = environment_variables || "
            "jsonb_build_object($2::text, jsonb_build_object('value', $3::text)) WHERE name = $1",
            function, name, value)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_service(settings: Settings, roles: tuple[str, ...] = ("ingest", "worker", "relay", "sweeper")
                          ) -> AsyncIterator[Service]:
    """Run the service in this process for the duration of the block."""
    service = Service(settings, roles)
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, timeout=90)


async def fetch(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on the test database."""
    connection = await asyncpg.connect(settings.database_url)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Return the JSON object on each line of path, or an empty list when path does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def committed_offsets(settings: Settings, topic: str) -> dict[int, int | None]:
    """Return the consumer group's committed offset per partition of topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=settings.consumer_group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - metadata of a topic not subscribed
            partitions = consumer.partitions_for_topic(topic) or set()
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        await consumer.stop()


def settings_environment(settings: Settings) -> dict[str, str]:
    """Return this process's environment without service settings, plus those of settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKSERVICE_")}
    env.pop("DATABASE_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return env | settings.to_environment()


class ServiceProcess:
    """The service as a child process, to be stopped with SIGTERM or killed with SIGKILL."""

    def __init__(self, settings: Settings, roles: str = "ingest,worker,relay,sweeper",
                 log_path: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self._env = settings_environment(settings) | (extra_env or {})
        self._roles = roles
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        """Start the child; its output goes to log_path when given."""
        output = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskservice.cli", "run", "--role", self._roles],
            env=self._env, stdout=output, stderr=subprocess.STDOUT, cwd=REPOSITORY_ROOT,
        )
        return self

    def kill(self) -> None:
        """Send SIGKILL and reap the child."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        """Send SIGTERM and wait for a clean exit; return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
