"""Ingest under faults: rebalances, blocked inserts, poison records and killed processes.

Each test drives the service as a user does, against the real PostgreSQL server and
Kafka-protocol broker of the fixtures. The checks are exact counts. Each (event, action)
pair has one task row, each task one execution and one result message, and committed
offsets never pass a record whose task rows are not stored.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from prometheus_client import REGISTRY

from taskservice.config import Settings
from taskservice.ids import new_object_id
from tests.support import (
    ServiceProcess, TopicReader, committed_offsets, exh_event, fetch, next_offsets, prepare, publish,
    publish_paced, read_json_lines, running_service, set_function_env, wait_for,
)

DEAD_LETTER_HEADERS = ("reason", "detail", "source_topic", "source_partition", "source_offset", "consumer_group")
ASSIGNED_LINE = re.compile(r"partitions assigned: (?P<partitions>.*?)(?:  |$)")
OFFSET_FIELD = re.compile(r" offset=(\d+)(?:\s|$)")

# Poison records and the dead-letter reason each one gets.
POISON_RECORDS: list[tuple[str, bytes, str]] = [
    ("truncated JSON", b'{"event_id":"P1","table":"orders",', "invalid_json"),
    ("not UTF-8", b"\xff\xfe\x00", "not_utf8"),
    ("wrong schema", b'{"event_id":"P3","table":42,"op":null}', "schema_mismatch"),
    ("JSON array", b"[1,2,3]", "not_an_object"),
    ("content not an object", b'{"id":"P5","type":"user_deleted","content":"not an object"}', "schema_mismatch"),
]


def _exh_topic(settings: Settings) -> str:
    return next(topic for topic, topic_format in settings.topics.items() if topic_format == "exh")


async def _status_counts(settings: Settings) -> Counter[str]:
    rows = await fetch(settings, "SELECT status, count(*) AS n FROM tasks GROUP BY status")
    return Counter({row["status"]: row["n"] for row in rows})


async def _unsent_outbox(settings: Settings) -> int:
    rows = await fetch(settings, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
    return rows[0]["n"]


async def _offsets_reached(settings: Settings, topic: str, expected: dict[int, int]) -> bool:
    committed = await committed_offsets(settings, topic)
    return all(committed.get(partition) == offset for partition, offset in expected.items())


async def _all_tasks_final(settings: Settings, expected: int) -> bool:
    counts = await _status_counts(settings)
    return counts["complete"] + counts["failed"] == expected and sum(counts.values()) == expected


async def _wait_until_settled(settings: Settings, results: TopicReader, *, tasks: int,
                              offsets: dict[int, int], timeout: float) -> None:
    """Wait until ingest committed every record, every task is final and every result was read.

    After this, a duplicate task, run or result message would already be visible, because
    offsets cover all input, no task can run again and the relay has nothing left to publish.
    """
    topic = _exh_topic(settings)
    await wait_for(lambda: _offsets_reached(settings, topic, offsets), timeout=timeout,
                   message=f"committed offsets {offsets} on {topic}")
    await wait_for(lambda: _all_tasks_final(settings, tasks), timeout=timeout,
                   message=f"{tasks} tasks complete or failed")

    async def outbox_sent() -> bool:
        return await _unsent_outbox(settings) == 0

    async def results_read() -> bool:
        return len(results.records) >= tasks and await results.caught_up()

    await wait_for(outbox_sent, timeout=timeout, message="every outbox message published")
    await wait_for(results_read, timeout=timeout, message=f"{tasks} result messages read")


def _assigned_partitions(log_path: Path, topic: str) -> list[str]:
    """Return the partitions of topic named in the service's last 'partitions assigned' line."""
    if not log_path.exists():
        return []
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if "partitions assigned:" in line]
    if not lines:
        return []
    match = ASSIGNED_LINE.search(lines[-1])
    assert match is not None, f"unexpected assignment line: {lines[-1]}"
    return [name for name in match["partitions"].split(", ") if name.startswith(f"{topic}[")]


def _dead_lettered_offsets(*log_paths: Path) -> Counter[int]:
    """Count the 'record_dead_lettered' log lines per source offset in the service logs."""
    offsets: Counter[int] = Counter()
    for path in log_paths:
        for line in path.read_text(errors="replace").splitlines():
            if "event=record_dead_lettered" in line:
                match = OFFSET_FIELD.search(line)
                assert match is not None, f"dead-letter log line without an offset: {line}"
                offsets[int(match[1])] += 1
    return offsets


