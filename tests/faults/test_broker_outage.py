"""A broker that stops responding for 30 s while events keep arriving.

The test runs its own Tansu broker and pauses it with SIGSTOP. Connections stay open but
no request gets a response, as in a network partition or a hung broker. The same service
process must resume consuming and committing, create one task per event, and publish the
results that piled up during the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from taskservice.config import Settings
from tests.faults.common import (
    copies_differ, exh_topic, nothing_pending, pause, private_broker, records_by_task, resume, wait_for_log,
    with_broker,
)
from tests.support import (
    ServiceProcess, TopicReader, committed_offsets, exh_event, fetch, prepare, publish, set_function_env, wait_for,
)

EVENTS_PER_SECOND = 10
PRODUCE_S = 50
PAUSE_AFTER_S = 10.0
PAUSE_S = 30.0
CATCH_UP_S = 60.0
PRODUCER_TIMEOUT_MS = 5_000
# Slow tasks stored just before the pause run two at a time for 3 s each, so their results
# are produced while the broker is paused.
REPORTS = 10
REPORT_SECONDS = 3


async def _produce_with_retries(settings: Settings, events: list[dict[str, Any]], *, deadline: float,
                                sent: list[Any], retried: list[str]) -> None:
    """Send events on a schedule of 10 per second, and retry each failed send until it is acknowledged.

    A send that timed out may still have been written, so the topic can hold an event
    twice. Ingest must turn the copies into one task.
    """
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0,
                                enable_idempotence=False, request_timeout_ms=PRODUCER_TIMEOUT_MS)
    await producer.start()
    started = time.monotonic()
    try:
        for number, event in enumerate(events):
            await asyncio.sleep(max(started + number / EVENTS_PER_SECOND - time.monotonic(), 0))
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError(f"event {event['id']} was not acknowledged before the deadline")
                try:
                    sent.append(await asyncio.wait_for(
                        producer.send_and_wait(exh_topic(settings), value=orjson.dumps(event),
                                               key=event["id"].encode()),
                        timeout=PRODUCER_TIMEOUT_MS / 1000 + 1))
                    break
                except (KafkaError, asyncio.TimeoutError):
                    retried.append(event["id"])
                    await asyncio.sleep(0.5)
    finally:
        with contextlib.suppress(KafkaError, asyncio.TimeoutError):
            await asyncio.wait_for(producer.stop(), timeout=10)


def _end_offsets(records: list[Any]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


async def test_broker_paused_consumption_resumes(settings: Settings, tmp_path: Path) -> None:
    log_path = tmp_path / "service.log"
    events = [exh_event(f"user-{number:04d}") for number in range(EVENTS_PER_SECOND * PRODUCE_S)]
    sent: list[Any] = []
    retried: list[str] = []
    commits: list[tuple[float, int]] = []

    with private_broker(tmp_path / "broker") as broker:
        settings = with_broker(settings, broker, worker_claim_batch_size=1, runtime_processes_per_function=2)
        topic = exh_topic(settings)
        await prepare(settings, [("user_deleted", "echo"), ("report_requested", "sleep")])
        await set_function_env(settings, "sleep", "SLEEP_SECONDS", str(REPORT_SECONDS))
        reports = [exh_event(f"report-{number:02d}", "report_requested") for number in range(REPORTS)]
        async with TopicReader(settings, topic) as inputs, \
                TopicReader(settings, settings.results_topic) as results:
            with ServiceProcess(settings, log_path=log_path) as service:
                assert service.process is not None
                pid = service.process.pid
                await wait_for_log(log_path, "partitions assigned", timeout=30)
                producing = asyncio.create_task(_produce_with_retries(
                    settings, events, deadline=time.monotonic() + PRODUCE_S + PAUSE_S + CATCH_UP_S,
                    sent=sent, retried=retried))
                try:
                    await asyncio.sleep(PAUSE_AFTER_S)
                    await publish(settings, topic, reports)

                    async def reports_stored() -> bool:
                        rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE function_name = 'sleep'")
                        return rows[0]["n"] == REPORTS

                    await wait_for(reports_stored, timeout=10, message=f"{REPORTS} report tasks stored")
                    pause(broker)
                    paused_at = time.time()
                    try:
                        await asyncio.sleep(PAUSE_S)
                    finally:
                        resume(broker)
                    resumed_at = time.time()

                    async def caught_up() -> bool:
                        committed = await committed_offsets(settings, topic)
                        commits.append((time.time(), sum(offset or 0 for offset in committed.values())))
                        if not producing.done() or not await inputs.caught_up():
                            return False
                        ends = _end_offsets(inputs.records)
                        return all(committed.get(partition) == end for partition, end in ends.items())

                    await wait_for(caught_up, timeout=PRODUCE_S - PAUSE_AFTER_S + CATCH_UP_S, interval=0.5,
                                   message="committed offsets at the end of the input topic")
                    lag_zero_after_s = time.time() - resumed_at
                    await producing

                    async def settled() -> bool:
                        rows = await fetch(settings, "SELECT count(DISTINCT event_id) AS n FROM tasks")
                        return rows[0]["n"] == len(events) + REPORTS and await nothing_pending(settings)

                    await wait_for(settled, timeout=60, message="a task per event, all final, outbox sent")
                    rows = await fetch(settings, "SELECT id, event_id, status, finished_timestamp FROM tasks")

                    async def results_read() -> bool:
                        return len(records_by_task(results.records)) >= len(rows) and await results.caught_up()

                    await wait_for(results_read, timeout=60, message=f"results of {len(rows)} tasks read")
                finally:
                    if not producing.done():
                        producing.cancel()
                still_running = service.process.poll() is None
                same_pid = service.process.pid == pid

    context = (f"lag 0 {lag_zero_after_s:.1f} s after the resume, {len(retried)} sends retried, "
               f"{len(inputs.records)} input records for {len(events)} events")
    print(context)
    assert still_running, f"the service process exited; see {log_path}"
    assert same_pid, "the service process was replaced"
    assert retried, f"no send failed while the broker was paused, so the pause tested nothing ({context})"
    assert lag_zero_after_s <= CATCH_UP_S, f"the lag reached 0 only {lag_zero_after_s:.1f} s after the resume"

    after_resume = [total for at, total in commits if at >= resumed_at]
    assert after_resume == sorted(after_resume), f"committed offsets went backwards after the resume: {after_resume}"
    assert after_resume[-1] > after_resume[0], f"committed offsets did not advance after the resume: {after_resume}"

    per_event = Counter(row["event_id"] for row in rows)
    assert set(per_event) == {event["id"] for event in [*events, *reports]}, \
        "the task rows do not cover every produced event"
    assert set(per_event.values()) == {1}, \
        f"events with more than one task: {[(e, n) for e, n in per_event.items() if n > 1][:5]}"
    assert {row["status"] for row in rows} == {"complete"}, "a task did not complete"

    by_task = records_by_task(results.records)
    assert set(by_task) == {row["id"] for row in rows}, "the result messages do not cover every task"
    differing = [task_id for task_id, copies in by_task.items() if copies_differ(copies)]
    assert not differing, f"copies of one result differ for tasks {differing[:5]}"
    report_rows = [row for row in rows if row["event_id"].startswith("report-")]
    during_pause = [row for row in report_rows if paused_at <= row["finished_timestamp"].timestamp() < resumed_at]
    assert len(during_pause) == REPORTS, \
        f"{len(during_pause)} of the {REPORTS} report tasks finished while the broker was paused ({context})"
    for row in during_pause:
        assert by_task[row["id"]], f"the result of report task {row['id']}, produced during the pause, never arrived"
