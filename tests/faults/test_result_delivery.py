"""Result publishing across a killed instance and a broker that stops responding.

Delivery of result messages is at least once: the relay marks outbox rows sent only
after the broker acknowledged them, so a kill or a produce timeout can publish a row
again. Every copy must then be byte-identical, with the same key and attempt header,
and no result may be missing once the outbox is empty.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from taskservice.config import Settings
from tests.faults.common import (
    copies_differ, exh_topic, header, log_text, nothing_pending, pause, private_broker, records_by_task, resume,
    with_broker,
)
from tests.support import (
    ServiceProcess, TopicReader, exh_event, fetch, prepare, publish_paced, set_function_env, wait_for,
)

EVENT_COUNT = 200
KILL_AT_RESULTS = 100
PAUSE_AT_RESULTS = 150
REQUEST_TIMEOUT_MS = 5_000
# Tasks of 0.1 s on 2 runtime processes, claimed 5 at a time, give about 20 results per
# second, so the relay still has results to publish while the broker is paused.
TASK_SECONDS = 0.1
CLAIM_BATCH = 5
# A worker claims up to worker_max_in_flight tasks, started or not, and the kill turns
# each claimed task into a zombieTaskCleaned failure. A small limit leaves most tasks to
# the restarted instance, whose results then flow through the broker pause.
MAX_IN_FLIGHT = 10
# Longer than the producer request timeout, so sends in flight time out and are retried.
PAUSE_S = 8.0


async def test_results_complete_after_kill_and_broker_pause(settings: Settings, tmp_path: Path) -> None:
    with private_broker(tmp_path / "broker") as broker:
        settings = with_broker(settings, broker, kafka_request_timeout_ms=REQUEST_TIMEOUT_MS,
                               worker_claim_batch_size=CLAIM_BATCH, worker_max_in_flight=MAX_IN_FLIGHT,
                               runtime_processes_per_function=2, lease_s=5.0, heartbeat_interval_s=1.0,
                               sweep_interval_s=1.0)
        await prepare(settings, [("user_deleted", "number")])
        await set_function_env(settings, "number", "SLEEP_SECONDS", str(TASK_SECONDS))
        events = [exh_event(f"n-{number:03d}", n=number) for number in range(1, EVENT_COUNT + 1)]
        sent: list[Any] = []
        logs = (tmp_path / "killed.log", tmp_path / "restarted.log")

        async def distinct_results_reach(count: int) -> bool:
            return len(records_by_task(results.records)) >= count

        async with TopicReader(settings, settings.results_topic) as results:
            publishing = asyncio.create_task(
                publish_paced(settings, exh_topic(settings), events, chunk=50, interval_s=0.1, sent=sent))
            try:
                with ServiceProcess(settings, log_path=logs[0]) as killed:
                    await wait_for(lambda: distinct_results_reach(KILL_AT_RESULTS), timeout=60,
                                   message=f"{KILL_AT_RESULTS} results before the kill")
                    killed.kill()
                results_at_kill = len(results.records)
                with ServiceProcess(settings, log_path=logs[1]) as restarted:
                    await wait_for(lambda: distinct_results_reach(PAUSE_AT_RESULTS), timeout=60,
                                   message=f"{PAUSE_AT_RESULTS} results before the broker pause")
                    pause(broker)
                    paused_at = time.monotonic()
                    try:
                        await asyncio.sleep(PAUSE_S)
                    finally:
                        resume(broker)
                    paused_for = time.monotonic() - paused_at
                    await publishing

                    async def settled() -> bool:
                        rows = await fetch(settings, "SELECT count(*) AS n FROM tasks")
                        return rows[0]["n"] == EVENT_COUNT and await nothing_pending(settings)

                    await wait_for(settled, timeout=90, message=f"{EVENT_COUNT} tasks final and the outbox sent")

                    async def all_read() -> bool:
                        return await distinct_results_reach(EVENT_COUNT) and await results.caught_up()

                    await wait_for(all_read, timeout=60, message=f"results of all {EVENT_COUNT} tasks read")
                    still_running = restarted.process is not None and restarted.process.poll() is None
            finally:
                if not publishing.done():
                    publishing.cancel()

    by_task = records_by_task(results.records)
    duplicates = {task_id: copies for task_id, copies in by_task.items() if len(copies) > 1}
    context = (f"{len(results.records)} messages, {len(duplicates)} tasks with copies, "
               f"{results_at_kill} messages read at the kill, broker paused {paused_for:.1f} s")
    print(context)

    assert still_running, f"the restarted instance exited during the broker pause; see {logs[1]}"
    assert "outbox publish failed" in log_text(logs[1]), \
        f"the relay never saw the broker pause, so the pause tested nothing ({context})"
    rows = await fetch(settings, "SELECT id, status, attempt, error->>'name' AS error_name FROM tasks")
    outcomes = Counter((row["status"], row["error_name"]) for row in rows)
    lost_with_kill = outcomes[("failed", "zombieTaskCleaned")]
    assert len(rows) == EVENT_COUNT, f"expected {EVENT_COUNT} task rows, got {len(rows)}"
    assert outcomes[("complete", None)] + lost_with_kill == EVENT_COUNT, \
        f"tasks should complete, or fail as zombies when the kill took their run: {dict(outcomes)}"
    assert lost_with_kill <= MAX_IN_FLIGHT, f"{lost_with_kill} zombie tasks, more than the killed worker held"
    assert len(by_task) == EVENT_COUNT, f"expected {EVENT_COUNT} distinct task ids, got {len(by_task)} ({context})"
    assert set(by_task) == {row["id"] for row in rows}, "result task ids differ from the task rows"
    status_of = {row["id"]: row["status"] for row in rows}
    numbers = sorted(orjson.loads(copies[0].value)["result"]["n"] for task_id, copies in by_task.items()
                     if status_of[task_id] == "complete")
    assert len(set(numbers)) == len(numbers), "two complete results carry the same n"
    for task_id, copies in by_task.items():
        message = orjson.loads(copies[0].value)
        assert message["status"] == status_of[task_id], f"result of {task_id} says {message['status']}"
        assert copies[0].key == task_id.encode(), f"result of {task_id} has key {copies[0].key!r}"
        assert header(copies[0], "attempt") == b"1", f"result of {task_id} has attempt header {header(copies[0], 'attempt')!r}"
    differing = [task_id for task_id, copies in duplicates.items() if copies_differ(copies)]
    assert not differing, f"copies of one result differ in bytes, key or attempt for tasks {differing[:5]} ({context})"

    assert await fetch(settings, "SELECT id FROM outbox WHERE sent_at IS NULL") == [], "outbox rows remain unsent"
    repeated = await fetch(settings, "SELECT topic, task_id, attempt, count(*) AS n FROM outbox "
                                     "GROUP BY topic, task_id, attempt HAVING count(*) > 1")
    assert repeated == [], f"a task has more than one outbox row for one topic and attempt: {repeated[:5]}"
    per_task = await fetch(settings, "SELECT task_id, count(*) AS n FROM outbox WHERE topic = $1 GROUP BY task_id",
                           settings.results_topic)
    assert len(per_task) == EVENT_COUNT, f"{len(per_task)} tasks have a result outbox row, expected {EVENT_COUNT}"
    assert {row["n"] for row in per_task} == {1}, "a task has more than one result outbox row"