# A second consumer joining and leaving the group ----------------------------------------


async def test_second_consumer_joining_reprocesses_nothing(settings: Settings, tmp_path: Path) -> None:
    invocations = tmp_path / "invocations.jsonl"
    await prepare(settings, [("user_deleted", "sleep")])
    await set_function_env(settings, "sleep", "SLEEP_SECONDS", "0.5")
    await set_function_env(settings, "sleep", "INVOCATION_LOG", str(invocations))
    topic = _exh_topic(settings)
    events = [exh_event(f"user-{number:02d}") for number in range(1, 41)]
    sent: list[Any] = []
    second_log = tmp_path / "second.log"

    def publish_at_five_per_second(batch: list[dict[str, Any]]) -> asyncio.Task[None]:
        return asyncio.create_task(publish_paced(settings, topic, batch, chunk=1, interval_s=0.2, sent=sent))

    async with TopicReader(settings, settings.results_topic) as results:
        with ServiceProcess(settings, log_path=tmp_path / "first.log"):
            publishing = publish_at_five_per_second(events[:20])

            async def ten_complete() -> bool:
                return (await _status_counts(settings))["complete"] >= 10

            await wait_for(ten_complete, timeout=60, message="10 complete tasks")
            with ServiceProcess(settings, roles="ingest,worker,relay", log_path=second_log) as second:

                async def second_assigned() -> bool:
                    return bool(_assigned_partitions(second_log, topic))

                # The rebalance takes a few seconds. E21..E30 are published after it, so they
                # arrive while the second instance owns part of the topic.
                await wait_for(second_assigned, timeout=60, message=f"the second instance assigned a partition of {topic}")
                await publishing
                await publish_at_five_per_second(events[20:30])
                taken_over = _assigned_partitions(second_log, topic)

                async def thirty_stored() -> bool:
                    return sum((await _status_counts(settings)).values()) >= 30

                await wait_for(thirty_stored, timeout=60, message="task rows of E1..E30")
                # E31..E40 arrive during the second rebalance, which SIGTERM starts.
                publishing = publish_at_five_per_second(events[30:])
                exit_code = await asyncio.to_thread(second.terminate, 60)
            await publishing
            await _wait_until_settled(settings, results, tasks=40, offsets=next_offsets(sent), timeout=60)

    second_share = [record for record in sent[20:30] if f"{topic}[{record.partition}]" in taken_over]
    assert len({record.partition for record in sent}) == 4, "the 40 event keys must cover all 4 partitions"
    assert second_share, f"none of E21..E30 went to the partitions the second instance owned: {taken_over}"
    assert exit_code == 0, f"the second instance exited with {exit_code} after SIGTERM; see {second_log}"

    rows = await fetch(settings, "SELECT id, event_id, status, attempt FROM tasks")
    assert len(rows) == 40, f"expected one task per event, got {len(rows)} task rows"
    assert sorted(row["event_id"] for row in rows) == sorted(event["id"] for event in events), \
        "task rows do not map one to one onto the published events"
    assert Counter(row["status"] for row in rows) == Counter(complete=40), "every task should be complete"
    assert {row["attempt"] for row in rows} == {1}, "a task ran more than once"

    runs = read_json_lines(invocations)
    assert len(runs) == 40, f"expected 40 executions in the invocation log, got {len(runs)}"
    assert {run["attempt"] for run in runs} == {1}, "the invocation log shows a second attempt"
    assert {run["task_id"] for run in runs} == {row["id"] for row in rows}, \
        "the executed task ids differ from the stored task ids"

    messages = results.json_values()
    assert len(messages) == 40, f"expected 40 result messages, got {len(messages)}"
    assert len({message["taskId"] for message in messages}) == 40, "a task has more than one result message"
    assert {message["status"] for message in messages} == {"complete"}, "a result message reports a failure"


