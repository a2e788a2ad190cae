"""The ingest consumer: Kafka records to task rows, with offsets committed after the rows.

Each batch goes through the same steps: decode every record by its topic's format, match
the dispatchers, send rejected records to the dead-letter topic, insert the task rows in
one statement, and only then commit the batch's offsets. A crash anywhere before the
commit makes Kafka deliver the batch again, and the idempotency key of each task row
turns the second insert into a no-op, so every (event, action) pair yields one task.

A rebalance waits for the batch in hand: the revoke callback takes the lock that the
batch loop holds from storing a batch to committing its offsets, so offsets of finished
work are committed before partitions move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from taskservice import metrics
from taskservice.config import Settings
from taskservice.consumers.decode import Event, Rejection, Skip, decode_record
from taskservice.consumers.dispatch import ActionFailed, DispatcherTable, task_rows_for
from taskservice.health import Health
from taskservice.kafka import create_consumer
from taskservice.schemas.results import DEAD_LETTER_HEADERS
from taskservice.store.db import PostgresError, is_data_error, retry_until_done
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 200
# Records decoded per insert statement: all inserts of a batch but the last overlap with decoding.
INSERT_CHUNK_RECORDS = 250
# Event-loop turns that a new insert task gets to send its statement before decoding resumes.
# NOTE: an estimate. The insert path suspends a few times before its statement is written;
# with fewer turns the insert waits for the next chunk's decoding and nothing overlaps.
SEND_TURNS = 10
BROKER_RETRY_DELAY_S = 1.0
LAG_UPDATE_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Decoded:
    """One record of a batch after decoding and matching."""

    record: Any
    rows: list[dict[str, Any]]
    rejection: Rejection | None = None
    event_id: str | None = None     # None when the record is not an event of its topic's format
    skipped: bool = False           # the record carries no event by design, such as a Debezium tombstone


def _record_fields(record: Any) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


async def _let_run(task: asyncio.Task[None]) -> None:
    """Yield to the event loop SEND_TURNS times, or until the task is done, so it can send its statement."""
    for _ in range(SEND_TURNS):
        if task.done():
            return
        await asyncio.sleep(0)


class _WaitForBatch(ConsumerRebalanceListener):
    """Holds a rebalance until the batch in hand is stored and its offsets committed."""

    def __init__(self, batch_lock: asyncio.Lock, group_id: str, assigned: asyncio.Event) -> None:
        self._batch_lock = batch_lock
        self._group_id = group_id
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._batch_lock:
            # The new owner reports the lag of these partitions from now on.
            for tp in revoked:
                with contextlib.suppress(KeyError):
                    metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
            logger.info(
                "partitions revoked: %s",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(revoked)),
                extra={"event": "partitions_revoked", "group_id": self._group_id},
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned.set()
        logger.info(
            "partitions assigned: %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)),
            extra={"event": "partitions_assigned", "group_id": self._group_id},
        )


class IngestConsumer:
    """Consumes the configured topics and creates one task per (event, task action)."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        producer: AIOKafkaProducer,
        dispatchers: DispatcherTable,
        health: Health,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._producer = producer
        self._dispatchers = dispatchers
        self._health = health
        self._batch_lock = asyncio.Lock()
        self.assigned = asyncio.Event()
        self._lag_updated_at = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until stopping is set; the batch in hand is finished first."""
        consumer = create_consumer(
            self._settings,
            self._settings.topics,
            group_id=self._settings.consumer_group,
            listener=_WaitForBatch(self._batch_lock, self._settings.consumer_group, self.assigned),
        )
        await self._start_consumer(consumer, stopping)
        logger.info(
            "ingest started on %s", ", ".join(self._settings.topics),
            extra={"event": "ingest_started", "group_id": self._settings.consumer_group},
        )
        try:
            while not stopping.is_set():
                # Fetch outside the batch lock: once a rebalance has begun, getmany waits
                # without a timeout for the new assignment, and the assignment waits for
                # the revoke callback, which takes this lock.
                batch = await consumer.getmany(
                    timeout_ms=FETCH_TIMEOUT_MS, max_records=self._settings.ingest_batch_max_records
                )
                if batch:
                    async with self._batch_lock:
                        # Partitions revoked since the fetch belong to their new owner now,
                        # which reads these records again from the last commit.
                        assigned = consumer.assignment()
                        batch = {tp: records for tp, records in batch.items() if tp in assigned}
                        if batch:
                            await self._process_batch(consumer, batch, stopping)
                self._health.mark_progress("ingest")
                await self._maybe_update_lag(consumer)
        finally:
            await consumer.stop()
            logger.info("ingest stopped", extra={"event": "ingest_stopped", "group_id": self._settings.consumer_group})

    async def _start_consumer(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        while True:
            try:
                await consumer.start()
                return
            except KafkaError as exc:
                metrics.BROKER_ERRORS.labels(operation="consumer_start").inc()
                if stopping.is_set():
                    raise
                logger.warning("cannot start the consumer, retrying: %s", exc,
                               extra={"event": "consumer_start_retry"})
                await asyncio.sleep(BROKER_RETRY_DELAY_S)

    async def _process_batch(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]], stopping: asyncio.Event
    ) -> None:
        started = time.perf_counter()
        records = [record for partition_records in batch.values() for record in partition_records]
        decoded: list[_Decoded] = []
        storing: asyncio.Task[None] | None = None
        try:
            for start in range(0, len(records), INSERT_CHUNK_RECORDS):
                # Decoding a chunk runs in Python while PostgreSQL inserts the chunk before
                # it. Inserts stay in record order, so the first of rows sharing a key wins.
                chunk = [self._decode(record) for record in records[start:start + INSERT_CHUNK_RECORDS]]
                decoded += chunk
                if storing is not None:
                    await storing
                storing = asyncio.create_task(self._store_tasks(chunk, stopping))
                await _let_run(storing)
            if storing is not None:
                await storing
        finally:
            if storing is not None and not storing.done():
                storing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await storing
        await self._dead_letter([item for item in decoded if item.rejection is not None], stopping)
        await self._commit(consumer, {tp: records[-1].offset + 1 for tp, records in batch.items()})
        self._count(decoded)
        metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    def _decode(self, record: Any) -> _Decoded:
        topic_format = self._settings.topics[record.topic]
        result = decode_record(record.value, record.headers, topic_format, self._settings.max_record_bytes)
        if isinstance(result, Rejection):
            return _Decoded(record, [], result)
        if isinstance(result, Skip):
            logger.debug("record skipped: %s", result.detail,
                         extra={"event": "record_skipped", **_record_fields(record)})
            return _Decoded(record, [], skipped=True)
        try:
            return _Decoded(record, self._match(result), event_id=result.event_id)
        except ActionFailed as exc:
            return _Decoded(record, [], Rejection(exc.reason, str(exc)), event_id=result.event_id)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the partition
            logger.exception("cannot match record", extra={"event": "match_failed", "event_id": result.event_id,
                                                           **_record_fields(record)})
            return _Decoded(record, [], Rejection("schema_mismatch", f"matching failed: {type(exc).__name__}: {exc}"),
                            event_id=result.event_id)

    def _match(self, event: Event) -> list[dict[str, Any]]:
        return task_rows_for(self._dispatchers, event, self._settings.max_task_data_bytes)

    async def _store_tasks(self, decoded: list[_Decoded], stopping: asyncio.Event) -> None:
        rows = [row for item in decoded for row in item.rows]
        if not rows:
            return
        try:
            created = await self._insert(rows, stopping)
        except PostgresError as exc:
            # A value PostgreSQL rejects fails the whole statement; find the record by
            # inserting each one alone and reject only those that fail.
            logger.warning("batch insert failed, inserting records one by one: %s", exc,
                           extra={"event": "batch_insert_failed"})
            created = await self._store_one_by_one(decoded, stopping)
        self._count_created(rows, created)
        if logger.isEnabledFor(logging.DEBUG):
            self._log_created(decoded, created)

    async def _insert(self, rows: list[dict[str, Any]], stopping: asyncio.Event) -> list[Any]:
        """Insert rows, waiting out outages; only a data error reaches the caller.

        Any other server error (a bug, a missing privilege) keeps the batch and retries it
        with backoff, so the partition stalls visibly instead of losing events.
        """
        delay_s = BROKER_RETRY_DELAY_S
        while True:
            try:
                return await retry_until_done(
                    "insert_tasks", lambda: self._repository.insert_tasks(rows), stopping=stopping
                )
            except PostgresError as exc:
                if is_data_error(exc) or stopping.is_set():
                    raise
                metrics.DATABASE_ERRORS.labels(operation="insert_tasks").inc()
                logger.error("cannot store tasks, retrying in %.0f s: %s", delay_s, exc,
                             extra={"event": "insert_failed", "group_id": self._settings.consumer_group})
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)

    async def _store_one_by_one(self, decoded: list[_Decoded], stopping: asyncio.Event) -> list[Any]:
        created: list[Any] = []
        for item in decoded:
            if not item.rows:
                continue
            try:
                created += await self._insert(item.rows, stopping)
            except PostgresError as exc:
                item.rejection = Rejection("unsupported_value", f"PostgreSQL rejected the task data: {exc}")
                item.rows = []
        return created

    def _count_created(self, rows: list[dict[str, Any]], created: list[Any]) -> None:
        # One increment per function and batch: a labelled increment per row cost about 8 %
        # of the ingest's CPU time.
        for function, count in Counter(row["function_name"] for row in created).items():
            metrics.TASKS_CREATED.labels(source="event", function=function).inc(count)
        duplicates = len(rows) - len(created)
        if duplicates:
            metrics.TASKS_DEDUPLICATED.inc(duplicates)
            logger.info("%d redelivered (event, action) pairs already had tasks", duplicates,
                        extra={"event": "tasks_deduplicated", "count": duplicates})

    def _log_created(self, decoded: list[_Decoded], created: list[Any]) -> None:
        sources = {row["id"]: (item, row) for item in decoded for row in item.rows}
        for task in created:
            item, row = sources[task["id"]]
            logger.debug("task created", extra={
                "event": "task_created", "task_id": task["id"], "function": task["function_name"],
                "event_id": row["event_id"], "group_id": self._settings.consumer_group,
                **_record_fields(item.record)})

    async def _dead_letter(self, rejected: list[_Decoded], stopping: asyncio.Event) -> None:
        if not rejected:
            return
        while True:
            try:
                futures = [await self._producer.send(self._settings.dead_letter_topic, **self._dead_letter_record(item))
                           for item in rejected]
                await asyncio.gather(*futures)
                break
            except KafkaError as exc:
                metrics.BROKER_ERRORS.labels(operation="dead_letter").inc()
                if stopping.is_set():
                    raise
                logger.warning("cannot write to the dead-letter topic, retrying: %s", exc,
                               extra={"event": "dead_letter_retry"})
                await asyncio.sleep(BROKER_RETRY_DELAY_S)
        for item in rejected:
            assert item.rejection is not None
            metrics.RECORDS_DEAD_LETTERED.labels(topic=item.record.topic, reason=item.rejection.reason).inc()
            logger.warning(
                "record sent to the dead-letter topic: %s", item.rejection.detail,
                extra={"event": "record_dead_lettered", "reason": item.rejection.reason, "event_id": item.event_id,
                       "group_id": self._settings.consumer_group, **_record_fields(item.record)},
            )

    def _dead_letter_record(self, item: _Decoded) -> dict[str, Any]:
        record = item.record
        assert item.rejection is not None
        headers = [
            ("reason", item.rejection.reason.encode()),
            ("detail", item.rejection.detail[:2000].encode()),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
            ("consumer_group", self._settings.consumer_group.encode()),
        ]
        # The record's own headers follow, so a replay gets the record as it was (a binary-mode
        # CloudEvent keeps its attributes). Headers named like the ones above cannot be kept.
        headers += [(name, value) for name, value in record.headers or () if name not in DEAD_LETTER_HEADERS]
        return {"value": record.value, "key": record.key, "headers": headers}

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member, which resumes from the last commit;
            # the task rows of this batch make its redelivery a no-op.
            metrics.OFFSET_COMMIT_FAILURES.inc()
            logger.warning("offset commit failed after a rebalance: %s", exc,
                           extra={"event": "commit_failed", "group_id": self._settings.consumer_group})

    def _count(self, decoded: list[_Decoded]) -> None:
        outcomes: Counter[tuple[str, str]] = Counter()
        for item in decoded:
            if item.skipped:
                outcome = "skipped"
            elif item.rejection is not None:
                outcome = "invalid" if item.event_id is None else "dead_lettered"
            elif item.rows:
                outcome = "matched"
            else:
                outcome = "unmatched"
            outcomes[(item.record.topic, outcome)] += 1
        for (topic, outcome), count in outcomes.items():
            metrics.RECORDS_CONSUMED.labels(topic=topic, outcome=outcome).inc(count)

    async def _maybe_update_lag(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._lag_updated_at < LAG_UPDATE_INTERVAL_S:
            return
        self._lag_updated_at = now
        # The fetch high-water mark is right on every broker; end_offsets() is not on Tansu.
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await consumer.position(tp)
            except (IllegalStateError, KafkaError):
                continue
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(highwater - position, 0))
