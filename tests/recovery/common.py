"""Helpers of the recovery tests: the CLI as a child process, and dead letters made by ingest."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from taskservice.config import Settings
from taskservice.ids import new_object_id
from tests.support import (
    REPOSITORY_ROOT, TopicReader, fetch, publish, running_service, settings_environment, wait_for,
)


@dataclass
class CliResult:
    """Exit code and output of one CLI run."""

    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        """Return each stdout line decoded as JSON."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


async def run_cli(settings: Settings, *args: str, timeout: float = 120) -> CliResult:
    """Run `taskservice ARGS` in a child process without blocking the event loop of the test."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskservice.cli", *args, env=settings_environment(settings), cwd=REPOSITORY_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


def exh_topic(settings: Settings) -> str:
    """Return the test's ExtraHorizon input topic."""
    return next(topic for topic, topic_format in settings.topics.items() if topic_format == "exh")


def document_topic(settings: Settings) -> str:
    """Return the test's CloudEvents input topic."""
    return next(topic for topic, topic_format in settings.topics.items() if topic_format == "cloudevents")


def large_event(event_id: str, size: int = 3_000) -> dict[str, Any]:
    """Build a user_deleted event whose task data is larger than 1,024 bytes."""
    return {"id": event_id, "type": "user_deleted", "content": {"note": "x" * size},
            "creation_timestamp": int(time.time() * 1000)}


async def dead_letter_through_ingest(settings: Settings, batches: list[list[tuple[str, bytes | dict[str, Any]]]],
                                     *, pause_s: float = 0.0, headers: list[tuple[str, bytes]] | None = None
                                     ) -> list[Any]:
    """Run ingest, publish each batch of (topic, value) and wait until its records are dead-lettered.

    Dict values are sent as JSON keyed by their id, with the given record headers.

    Waits pause_s between batches, so the batches get distinct dead-letter times. Returns
    every record of the dead-letter topic.
    """
    expected = 0
    async with TopicReader(settings, settings.dead_letter_topic) as dead_letters, \
            running_service(settings, ("ingest",)):
        for index, batch in enumerate(batches):
            if index and pause_s:
                await asyncio.sleep(pause_s)
            for topic, value in batch:
                if isinstance(value, dict) and headers:
                    await _publish_with_headers(settings, topic, value, headers)
                else:
                    await publish(settings, topic, [value])
            expected += len(batch)
            await wait_for(lambda: _has(dead_letters, expected), timeout=60,
                           message=f"{expected} dead letters")
        await wait_for(dead_letters.caught_up, timeout=30, message="dead-letter topic read to its end")
        return list(dead_letters.records)


async def _publish_with_headers(settings: Settings, topic: str, value: dict[str, Any],
                                headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=json.dumps(value).encode(), key=str(value["id"]).encode(),
                                     headers=headers)
    finally:
        await producer.stop()


async def _has(reader: TopicReader, count: int) -> bool:
    return len(reader.records) >= count


async def insert_task(settings: Settings, function_name: str, status: str, *, error_name: str | None = None,
                      failed_minutes_ago: float = 10, **fields: Any) -> str:
    """Insert a task row in the given status, failed_minutes_ago minutes after its last status change; return its id."""
    task_id = new_object_id()
    error = None if error_name is None else json.dumps({"type": "runtime", "name": error_name, "message": "boom"})
    await fetch(
        settings,
        "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, tags, priority, source, "
        "error, attempt, idempotency_key) "
        "VALUES ($1, $2, $3, now() - make_interval(secs => $4), $5::jsonb, $6, $7, 'api', $8::jsonb, 1, $9)",
        task_id, function_name, status, failed_minutes_ago * 60, json.dumps(fields.get("data", {"n": 1})),
        fields.get("tags", ["t1"]), fields.get("priority", 3), error, fields.get("idempotency_key"),
    )
    return task_id