async def test_rebalance_under_steady_traffic_completes(settings: Settings, tmp_path: Path) -> None:
    # A record arriving while a rebalance starts must not stall the group. At about 50
    # events per second, records arrive within every 200 ms fetch wait of the ingest loop.
    await prepare(settings, [("user_deleted", "echo")])
    topic = _exh_topic(settings)
    events = [exh_event(f"user-{number:03d}") for number in range(600)]
    sent: list[Any] = []
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    with ServiceProcess(settings, roles="ingest", log_path=first_log):

        async def first_assigned() -> bool:
            return bool(_assigned_partitions(first_log, topic))

        await wait_for(first_assigned, timeout=60, message="partitions assigned to the first instance")
        publishing = asyncio.create_task(publish_paced(settings, topic, events, chunk=5, interval_s=0.1, sent=sent))
        try:
            with ServiceProcess(settings, roles="ingest", log_path=second_log) as second:

                async def second_assigned() -> bool:
                    return bool(_assigned_partitions(second_log, topic))

                await wait_for(second_assigned, timeout=30,
                               message=f"the rebalance after a second instance joined; see {first_log}")
                exit_code = await asyncio.to_thread(second.terminate, 60)
            await publishing
        finally:
            if not publishing.done():
                publishing.cancel()
        await wait_for(lambda: _offsets_reached(settings, topic, next_offsets(sent)), timeout=30,
                       message=f"committed offsets covering all 600 events after the second instance left; see {first_log}")

    assert exit_code == 0, f"the second instance exited with {exit_code} after SIGTERM; see {second_log}"
    totals = await fetch(settings, "SELECT count(*) AS n, count(DISTINCT event_id) AS events FROM tasks")
    assert totals[0]["n"] == 600, f"expected one task per event, got {totals[0]['n']} task rows"
    assert totals[0]["events"] == 600, f"expected tasks for 600 distinct events, got {totals[0]['events']}"


# A blocked task insert --------------------------------------------------------------------


async def _blocked_task_inserts(settings: Settings) -> int:
    rows = await fetch(
        settings,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'taskservice-%' AND wait_event_type = 'Lock' "
        "AND query LIKE '%INSERT INTO tasks%'",
    )
    return rows[0]["n"]


async def test_offset_not_committed_past_unstored_task(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"topic_partitions": 1})
    await prepare(settings, [("user_deleted", "echo")])
    action_id = (await fetch(settings, "SELECT id FROM dispatcher_actions"))[0]["id"]
    topic = _exh_topic(settings)
    events = [exh_event(f"e{number}") for number in range(1, 7)]
    log_path = tmp_path / "service.log"

    # An open transaction has inserted a row with E1's idempotency key, so the service's
    # insert of E1's batch waits on the unique index until this transaction ends.
    blocker = await asyncpg.connect(settings.database_url)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute(
        "INSERT INTO tasks (id, function_name, idempotency_key, source) VALUES ($1, 'echo', $2, 'event')",
        new_object_id(), f"event:exh:{events[0]['id']}:{action_id}",
    )
    offsets_seen: list[int | None] = []
    try:
        async with TopicReader(settings, settings.results_topic) as results:
            with ServiceProcess(settings, log_path=log_path) as service:
                published = await publish(settings, topic, events[:1])

                async def insert_blocked() -> bool:
                    return await _blocked_task_inserts(settings) > 0

                await wait_for(insert_blocked, timeout=60, message="the service's task insert waiting on a lock")
                # E2..E6 come after E1's batch, so a consumer that stored or committed later
                # batches while an earlier one waits would move the offset past E1.
                published += await publish(settings, topic, events[1:])
                # Watch the committed offset for 3 s while the insert stays blocked.
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    offsets_seen.append((await committed_offsets(settings, topic))[0])
                    await asyncio.sleep(0.25)
                still_blocked = await _blocked_task_inserts(settings)
                service.kill()
            await transaction.rollback()

            with ServiceProcess(settings, log_path=log_path):
                await _wait_until_settled(settings, results, tasks=6, offsets=next_offsets(published), timeout=60)
    finally:
        await blocker.close()

    first_offset = published[0].offset
    assert still_blocked > 0, "the service's insert stopped waiting before the observation ended"
    assert all(offset is None or offset <= first_offset for offset in offsets_seen), \
        f"offset committed past E1 (offset {first_offset}) while its task was not stored: {offsets_seen}"

    rows = await fetch(settings, "SELECT event_id, status, attempt FROM tasks ORDER BY event_id")
    assert [row["event_id"] for row in rows] == [event["id"] for event in events], \
        "expected exactly one task row per event E1..E6"
    assert {row["status"] for row in rows} == {"complete"}, "every task should be complete"
    assert {row["attempt"] for row in rows} == {1}, "a task ran more than once"
    assert len(results.records) == 6, f"expected 6 result messages, got {len(results.records)}"
    assert (await committed_offsets(settings, topic))[0] == published[-1].offset + 1, \
        "the final committed offset should be the one after E6"


