"""Replay of dead letters, into their source topic or straight into task rows.

`--to source` publishes the original key, value and headers again to the source topic,
with a `replayed_from` header naming the dead letter, and the running ingest decodes it
like any record. Each replayed source record is stored in `dead_letter_replays`, and a
later replay of the same source record is skipped unless forced. Without that record a
second replay would publish a second copy. Ingest would create no second task from it,
because the task idempotency key contains the event identity, but a copy that still fails
would go back to the dead-letter topic every time.

`--to matching` decodes the value with the source topic's format, matches the loaded
dispatchers and inserts the task rows in one statement per chunk, keyed like ingest
(`event:<event key>:<action id>`, or the action's deduplication key), so a replay, a
second replay and a later redelivery of the same event all end with one task per
(event, action). Records that still fail are
reported with their reason and are not written to the dead-letter topic again.

Both report, per dead letter, one outcome: published, matched, unmatched, failed or
skipped, or would_publish and would_match in a dry run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from taskservice import metrics
from taskservice.config import Settings
from taskservice.consumers.decode import Rejection, Skip, decode_record
from taskservice.consumers.dispatch import ActionFailed, DispatcherTable, task_rows_for
from taskservice.errors import BrokerUnavailableError, ServiceError
from taskservice.kafka import create_producer
from taskservice.recovery.dead_letters import DeadLetter, DeadLetterReader, DeadLetterSelection, SourceRecord
from taskservice.recovery.filters import DEFAULT_READ_TIMEOUT_S, ReplayTarget, format_time
from taskservice.store.db import Pool, PostgresError, create_pool, is_data_error
from taskservice.store.recovery_repository import RecoveryRepository
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)

REPLAY_HEADER = "replayed_from"
REPLAY_CHUNK_SIZE = 500


@dataclass(slots=True)
class ReplayOutcome:
    """The result of replaying one dead letter."""

    letter: DeadLetter
    outcome: str
    detail: str
    reason: str | None = None                          # reason code when the outcome is failed
    task_ids: list[str] = field(default_factory=list)  # tasks this replay created
    existing_tasks: int = 0                            # tasks that existed already

    def line(self) -> str:
        """Render the outcome as one line: position, outcome and detail."""
        return f"{self.letter.position.ljust(8)}  {self.outcome.ljust(13)}  {self.detail}"

    def as_json(self) -> dict[str, Any]:
        """Return the outcome for one JSON line."""
        source = self.letter.source
        return {
            "partition": self.letter.partition, "offset": self.letter.offset, "outcome": self.outcome,
            "detail": self.detail, "reason": self.reason, "task_ids": self.task_ids,
            "existing_tasks": self.existing_tasks, "source": str(source) if source else None,
        }


Report = Callable[[ReplayOutcome], None]


async def replay_dead_letters(
    settings: Settings, selection: DeadLetterSelection, limit: int | None, target: ReplayTarget, report: Report,
    *, dry_run: bool = False, force: bool = False, timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> Counter[str]:
    """Replay the selected dead letters to target, report each outcome, and return the count per outcome."""
    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL, where replays and tasks are stored")
    counts: Counter[str] = Counter()

    def counted(outcome: ReplayOutcome) -> None:
        counts[outcome.outcome] += 1
        if not dry_run:
            metrics.DEAD_LETTERS_REPLAYED.labels(outcome=outcome.outcome).inc()
        report(outcome)

    async with AsyncExitStack() as stack:
        reader = await stack.enter_async_context(DeadLetterReader(settings, timeout_s))
        pool = await create_pool(settings.database_url, size=2, role="recovery")
        stack.push_async_callback(pool.close)
        replayer: _Replayer
        if target == "source":
            replayer = _SourceReplayer(settings, reader, RecoveryRepository(pool), dry_run=dry_run, force=force)
        else:
            replayer = _MatchingReplayer(settings, pool, dry_run=dry_run)
        await stack.enter_async_context(replayer)

        chunk: list[DeadLetter] = []
        async for letter in reader.read(selection, limit):
            chunk.append(letter)
            if len(chunk) >= REPLAY_CHUNK_SIZE:
                await replayer.replay(chunk, counted)
                chunk = []
        await replayer.replay(chunk, counted)
    logger.info("replayed dead letters to %s: %s", target, dict(counts),
                extra={"event": "dead_letters_replayed", "target": target, "dry_run": dry_run, **counts})
    return counts


class _Replayer:
    """Steps shared by both targets: the source check and skipping duplicate dead letters."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._seen: set[SourceRecord] = set()

    async def __aenter__(self) -> _Replayer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def replay(self, letters: list[DeadLetter], report: Report) -> None:
        """Replay one chunk of dead letters and report each outcome."""
        ready: list[tuple[DeadLetter, SourceRecord]] = []
        for letter in letters:
            rejected = self._check(letter)
            if rejected is not None:
                report(rejected)
                continue
            source = letter.source
            assert source is not None
            self._seen.add(source)
            ready.append((letter, source))
        if ready:
            await self._replay(ready, report)

    def _check(self, letter: DeadLetter) -> ReplayOutcome | None:
        source = letter.source
        if source is None:
            return ReplayOutcome(letter, "failed", "the source_topic, source_partition or source_offset header is "
                                 "missing or not a number, so the source of this record is unknown")
        if source in self._seen:
            return ReplayOutcome(letter, "skipped", f"another dead letter of the same source record {source} "
                                 "was handled above")
        if source.topic not in self._settings.topics:
            return ReplayOutcome(letter, "failed", f"source topic {source.topic!r} is not an ingested topic; add it "
                                 "to TASKSERVICE_TOPICS with its format to replay its records")
        return None

    async def _replay(self, letters: list[tuple[DeadLetter, SourceRecord]], report: Report) -> None:
        raise NotImplementedError


