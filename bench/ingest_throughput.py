"""Events to committed tasks, beside the two floors under it: raw consume and COPY.

N events of 1 KB are published to one topic before anything reads it. Then, on the same
broker and database:

1. raw consume: a bare aiokafka consumer, built with the ingest's own consumer settings
   (taskservice.kafka.create_consumer) in a group of its own, reads every record and does
   nothing with it;
2. ingest: the ingest role (taskservice.service.Service with the role `ingest`, as
   `taskservice run --role ingest` runs it, here in this process) decodes each event,
   matches one of 100 dispatchers and inserts one task per event;
3. COPY: asyncpg copies the same task rows, built by the same code, into a table created
   with `LIKE tasks INCLUDING ALL` (same columns, defaults, constraints and indexes).

Consume spans run from the partition assignment, when fetching starts, to the last
record received (raw) or to the return of the insert that completes the last task
(ingest, read from the tasks-created counter every 10 ms). The group join is left out.

    .venv/bin/python bench/ingest_throughput.py --events 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import ConsumerRebalanceListener

from common import machine
from events import EVENT_BYTES, FUNCTION, build_event, database_name, event_pipeline, produce
from procstat import CpuMeter, Labeller
from taskservice import metrics
from taskservice.config import Settings
from taskservice.consumers.decode import Event, decode_record
from taskservice.consumers.dispatch import DispatcherTable, task_rows_for
from taskservice.kafka import create_consumer
from taskservice.service import Service
from taskservice.store.db import create_pool
from taskservice.store.repository import Repository

CONSUME_TIMEOUT_S = 300.0
COUNTER_POLL_S = 0.01
COPY_COLUMNS = ("id", "function_name", "data", "tags", "priority", "start_timestamp", "idempotency_key",
                "source", "event_id", "event_timestamp")


class _AssignmentClock(ConsumerRebalanceListener):
    """Notes when the consumer got its partitions, the start of its span, and starts the CPU meter."""

    def __init__(self, meter: CpuMeter) -> None:
        self.meter = meter
        self.assigned_at: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.assigned_at is None:
            self.meter.start()
            self.assigned_at = time.perf_counter()


async def measure_raw_consume(settings: Settings, topic: str, events: int, meter: CpuMeter) -> dict[str, Any]:
    """Read every record of topic with a consumer that does nothing else."""
    clock = _AssignmentClock(meter)
    consumer = create_consumer(settings, [topic], group_id=f"bench-raw-{uuid.uuid4().hex[:8]}", listener=clock)
    await consumer.start()
    received = 0
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while received < events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            received += sum(len(records) for records in batch.values())
        finished = time.perf_counter()
        cpu = meter.stop()
    finally:
        await consumer.stop()
    if received < events or clock.assigned_at is None:
        raise RuntimeError(f"raw consumer read {received} of {events} records in {CONSUME_TIMEOUT_S:.0f} s")
    span = finished - clock.assigned_at
    return {"records": received, "seconds": round(span, 3), "records_per_s": round(received / span), "cpu": cpu}


def _tasks_created() -> float:
    # Collecting this one counter is cheap. REGISTRY.get_sample_value walks every metric,
    # which at 100 reads a second took about 2 % of the ingest process's time.
    for metric in metrics.TASKS_CREATED.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {"source": "event", "function": FUNCTION}:
                return sample.value
    return 0.0


async def measure_ingest(settings: Settings, events: int, meter: CpuMeter,
                         profile_path: Path | None = None) -> dict[str, Any]:
    """Run the ingest role in this process until it has created one task per event."""
    baseline = _tasks_created()
    service = Service(settings, ("ingest",))
    service_task = asyncio.create_task(service.run(), name="bench-ingest")
    try:
        assigned = asyncio.create_task(service.ingest_assigned.wait())
        await asyncio.wait({assigned, service_task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not service.ingest_assigned.is_set():
            raise RuntimeError("the ingest consumer got no partitions within 60 s")
        profiler = _start_profiler() if profile_path else None
        meter.start()
        started = time.perf_counter()
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while _tasks_created() - baseline < events and time.monotonic() < deadline and not service_task.done():
            await asyncio.sleep(COUNTER_POLL_S)
        finished = time.perf_counter()
        cpu = meter.stop()
        if profiler is not None and profile_path is not None:
            profiler.stop()
            profile_path.parent.mkdir(parents=True, exist_ok=True)
            profile_path.write_text(profiler.output_text(unicode=False, color=False))
        created = int(_tasks_created() - baseline)
    finally:
        service.stop()
        await asyncio.gather(service_task, return_exceptions=True)
    if created < events:
        raise RuntimeError(f"ingest created {created} of {events} tasks")
    span = finished - started
    return {"events": events, "tasks": created, "seconds": round(span, 3), "events_per_s": round(events / span),
            "batch_max_records": settings.ingest_batch_max_records, "cpu": cpu}


def _start_profiler() -> Any:
    from pyinstrument import Profiler

    # The whole thread is sampled, so every task of the event loop shows, not only this one.
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    return profiler


async def _task_records(settings: Settings, run_id: str, events: int) -> list[tuple[Any, ...]]:
    """Build the task rows of the events with the ingest's own decode and match code."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="bench")
    try:
        dispatchers = DispatcherTable(Repository(pool))
        await dispatchers.reload()
    finally:
        await pool.close()
    now = datetime.now(UTC)
    records = []
    for sequence in range(events):
        value = build_event(run_id, sequence, EVENT_BYTES, int(now.timestamp() * 1000))
        event = decode_record(value, [], "exh", settings.max_record_bytes)
        assert isinstance(event, Event), event
        for row in task_rows_for(dispatchers, event, settings.max_task_data_bytes):
            records.append((row["id"], row["function_name"], orjson.dumps(row["data"]).decode(), row["tags"], 0, now,
                            row["idempotency_key"], row["source"], row["event_id"], event.time))
    return records