# Poison records ---------------------------------------------------------------------------


def _poison_input() -> list[bytes | dict[str, Any]]:
    """E1, the five poison records, E2, in publish order."""
    return [exh_event("E1"), *(value for _name, value, _reason in POISON_RECORDS), exh_event("E2")]


def _check_dead_letters(settings: Settings, dead_letters: TopicReader, poison_metadata: list[Any]) -> None:
    topic = _exh_topic(settings)
    assert len(dead_letters.records) == 5, \
        f"expected one dead letter per poison record, got {len(dead_letters.records)}"
    by_offset = {int(dict(record.headers)["source_offset"]): record for record in dead_letters.records}
    for (name, value, reason), published in zip(POISON_RECORDS, poison_metadata, strict=True):
        record = by_offset.get(published.offset)
        assert record is not None, f"no dead letter for the {name} record at offset {published.offset}"
        headers = dict(record.headers)
        assert tuple(headers) == DEAD_LETTER_HEADERS, f"dead letter of the {name} record has headers {list(headers)}"
        assert headers["reason"].decode() == reason, f"dead letter of the {name} record has the wrong reason"
        assert headers["detail"], f"dead letter of the {name} record has an empty detail"
        assert headers["source_topic"].decode() == topic, f"dead letter of the {name} record names another topic"
        assert headers["source_partition"] == b"0", f"dead letter of the {name} record names another partition"
        assert headers["consumer_group"].decode() == settings.consumer_group, \
            f"dead letter of the {name} record names another consumer group"
        assert record.value == value, f"dead letter of the {name} record changed the value bytes"
        assert record.key is None, f"dead letter of the {name} record gained a key"


async def _check_valid_events_complete(settings: Settings) -> None:
    rows = await fetch(settings, "SELECT event_id, status FROM tasks ORDER BY event_id")
    assert [row["event_id"] for row in rows] == ["E1", "E2"], "only E1 and E2 should have task rows"
    assert {row["status"] for row in rows} == {"complete"}, "the tasks of E1 and E2 should be complete"


async def _wait_for_dead_letters(settings: Settings, dead_letters: TopicReader) -> None:
    async def read_all() -> bool:
        return len(dead_letters.records) >= 5 and await dead_letters.caught_up()

    await wait_for(read_all, timeout=30, message="5 dead letters read")


async def test_poison_records_neither_block_nor_repeat(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"topic_partitions": 1})
    await prepare(settings, [("user_deleted", "echo")])
    topic = _exh_topic(settings)
    log_path = tmp_path / "service.log"

    async with TopicReader(settings, settings.dead_letter_topic) as dead_letters, \
            TopicReader(settings, settings.results_topic) as results:
        with ServiceProcess(settings, log_path=log_path):
            published = await publish(settings, topic, _poison_input())
            e2_published_at = time.monotonic()
            await wait_for(lambda: _offsets_reached(settings, topic, {0: published[-1].offset + 1}), timeout=60,
                           interval=0.05, message="committed offset past E2")
            commit_delay = time.monotonic() - e2_published_at
            await _wait_until_settled(settings, results, tasks=2, offsets=next_offsets(published), timeout=60)
        await _wait_for_dead_letters(settings, dead_letters)

    assert commit_delay < 10, f"the offset passed E2 {commit_delay:.1f} s after E2 was published"
    await _check_valid_events_complete(settings)
    _check_dead_letters(settings, dead_letters, published[1:6])
    logged = _dead_lettered_offsets(log_path)
    assert logged == Counter({record.offset: 1 for record in published[1:6]}), \
        f"each poison offset should be logged as dead-lettered exactly once, got {dict(logged)}"