class _SourceReplayer(_Replayer):
    """Publishes dead letters again to their source topic and records each replay."""

    def __init__(self, settings: Settings, reader: DeadLetterReader, recovery: RecoveryRepository, *,
                 dry_run: bool, force: bool) -> None:
        super().__init__(settings)
        self._reader = reader
        self._recovery = recovery
        self._dry_run = dry_run
        self._force = force
        self._partitions: dict[str, list[int] | None] = {}
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> _SourceReplayer:
        if not self._dry_run:
            self._producer = create_producer(self._settings)
            try:
                await self._producer.start()
            except KafkaError as exc:
                await self._producer.stop()
                raise BrokerUnavailableError(f"cannot start a producer on the Kafka broker: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def _replay(self, letters: list[tuple[DeadLetter, SourceRecord]], report: Report) -> None:
        earlier = {} if self._force else await self._recovery.list_dead_letter_replays(
            [_source_fields(source) for _, source in letters])
        pending: list[tuple[DeadLetter, SourceRecord, int | None]] = []
        for letter, source in letters:
            previous = earlier.get((source.topic, source.partition, source.offset))
            if previous is not None:
                report(ReplayOutcome(letter, "skipped", (
                    f"{source} was replayed before, to {source.topic}[{previous['replay_partition']}]"
                    f"@{previous['replay_offset']} at {format_time(previous['last_replayed_at'])}; "
                    "pass --force to publish it again")))
                continue
            partitions = await self._topic_partitions(source.topic)
            if partitions is None:
                report(ReplayOutcome(letter, "failed", f"source topic {source.topic!r} does not exist"))
                continue
            # The original partition keeps the record's order among records of the same key.
            partition = source.partition if source.partition in partitions else None
            pending.append((letter, source, partition))
        if self._dry_run:
            for letter, source, partition in pending:
                where = f"{source.topic}[{partition}]" if partition is not None else source.topic
                report(ReplayOutcome(letter, "would_publish", f"would publish {source} again to {where}"))
            return
        await self._publish(pending, report)

    async def _topic_partitions(self, topic: str) -> list[int] | None:
        if topic not in self._partitions:
            self._partitions[topic] = await self._reader.partitions(topic)
        return self._partitions[topic]

    async def _publish(self, pending: list[tuple[DeadLetter, SourceRecord, int | None]], report: Report) -> None:
        assert self._producer is not None
        results = await asyncio.gather(
            *(self._send(letter, source, partition) for letter, source, partition in pending), return_exceptions=True)
        replays = []
        for (letter, source, _), result in zip(pending, results):
            if isinstance(result, BaseException):
                metrics.BROKER_ERRORS.labels(operation="replay_dead_letter").inc()
                report(ReplayOutcome(letter, "failed", f"publishing {source} again failed: {result}"))
                continue
            replays.append({**_source_fields(source), "dead_letter_topic": letter.topic,
                            "dead_letter_partition": letter.partition, "dead_letter_offset": letter.offset,
                            "replay_partition": result.partition, "replay_offset": result.offset})
            report(ReplayOutcome(letter, "published",
                                 f"published {source} again as {source.topic}[{result.partition}]@{result.offset}"))
        await self._recovery.record_dead_letter_replays(replays)

    async def _send(self, letter: DeadLetter, source: SourceRecord, partition: int | None) -> Any:
        assert self._producer is not None
        headers = [*letter.original_headers(), (REPLAY_HEADER, f"{letter.topic}:{letter.position}".encode())]
        future = await self._producer.send(source.topic, value=letter.value, key=letter.key, partition=partition,
                                           headers=headers)
        return await future


def _source_fields(source: SourceRecord) -> dict[str, Any]:
    return {"source_topic": source.topic, "source_partition": source.partition, "source_offset": source.offset}


@dataclass(slots=True)
class _Matched:
    """A dead letter decoded into an event, and the task rows its dispatchers create."""

    letter: DeadLetter
    rows: list[dict[str, Any]]


class _MatchingReplayer(_Replayer):
    """Decodes dead letters, matches the dispatchers and inserts task rows as ingest does."""

    def __init__(self, settings: Settings, pool: Pool, *, dry_run: bool) -> None:
        super().__init__(settings)
        self._repository = Repository(pool)
        self._recovery = RecoveryRepository(pool)
        self._dispatchers = DispatcherTable(self._repository)
        self._dry_run = dry_run

    async def __aenter__(self) -> _MatchingReplayer:
        await self._dispatchers.reload()
        return self

    async def _replay(self, letters: list[tuple[DeadLetter, SourceRecord]], report: Report) -> None:
        matched: list[_Matched] = []
        for letter, source in letters:
            result = self._match(letter, source)
            if isinstance(result, ReplayOutcome):
                report(result)
            else:
                matched.append(result)
        if self._dry_run:
            await self._report_dry_run(matched, report)
            return
        created = await self._insert([item.rows for item in matched])
        for item, rows_created in zip(matched, created):
            if rows_created is None:
                report(ReplayOutcome(item.letter, "failed", "PostgreSQL rejected the task data; see the service "
                                     "log for the value", reason="unsupported_value"))
                continue
            report(_matched_outcome(item, rows_created))

    def _match(self, letter: DeadLetter, source: SourceRecord) -> _Matched | ReplayOutcome:
        topic_format = self._settings.topics[source.topic]
        decoded = decode_record(letter.value, letter.original_headers(), topic_format, self._settings.max_record_bytes)
        if isinstance(decoded, Rejection):
            return ReplayOutcome(letter, "failed", f"{decoded.reason}: {decoded.detail}", reason=decoded.reason)
        if isinstance(decoded, Skip):
            return ReplayOutcome(letter, "skipped", f"the record carries no event, so ingest skips it: {decoded.detail}")
        try:
            rows = task_rows_for(self._dispatchers, decoded, self._settings.max_task_data_bytes)
        except ActionFailed as exc:
            return ReplayOutcome(letter, "failed", f"{exc.reason}: {exc}", reason=exc.reason)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the replay, as in ingest
            logger.exception("cannot match dead letter %s", letter.position, extra={"event": "replay_match_failed"})
            return ReplayOutcome(letter, "failed", f"schema_mismatch: matching failed: {type(exc).__name__}: {exc}",
                                 reason="schema_mismatch")
        if not rows:
            return ReplayOutcome(letter, "unmatched", f"event {decoded.event_id} of type {decoded.type!r} matches "
                                 "no dispatcher; create one, then replay again")
        return _Matched(letter, rows)

    async def _insert(self, groups: list[list[dict[str, Any]]]) -> list[list[Any] | None]:
        """Insert every group's rows in one statement; return the created rows per group, None where rejected.

        A value PostgreSQL rejects fails the whole statement, so after a data error each
        group is inserted alone, as ingest does.
        """
        rows = [row for group in groups for row in group]
        try:
            created = await self._repository.insert_tasks(rows)
        except PostgresError as exc:
            if not is_data_error(exc):
                raise
            logger.warning("replay insert failed, inserting records one by one: %s", exc,
                           extra={"event": "replay_insert_failed"})
            return [await self._insert_alone(group) for group in groups]
        # Two dead letters can hold the same event; its tasks count as created for the first.
        by_key = {row["idempotency_key"]: row for row in created}
        return [[by_key.pop(row["idempotency_key"]) for row in group if row["idempotency_key"] in by_key]
                for group in groups]

    async def _insert_alone(self, group: list[dict[str, Any]]) -> list[Any] | None:
        try:
            return await self._repository.insert_tasks(group)
        except PostgresError as exc:
            if not is_data_error(exc):
                raise
            logger.warning("replay insert rejected: %s", exc, extra={"event": "replay_insert_rejected"})
            return None

    async def _report_dry_run(self, matched: list[_Matched], report: Report) -> None:
        keys = [row["idempotency_key"] for item in matched for row in item.rows]
        existing = await self._recovery.list_existing_idempotency_keys(keys)
        for item in matched:
            present = sum(row["idempotency_key"] in existing for row in item.rows)
            functions = ", ".join(sorted({row["function_name"] for row in item.rows}))
            report(ReplayOutcome(item.letter, "would_match", (
                f"would create {len(item.rows) - present} task(s) of {functions}; {present} exist already"),
                existing_tasks=present))


def _matched_outcome(item: _Matched, created: list[Any]) -> ReplayOutcome:
    for row in created:
        metrics.TASKS_CREATED.labels(source="event", function=row["function_name"]).inc()
    existing = len(item.rows) - len(created)
    ids = [row["id"] for row in created]
    detail = f"created {len(ids)} task(s)" + (f": {', '.join(ids)}" if ids else "")
    return ReplayOutcome(item.letter, "matched", f"{detail}; {existing} existed already",
                         task_ids=ids, existing_tasks=existing)
