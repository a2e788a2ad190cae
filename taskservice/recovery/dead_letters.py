"""Reading the dead-letter topic without a consumer group, and rendering its records.

The reader assigns the topic's partitions itself, so it never joins or disturbs a
consumer group and commits nothing. It reads each partition from its first offset up
to the high-water mark that its first fetch reports, and stops there. The fetch
high-water mark is used because `end_offsets()` is wrong on some brokers (Tansu returns
the base offset of the newest batch plus one).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from taskservice.config import Settings
from taskservice.errors import BrokerUnavailableError, NotFoundError, ServiceError
from taskservice.kafka import create_consumer
from taskservice.recovery.filters import DEFAULT_READ_TIMEOUT_S, InvalidFilterError, format_time
from taskservice.schemas.results import DEAD_LETTER_HEADERS

FETCH_TIMEOUT_MS = 200
FETCH_MAX_RECORDS = 500
DETAIL_WIDTH = 100
HEX_BYTES_PER_LINE = 16


class DeadLetterTopicMissingError(ServiceError):
    """Raised when the dead-letter topic does not exist, which means nothing was dead-lettered yet."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """The topic, partition and offset a dead-lettered record was read from."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic: the original key and value, and the ingest headers."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def position(self) -> str:
        """The record's place in the dead-letter topic as PARTITION:OFFSET."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """Return the last header of this name as text, or None when it is absent."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None

    @property
    def reason(self) -> str | None:
        """The reason code from the `reason` header."""
        return self.header("reason")

    @property
    def source(self) -> SourceRecord | None:
        """The source topic, partition and offset, or None when a header is missing or not a number."""
        topic = self.header("source_topic")
        partition = self.header("source_partition")
        offset = self.header("source_offset")
        if not topic or partition is None or offset is None:
            return None
        try:
            return SourceRecord(topic, int(partition), int(offset))
        except ValueError:
            return None

    def original_headers(self) -> list[tuple[str, bytes]]:
        """Return the headers without those ingest adds when it dead-letters a record."""
        return [(key, value) for key, value in self.headers if key not in DEAD_LETTER_HEADERS]


@dataclass(frozen=True, slots=True)
class DeadLetterSelection:
    """Filters on dead letters; None accepts any value."""

    reasons: frozenset[str] | None = None
    source_topics: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        """Return whether the dead letter passes every filter; since is inclusive, until exclusive."""
        if self.reasons is not None and letter.reason not in self.reasons:
            return False
        if self.source_topics is not None and letter.header("source_topic") not in self.source_topics:
            return False
        if self.since is not None and letter.timestamp < self.since:
            return False
        return self.until is None or letter.timestamp < self.until


def parse_position(text: str) -> tuple[int, int]:
    """Parse PARTITION:OFFSET, e.g. 0:42; raise InvalidFilterError naming the expected form."""
    partition, separator, offset = text.partition(":")
    if not separator or not partition.isdigit() or not offset.isdigit():
        raise InvalidFilterError(
            f"{text!r} is not a dead-letter position; give PARTITION:OFFSET as `dlq list` prints it, e.g. 0:42"
        )
    return int(partition), int(offset)


class DeadLetterReader:
    """Reads the dead-letter topic with assigned partitions; use as an async context manager."""

    def __init__(self, settings: Settings, timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> None:
        self.topic = settings.dead_letter_topic
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer = create_consumer(settings, [], group_id=None)

    async def __aenter__(self) -> DeadLetterReader:
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise BrokerUnavailableError(f"cannot reach the Kafka broker: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def partitions(self, topic: str) -> list[int] | None:
        """Return the partition numbers of a topic, or None when the topic does not exist.

        The metadata request lists every topic, so it never creates a topic on a broker
        that creates topics on first use.
        """
        try:
            # The consumer's own metadata covers only the topics it reads, so the partitions
            # come from the full metadata response itself.
            cluster = await self._consumer._client.fetch_all_metadata()  # noqa: SLF001 - no public call lists every topic's partitions
        except KafkaError as exc:
            raise BrokerUnavailableError(f"cannot read topic metadata from the broker: {exc}") from exc
        if topic not in cluster.topics():
            return None
        return sorted(cluster.partitions_for_topic(topic) or ())

    async def _dead_letter_partitions(self) -> list[int]:
        partitions = await self.partitions(self.topic)
        if partitions is None:
            raise DeadLetterTopicMissingError(
                f"the dead-letter topic {self.topic!r} does not exist, so no record has been dead-lettered yet"
            )
        return partitions

    async def read(self, selection: DeadLetterSelection, limit: int | None = None) -> AsyncIterator[DeadLetter]:
        """Yield the dead letters that match, partition by partition in offset order, at most limit."""
        found = 0
        for partition in await self._dead_letter_partitions():
            async with aclosing(self._read_partition(partition)) as letters:
                async for letter in letters:
                    if not selection.matches(letter):
                        continue
                    yield letter
                    found += 1
                    if limit is not None and found >= limit:
                        return

    async def read_one(self, partition: int, offset: int) -> DeadLetter:
        """Return the dead letter at PARTITION:OFFSET; raise NotFoundError naming the valid range."""
        partitions = await self._dead_letter_partitions()
        if partition not in partitions:
            raise NotFoundError(
                f"partition {partition} does not exist in {self.topic!r}; its partitions are "
                f"{', '.join(map(str, partitions))}"
            )
        async with aclosing(self._read_partition(partition, start=offset)) as letters:
            async for letter in letters:
                if letter.offset == offset:
                    return letter
                break
        raise NotFoundError(
            f"{self.topic!r} has no record at {partition}:{offset}; the offset is past the end or was "
            "deleted by retention. `taskservice dlq list` prints the positions that exist"
        )

    async def _read_partition(self, partition: int, start: int | None = None) -> AsyncIterator[DeadLetter]:
        """Yield the records of one partition from start (default: the first) up to the high-water mark.

        The high-water mark is read once, from the first fetch, so records written while
        reading do not keep the reader going.
        """
        tp = TopicPartition(self.topic, partition)
        consumer = self._consumer
        consumer.assign([tp])
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        end: int | None = None
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                batch = await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_MAX_RECORDS)
            except KafkaError as exc:
                raise BrokerUnavailableError(f"cannot fetch from {self.topic}[{partition}]: {exc}") from exc
            if end is None:
                end = consumer.highwater(tp)
            for record in batch.get(tp, []):
                if end is not None and record.offset >= end:
                    return
                yield _dead_letter_of(record)
                deadline = time.monotonic() + self._timeout_s
            if end is not None and await consumer.position(tp) >= end:
                return
            if time.monotonic() > deadline:
                waiting_for = "a fetch response" if end is None else f"records up to the high-water mark {end}"
                raise BrokerUnavailableError(
                    f"timed out after {self._timeout_s:.0f} s waiting for {waiting_for} from "
                    f"{self.topic}[{partition}]; check the broker, or raise --timeout"
                )


def _dead_letter_of(record: Any) -> DeadLetter:
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, tz=UTC),
        key=record.key,
        value=record.value,
        headers=tuple((key, value or b"") for key, value in record.headers),
    )


