"""Benchmark events and dispatchers: ExtraHorizon events of a fixed size, each matching one dispatcher.

Every scenario that sends events creates its dispatchers with create_bench_dispatchers()
and its events with build_event(), so the matching rule lives in one place. There are 100
dispatchers of the no-op function on one event type. Dispatcher i has the content filter
`{"content": {"bucket": [i]}}`, and event n has bucket n mod 100, so every event goes
through the pattern index of all 100 filters and matches exactly one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from common import bench_settings, broker, fresh_database
from taskservice.admin import create_dispatcher, register_functions
from taskservice.config import Settings
from taskservice.kafka import create_producer, ensure_topics
from taskservice.store.db import create_pool
from taskservice.store.repository import Repository

DISPATCHERS = 100
EVENT_TYPE = "bench.event"
FUNCTION = "noop"
EVENT_BYTES = 1024
SMALL_EVENT_BYTES = 160
SEND_WINDOW = 20_000     # records in flight before the producer waits for acknowledgements
PACE_CHUNK = 100


async def create_bench_dispatchers(settings: Settings) -> None:
    """Create the DISPATCHERS dispatchers that the benchmark events match, one task action each."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="bench")
    try:
        repository = Repository(pool)
        for bucket in range(DISPATCHERS):
            await create_dispatcher(settings, EVENT_TYPE, FUNCTION, name=f"bench-{bucket}",
                                    rules={"filter": {"content": {"bucket": [bucket]}}}, repository=repository)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def event_pipeline() -> AsyncIterator[tuple[Settings, str]]:
    """Yield (settings, topic of the events) for a new broker and database with the dispatchers in place."""
    with broker() as (bootstrap, is_tansu):
        async with fresh_database() as dsn:
            settings = bench_settings(dsn, bootstrap, is_tansu)
            await register_functions(settings, settings.functions_dir)
            await create_bench_dispatchers(settings)
            await ensure_topics(settings, [*settings.topics, settings.results_topic, settings.dead_letter_topic])
            yield settings, next(name for name, fmt in settings.topics.items() if fmt == "exh")


def database_name(settings: Settings) -> str:
    """Return the name of the database in settings.database_url, which names its PostgreSQL backends."""
    assert settings.database_url is not None
    return settings.database_url.rsplit("/", 1)[1].split("?", 1)[0]


def event_id(run_id: str, sequence: int) -> str:
    return f"{run_id}-{sequence:09d}"


def build_event(run_id: str, sequence: int, size_bytes: int, timestamp_ms: int) -> bytes:
    """Return the JSON of one event, padded to size_bytes (or its minimum size when larger)."""
    body: dict[str, Any] = {
        "id": event_id(run_id, sequence),
        "type": EVENT_TYPE,
        "content": {"sequence": sequence, "bucket": sequence % DISPATCHERS, "padding": ""},
        "creation_timestamp": timestamp_ms,
    }
    unpadded = len(orjson.dumps(body))
    body["content"]["padding"] = "x" * max(size_bytes - unpadded, 0)
    return orjson.dumps(body)


async def produce(settings: Settings, topic: str, run_id: str, count: int, size_bytes: int,
                  rate: float | None = None) -> dict[str, float]:
    """Publish count events as fast as the producer takes them, or at rate events a second, and return the rate.

    A paced run sends PACE_CHUNK events at a time, each chunk at its due time.
    """
    producer = create_producer(settings, linger_ms=10)
    await producer.start()
    try:
        timestamp_ms = int(time.time() * 1000)
        started = time.perf_counter()
        pending = []
        for sequence in range(count):
            if rate and sequence % PACE_CHUNK == 0:
                await asyncio.sleep(max(started + sequence / rate - time.perf_counter(), 0))
            pending.append(await producer.send(topic, build_event(run_id, sequence, size_bytes, timestamp_ms)))
            if len(pending) >= SEND_WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"events": count, "event_bytes": size_bytes, "seconds": round(elapsed, 3),
            "events_per_s": round(count / elapsed)}


async def publish_at_rate(settings: Settings, topic: str, run_id: str, first: int, rate: float,
                          seconds: float) -> dict[str, float]:
    """Publish rate events a second for seconds, one record per send, and return event id -> publish time.

    The publish time (time.time()) is taken just before the record goes to the producer,
    which sends it at once (linger 0 ms).
    """
    producer = create_producer(settings, linger_ms=0)
    await producer.start()
    published: dict[str, float] = {}
    try:
        total = int(rate * seconds)
        started = time.monotonic()
        pending = []
        for offset in range(total):
            delay = started + offset / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sequence = first + offset
            now = time.time()
            value = build_event(run_id, sequence, EVENT_BYTES, int(now * 1000))
            published[event_id(run_id, sequence)] = now
            pending.append(await producer.send(topic, value))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return published