async def test_poison_records_not_repeated_after_restart(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"topic_partitions": 1})
    await prepare(settings, [("user_deleted", "echo")])
    topic = _exh_topic(settings)
    records = _poison_input()
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    async with TopicReader(settings, settings.dead_letter_topic) as dead_letters, \
            TopicReader(settings, settings.results_topic) as results:
        with ServiceProcess(settings, log_path=first_log) as first:
            published = await publish(settings, topic, records[:4])
            # P1..P3 must be committed before the restart, or their redelivery would
            # rightly write them to the dead-letter topic a second time.
            await wait_for(lambda: _offsets_reached(settings, topic, next_offsets(published)), timeout=60,
                           message="committed offset past P3")
            exit_code = first.terminate(timeout=60)
        with ServiceProcess(settings, log_path=second_log):
            published += await publish(settings, topic, records[4:])
            await _wait_until_settled(settings, results, tasks=2, offsets=next_offsets(published), timeout=60)
        await _wait_for_dead_letters(settings, dead_letters)

    assert exit_code == 0, f"the first instance exited with {exit_code} after SIGTERM; see {first_log}"
    await _check_valid_events_complete(settings)
    _check_dead_letters(settings, dead_letters, published[1:6])
    logged = _dead_lettered_offsets(first_log, second_log)
    assert logged == Counter({record.offset: 1 for record in published[1:6]}), \
        f"each poison offset should be logged as dead-lettered exactly once, got {dict(logged)}"


def _counter_value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_poison_records_counted_in_metrics(settings: Settings) -> None:
    settings = settings.model_copy(update={"topic_partitions": 1})
    await prepare(settings, [("user_deleted", "echo")])
    topic = _exh_topic(settings)
    reasons = Counter(reason for _name, _value, reason in POISON_RECORDS)
    consumed_labels = {outcome: {"topic": topic, "outcome": outcome} for outcome in ("invalid", "matched")}
    consumed_before = {outcome: _counter_value("taskservice_records_consumed_total", labels)
                       for outcome, labels in consumed_labels.items()}
    dead_lettered_before = {reason: _counter_value("taskservice_records_dead_lettered_total",
                                                   {"topic": topic, "reason": reason}) for reason in reasons}

    async with TopicReader(settings, settings.results_topic) as results, running_service(settings):
        published = await publish(settings, topic, _poison_input())
        await _wait_until_settled(settings, results, tasks=2, offsets=next_offsets(published), timeout=60)

    consumed = {outcome: _counter_value("taskservice_records_consumed_total", labels) - consumed_before[outcome]
                for outcome, labels in consumed_labels.items()}
    assert consumed["invalid"] == 5, f"records consumed as invalid rose by {consumed['invalid']}, expected 5"
    assert consumed["matched"] == 2, f"records consumed as matched rose by {consumed['matched']}, expected 2"
    for reason, expected in reasons.items():
        delta = _counter_value("taskservice_records_dead_lettered_total",
                               {"topic": topic, "reason": reason}) - dead_lettered_before[reason]
        assert delta == expected, f"dead letters with reason {reason} rose by {delta}, expected {expected}"
    await _check_valid_events_complete(settings)


# Ingest killed at random points -----------------------------------------------------------

KILL_SEED = 20_240_611
KILL_COUNT = 5
EVENT_COUNT = 2_000
INSERT_DELAY_S = 0.1

# A statement trigger that keeps every task insert open for INSERT_DELAY_S. Without it,
# ingest drains the whole backlog in well under a second, so most random kill times would
# fall while the consumer waits for records. With it, a kill lands inside a batch: before
# its insert, during it, or between the insert and the offset commit.
SLOW_TASK_INSERTS = f"""
CREATE FUNCTION slow_task_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep({INSERT_DELAY_S});
    RETURN NULL;
END $$;
CREATE TRIGGER slow_task_insert AFTER INSERT ON tasks FOR EACH STATEMENT EXECUTE FUNCTION slow_task_insert();
"""


async def _stored_ahead_of_commit(settings: Settings, topic: str, offset_of: dict[str, tuple[int, int]]) -> int:
    """Count events whose task rows are stored at or past the group's committed offset.

    A positive count means an instance died between storing a batch and committing its
    offsets, so a later instance receives those records again. Rows left by an earlier
    kill stay in the count until an instance reads their partition again.
    """
    async def orphaned_statements_done() -> bool:
        rows = await fetch(settings, "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND application_name LIKE 'taskservice-%'")
        return rows[0]["n"] == 0

    # The backend of a killed instance finishes its statement before it detects the closed
    # connection, so rows of an insert in flight can still commit after the kill.
    await wait_for(orphaned_statements_done, timeout=30, message="connections of the killed instance closed")
    committed = await committed_offsets(settings, topic)
    rows = await fetch(settings, "SELECT DISTINCT event_id FROM tasks")
    ahead = 0
    for row in rows:
        partition, offset = offset_of[row["event_id"]]
        if offset >= (committed.get(partition) or 0):
            ahead += 1
    return ahead