# Rendering -------------------------------------------------------------------------------


def summary_line(letter: DeadLetter) -> str:
    """Render one dead letter as a line: position, time, reason, source and a short detail."""
    detail = " ".join((letter.header("detail") or "").split())
    if len(detail) > DETAIL_WIDTH:
        detail = detail[: DETAIL_WIDTH - 1] + "…"
    source = letter.source
    return "  ".join((
        letter.position.ljust(8), format_time(letter.timestamp), (letter.reason or "-").ljust(16),
        str(source) if source else "-", detail,
    )).rstrip()


def summary_json(letter: DeadLetter) -> dict[str, Any]:
    """Return the fields of a dead letter for one JSON line."""
    source = letter.source
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": format_time(letter.timestamp),
        "reason": letter.reason,
        "detail": letter.header("detail"),
        "source_topic": source.topic if source else letter.header("source_topic"),
        "source_partition": source.partition if source else None,
        "source_offset": source.offset if source else None,
        "consumer_group": letter.header("consumer_group"),
        "key": _text_or_none(letter.key),
        "key_hex": letter.key.hex() if letter.key is not None and _text_or_none(letter.key) is None else None,
        "value_bytes": None if letter.value is None else len(letter.value),
    }


def full_text(letter: DeadLetter) -> str:
    """Render a dead letter in full: position, time, key, every header and the value."""
    lines = [
        f"dead letter  {letter.topic} {letter.position}",
        f"time         {format_time(letter.timestamp)}",
        f"key          {render_bytes_inline(letter.key)}",
        "headers",
    ]
    width = max((len(key) for key, _ in letter.headers), default=0)
    lines.extend(f"  {key.ljust(width)}  {render_bytes_inline(value)}" for key, value in letter.headers)
    if not letter.headers:
        lines.append("  (none)")
    lines.append(_value_heading(letter.value))
    lines.append(render_value(letter.value))
    return "\n".join(lines)


def _value_heading(value: bytes | None) -> str:
    if value is None:
        return "value        (none: the record is a tombstone)"
    return f"value        {len(value)} bytes, {_value_kind(value)}"


def _value_kind(value: bytes) -> str:
    text = _text_or_none(value)
    if text is None:
        return "not UTF-8, shown as hex"
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return "UTF-8 text that is not JSON, shown escaped"
    return "JSON"


def render_value(value: bytes | None) -> str:
    """Render a value as indented JSON when it is JSON, as escaped text when it is UTF-8, else as hex."""
    if value is None:
        return ""
    text = _text_or_none(value)
    if text is None:
        return hex_dump(value)
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.dumps(text, ensure_ascii=False)
    return json.dumps(parsed, indent=2, ensure_ascii=False)


def render_bytes_inline(value: bytes | None) -> str:
    """Render a key or header value on one line: escaped text when UTF-8, else hex."""
    if value is None:
        return "(none)"
    text = _text_or_none(value)
    if text is None:
        return f"hex {value.hex(' ')}"
    return json.dumps(text, ensure_ascii=False)


def hex_dump(value: bytes) -> str:
    """Render bytes as offset, hex and printable ASCII, 16 bytes per line."""
    lines = []
    for start in range(0, len(value), HEX_BYTES_PER_LINE):
        chunk = value[start:start + HEX_BYTES_PER_LINE]
        printable = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{start:08x}  {chunk.hex(' '):<{HEX_BYTES_PER_LINE * 3 - 1}}  |{printable}|")
    return "\n".join(lines)


def _text_or_none(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