async def measure_copy(settings: Settings, run_id: str, events: int) -> dict[str, Any]:
    """COPY the events' task rows into a table shaped like tasks, in one statement."""
    records = await _task_records(settings, run_id, events)
    if len(records) != events:
        raise RuntimeError(f"the dispatchers made {len(records)} task rows of {events} events, expected one each")
    assert settings.database_url is not None
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.execute("CREATE TABLE copy_floor (LIKE tasks INCLUDING ALL)")
        started = time.perf_counter()
        await connection.copy_records_to_table("copy_floor", records=records, columns=COPY_COLUMNS)
        span = time.perf_counter() - started
    finally:
        await connection.close()
    return {"rows": len(records), "seconds": round(span, 3), "rows_per_s": round(len(records) / span)}


async def _check_one_task_per_event(settings: Settings, events: int) -> None:
    assert settings.database_url is not None
    connection = await asyncpg.connect(settings.database_url)
    try:
        row = await connection.fetchrow("SELECT count(*) AS tasks, count(DISTINCT event_id) AS events FROM tasks")
    finally:
        await connection.close()
    if row["tasks"] != events or row["events"] != events:
        raise RuntimeError(f"expected one task for each of {events} events, found {row['tasks']} tasks "
                           f"for {row['events']} events; check the dispatcher filters")


async def run(events: int, *, ingest: bool = True, profile_dir: Path | None = None) -> dict[str, Any]:
    """Publish events, then measure raw consume, ingest (unless ingest is False) and COPY."""
    run_id = uuid.uuid4().hex[:12]
    result: dict[str, Any] = {}
    async with event_pipeline() as (settings, topic):
        result["produce"] = await produce(settings, topic, run_id, events, EVENT_BYTES)
        labeller = Labeller(database=database_name(settings), client_label="raw consumer (this process)")
        result["raw_consume"] = await measure_raw_consume(settings, topic, events, CpuMeter(labeller))
        if ingest:
            labeller.client_label = "ingest role (this process)"
            profile_path = profile_dir / "ingest-pyinstrument.txt" if profile_dir else None
            result["ingest"] = await measure_ingest(settings, events, CpuMeter(labeller), profile_path)
            await _check_one_task_per_event(settings, events)
        result["copy"] = await measure_copy(settings, run_id, events)
    if ingest:
        result["ratios"] = {
            "ingest_to_raw_consume": round(result["ingest"]["events_per_s"] / result["raw_consume"]["records_per_s"], 3),
            "ingest_to_copy": round(result["ingest"]["events_per_s"] / result["copy"]["rows_per_s"], 3),
        }
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events of 1 KB to publish (default 200,000)")
    parser.add_argument("--floors-only", action="store_true", help="measure raw consume and COPY only")
    args = parser.parse_args()
    result = await run(args.events, ingest=not args.floors_only)
    print(json.dumps({"machine": machine(), "time": datetime.now(UTC).isoformat(), **result}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