async def test_killed_ingest_neither_loses_nor_duplicates(settings: Settings, tmp_path: Path) -> None:
    # With 50 records per batch the backlog takes at least EVENT_COUNT / 50 * INSERT_DELAY_S
    # = 4 s of ingest. The kill delays of KILL_SEED add up to 2.6 s, so every kill finds a backlog.
    settings = settings.model_copy(update={"ingest_batch_max_records": 50})
    await prepare(settings, [("user_deleted", "echo"), ("user_deleted", "echo")])
    actions = len(await fetch(settings, "SELECT id FROM dispatcher_actions"))
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.execute(SLOW_TASK_INSERTS)
    finally:
        await connection.close()
    topic = _exh_topic(settings)
    events = [exh_event(f"user-{number:04d}") for number in range(EVENT_COUNT)]
    rng = random.Random(KILL_SEED)
    sent: list[Any] = []
    kill_delays: list[float] = []
    ahead_after_kill: list[int] = []

    publishing = asyncio.create_task(publish_paced(settings, topic, events, chunk=200, interval_s=0.05, sent=sent))
    try:
        for kill_number in range(KILL_COUNT):
            log_path = tmp_path / f"ingest-{kill_number}.log"
            with ServiceProcess(settings, roles="ingest", log_path=log_path) as ingest:

                async def assigned(log_path: Path = log_path) -> bool:
                    return bool(_assigned_partitions(log_path, topic))

                await wait_for(assigned, timeout=60, message=f"partitions assigned to ingest instance {kill_number}")
                kill_delays.append(rng.uniform(0.05, 1.0))
                await asyncio.sleep(kill_delays[-1])
                ingest.kill()
            await publishing
            offset_of = {event["id"]: (record.partition, record.offset) for event, record in zip(events, sent)}
            ahead_after_kill.append(await _stored_ahead_of_commit(settings, topic, offset_of))
        with ServiceProcess(settings, roles="ingest", log_path=tmp_path / "ingest-last.log"):
            await wait_for(lambda: _offsets_reached(settings, topic, next_offsets(sent)), timeout=60,
                           message=f"committed offsets covering all {EVENT_COUNT} events (seed {KILL_SEED})")
    finally:
        if not publishing.done():
            publishing.cancel()
    context = (f"seed {KILL_SEED}, kill delays {[round(delay, 3) for delay in kill_delays]}, "
               f"events stored past the committed offset after each kill {ahead_after_kill}")

    assert max(ahead_after_kill) > 0, \
        f"no kill fell between storing a batch and committing its offsets, so nothing was redelivered ({context})"

    per_event = await fetch(settings, "SELECT event_id, count(*) AS n FROM tasks GROUP BY event_id")
    totals = await fetch(settings, "SELECT count(*) AS n, count(DISTINCT idempotency_key) AS keys FROM tasks")
    counts = {row["event_id"]: row["n"] for row in per_event}
    missing = [event["id"] for event in events if event["id"] not in counts]
    wrong = {event_id: count for event_id, count in counts.items() if count != actions}
    assert not missing, f"{len(missing)} events have no task rows, e.g. {missing[:5]} ({context})"
    assert not wrong, \
        f"{len(wrong)} events have other than {actions} task rows, e.g. {list(wrong.items())[:5]} ({context})"
    assert totals[0]["n"] == EVENT_COUNT * actions, \
        f"expected {EVENT_COUNT * actions} task rows, got {totals[0]['n']} ({context})"
    assert totals[0]["keys"] == totals[0]["n"], f"idempotency keys repeat among the task rows ({context})"

    async with TopicReader(settings, settings.results_topic) as results:
        with ServiceProcess(settings, roles="worker,relay", log_path=tmp_path / "worker.log"):
            await _wait_until_settled(settings, results, tasks=EVENT_COUNT * actions,
                                      offsets=next_offsets(sent), timeout=90)

    statuses = await _status_counts(settings)
    task_ids = Counter(orjson.loads(record.value)["taskId"] for record in results.records)
    assert statuses == Counter(complete=EVENT_COUNT * actions), f"expected every task complete, got {dict(statuses)}"
    assert len(results.records) == EVENT_COUNT * actions, \
        f"expected {EVENT_COUNT * actions} result messages, got {len(results.records)}"
    assert len(task_ids) == EVENT_COUNT * actions, \
        f"{EVENT_COUNT * actions - len(task_ids)} tasks have no result message"
