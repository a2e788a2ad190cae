"""Each input format end to end: records on the real broker become tasks or dead letters.

Good records of every format create tasks whose `data.event` is the normalised document.
Malformed records go to the dead-letter topic with their reason, Debezium tombstones are
skipped, and the offsets of every topic move past all of them, so later good records
still create tasks.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from taskservice.config import Settings
from tests.support import (
    TopicReader, committed_offsets, document_event, exh_event, fetch, next_offsets, prepare, running_service,
    wait_for,
)

DEAD_LETTER_HEADERS = ("reason", "detail", "source_topic", "source_partition", "source_offset", "consumer_group")

Header = tuple[str, bytes]
Record = tuple[bytes | None, list[Header]]


def _attributes(event_id: str, event_type: str = "com.example.order.created",
                time: bytes = b"2027-01-01T12:00:00Z") -> list[Header]:
    return [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_source", b"/shop/orders"),
            ("ce_type", event_type.encode()), ("ce_time", time), ("ce_traceparent", b"00-4bf9-00f0-01")]


def _binary_event(event_id: str, data: Any) -> Record:
    return orjson.dumps(data), [*_attributes(event_id), ("content-type", b"application/json")]


def _binary_document(event_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Return the structured form that a binary-mode record of _binary_event normalises to."""
    return {"specversion": "1.0", "id": event_id, "source": "/shop/orders", "type": "com.example.order.created",
            "time": "2027-01-01T12:00:00Z", "traceparent": "00-4bf9-00f0-01", "datacontenttype": "application/json",
            "data": data}


def _debezium(op: str, lsn: int, before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    source = {"version": "2.7.0.Final", "connector": "postgresql", "name": "shop", "ts_ms": 1_798_804_800_000,
              "snapshot": "false", "db": "shop", "schema": "public", "table": "orders", "txId": 771, "lsn": lsn}
    return {"before": before, "after": after, "source": source, "op": op, "ts_ms": 1_798_804_800_120,
            "transaction": None}


def _json(body: dict[str, Any]) -> Record:
    return orjson.dumps(body), []


def _key(offset_index: int) -> bytes:
    # Debezium keys are JSON; a tombstone needs a key, as Kafka needs a key or a value.
    return orjson.dumps({"id": offset_index})


async def _publish(settings: Settings, topic: str, records: list[Record]) -> list[Any]:
    """Publish (value, headers) records in order, the n-th with the key _key(n); return their metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0,
                                enable_idempotence=False)
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value=value, headers=headers, key=_key(index))
                for index, (value, headers) in enumerate(records)]
    finally:
        await producer.stop()


def _with_debezium_topic(settings: Settings) -> Settings:
    topics = {**settings.topics, f"shop-orders-{uuid.uuid4().hex[:10]}": "debezium"}
    return settings.model_copy(update={"topics": topics, "topic_partitions": 1})


def _topic(settings: Settings, topic_format: str) -> str:
    return next(topic for topic, fmt in settings.topics.items() if fmt == topic_format)


async def _wait_for_commits(settings: Settings, published: dict[str, list[Any]]) -> None:
    for topic, metadata in published.items():
        expected = next_offsets(metadata)

        async def committed(topic: str = topic, expected: dict[int, int] = expected) -> bool:
            offsets = await committed_offsets(settings, topic)
            return all(offsets.get(partition) == offset for partition, offset in expected.items())

        await wait_for(committed, timeout=60, message=f"committed offsets {expected} on {topic}")


async def _task_events(settings: Settings) -> dict[str, dict[str, Any]]:
    """Return data.event of every task, by event id."""
    rows = await fetch(settings, "SELECT event_id, data FROM tasks")
    events = {}
    for row in rows:
        data = orjson.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        events[row["event_id"]] = data["event"]
    return events


def _counter(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_good_records_of_each_format_create_tasks(settings: Settings) -> None:
    settings = _with_debezium_topic(settings)
    await prepare(settings, [("user_deleted", "echo"), ("document.created", "echo"),
                             ("com.example.order.created", "echo"), ("orders.created", "echo"),
                             ("orders.deleted", "echo")])
    user = exh_event("user-1", id="u1")
    structured = document_event("doc-1", systolic=120)
    binary_document = {**document_event("doc-2"), "datacontenttype": "application/json"}
    binary_document_headers = [("ce_specversion", b"1.0"), ("ce_id", b"doc-2"), ("ce_source", b"/data/v1/tests"),
                               ("ce_type", b"document.created"), ("ce_time", b"2027-01-01T00:00:00.000Z"),
                               ("ce_subject", b"doc-doc-2"), ("content-type", b"application/json")]
    created = _debezium("c", 100, None, {"id": 7, "status": "new"})
    deleted = _debezium("d", 200, {"id": 7, "status": "paid"}, None)
    records = {
        _topic(settings, "exh"): [_json(user)],
        _topic(settings, "cloudevents"): [
            _json(structured),
            (orjson.dumps(binary_document["data"]), binary_document_headers),
            _binary_event("order-1", {"total": 12}),
            (b"\x00\x01", [*_attributes("order-2"), ("content-type", b"application/octet-stream")]),
        ],
        _topic(settings, "debezium"): [
            _json(created),
            _json({"schema": {"type": "struct", "optional": False}, "payload": deleted}),
            (None, []),
        ],
    }
    skipped_before = _counter("taskservice_records_consumed_total",
                              {"topic": _topic(settings, "debezium"), "outcome": "skipped"})

    async with running_service(settings, ("ingest",)):
        published = {topic: await _publish(settings, topic, values) for topic, values in records.items()}
        await _wait_for_commits(settings, published)

    events = await _task_events(settings)
    debezium_events = {event_id: event for event_id, event in events.items() if len(event_id) == 64}
    assert len(events) == 7, f"expected 7 tasks, got {sorted(events)}"
    assert events["user-1"] == user
    assert events["doc-1"] == structured
    assert events["doc-2"] == binary_document
    assert events["order-1"] == _binary_document("order-1", {"total": 12})
    assert events["order-2"]["data_base64"] == base64.b64encode(b"\x00\x01").decode()
    assert sorted(event["type"] for event in debezium_events.values()) == ["orders.created", "orders.deleted"]
    for event in debezium_events.values():
        assert set(event) == {"id", "type", "time", "op", "db", "schema", "table", "before", "after", "data",
                              "source", "transaction", "ts_ms"}
        assert event["data"] == (event["before"] if event["op"] == "d" else event["after"])
        assert event["time"] == "2027-01-01T12:00:00.000Z"
    skipped = _counter("taskservice_records_consumed_total",
                       {"topic": _topic(settings, "debezium"), "outcome": "skipped"}) - skipped_before
    assert skipped == 1, f"records consumed as skipped rose by {skipped}, expected 1 (the tombstone)"


# Malformed records, with the reason each one gets, between two good records per topic.
BAD_CLOUDEVENTS: list[tuple[str, Record, str | None]] = [
    ("binary without ce_id", (b"{}", [h for h in _attributes("x") if h[0] != "ce_id"]), "schema_mismatch"),
    ("binary with specversion 0.3", (b"{}", [("ce_specversion", b"0.3"), *_attributes("x")[1:]]), "schema_mismatch"),
    ("binary with a non-UTF-8 header", (b"{}", [*_attributes("x"), ("ce_subject", b"\xff\xfe")]), "invalid_header"),
    ("binary with a bad time", (b"{}", _attributes("x", time=b"yesterday")), "schema_mismatch"),
    ("binary with invalid JSON data", (b'{"total": ', [*_attributes("x"), ("content-type", b"application/json")]),
     "invalid_json"),
    ("structured with specversion 0.3", (orjson.dumps({**document_event("x"), "specversion": "0.3"}), []),
     "schema_mismatch"),
    ("structured Avro", (b"\x00", [("content-type", b"application/cloudevents+avro")]), "unsupported_content_type"),
    ("no value and no headers", (None, []), "no_value"),
]
BAD_DEBEZIUM: list[tuple[str, Record, str | None]] = [
    ("without op", _json({key: value for key, value in _debezium("c", 1, None, {"id": 1}).items() if key != "op"}),
     "schema_mismatch"),
    ("unknown op", _json(_debezium("x", 2, None, {"id": 1})), "schema_mismatch"),
    ("update without after", _json(_debezium("u", 3, {"id": 1}, None)), "schema_mismatch"),
    ("wrapper with a string payload", _json({"schema": {}, "payload": "row"}), "schema_mismatch"),
    ("truncated JSON", (b'{"op": "c", ', []), "invalid_json"),
]
BAD_EXH: list[tuple[str, Record, str | None]] = [
    ("not UTF-8", (b"\xff\xfe\x00", []), "not_utf8"),
    ("tombstone", (None, []), "no_value"),
]


async def test_malformed_records_are_dead_lettered(settings: Settings) -> None:
    settings = _with_debezium_topic(settings)
    await prepare(settings, [("user_deleted", "echo"), ("com.example.order.created", "echo"),
                             ("orders.created", "echo")])
    # Per topic: a good record, the malformed ones, and a good record after them. The
    # Debezium tombstone among the malformed records must be neither a task nor a dead letter.
    sequences: dict[str, list[tuple[str, Record, str | None]]] = {
        _topic(settings, "exh"): [
            ("user-1", _json(exh_event("user-1")), None), *BAD_EXH, ("user-2", _json(exh_event("user-2")), None),
        ],
        _topic(settings, "cloudevents"): [
            ("order-1", _binary_event("order-1", {"n": 1}), None), *BAD_CLOUDEVENTS,
            ("order-2", _binary_event("order-2", {"n": 2}), None),
        ],
        _topic(settings, "debezium"): [
            ("row 1", _json(_debezium("c", 10, None, {"id": 1})), None), BAD_DEBEZIUM[0],
            ("tombstone", (None, []), None),
            *BAD_DEBEZIUM[1:], ("row 2", _json(_debezium("c", 20, None, {"id": 2})), None),
        ],
    }
    expected_dead_letters = sum(reason is not None for sequence in sequences.values() for _, _, reason in sequence)
    skipped_before = _counter("taskservice_records_consumed_total",
                              {"topic": _topic(settings, "debezium"), "outcome": "skipped"})

    async with TopicReader(settings, settings.dead_letter_topic) as dead_letters:
        async with running_service(settings, ("ingest",)):
            published = {topic: await _publish(settings, topic, [record for _, record, _ in sequence])
                         for topic, sequence in sequences.items()}
            await _wait_for_commits(settings, published)

        async def all_read() -> bool:
            return len(dead_letters.records) >= expected_dead_letters and await dead_letters.caught_up()

        await wait_for(all_read, timeout=30, message=f"{expected_dead_letters} dead letters read")

    assert len(dead_letters.records) == expected_dead_letters, \
        f"expected {expected_dead_letters} dead letters, got {len(dead_letters.records)}"
    by_source = {}
    for record in dead_letters.records:
        headers = dict(record.headers)
        by_source[(headers["source_topic"].decode(), int(headers["source_offset"]))] = record
    for topic, sequence in sequences.items():
        for index, ((name, (value, _headers), reason), sent) in enumerate(zip(sequence, published[topic], strict=True)):
            record = by_source.get((topic, sent.offset))
            if reason is None:
                assert record is None, f"the {name} record at offset {sent.offset} of {topic} was dead-lettered"
                continue
            assert record is not None, f"no dead letter for the {name} record at offset {sent.offset} of {topic}"
            headers = dict(record.headers)
            assert tuple(headers)[:len(DEAD_LETTER_HEADERS)] == DEAD_LETTER_HEADERS, \
                f"dead letter of the {name} record has {list(headers)}"
            kept = [(key, value) for key, value in record.headers][len(DEAD_LETTER_HEADERS):]
            assert kept == list(_headers), f"dead letter of the {name} record lost its own headers: {kept}"
            assert headers["reason"].decode() == reason, \
                f"dead letter of the {name} record has reason {headers['reason']!r}, expected {reason}"
            assert headers["detail"], f"dead letter of the {name} record has an empty detail"
            assert record.value == value, f"dead letter of the {name} record changed the value bytes"
            assert record.key == _key(index), f"dead letter of the {name} record changed the key"

    events = await _task_events(settings)
    assert {"user-1", "user-2", "order-1", "order-2"} <= set(events), f"tasks missing: {sorted(events)}"
    debezium_rows = sorted(event["after"]["id"] for event in events.values() if event.get("table") == "orders")
    assert debezium_rows == [1, 2], f"Debezium tasks should be rows 1 and 2, got {debezium_rows}"
    assert len(events) == 6, f"only the good records should have tasks, got {sorted(events)}"
    skipped = _counter("taskservice_records_consumed_total",
                       {"topic": _topic(settings, "debezium"), "outcome": "skipped"}) - skipped_before
    assert skipped == 1, f"records consumed as skipped rose by {skipped}, expected 1 (the tombstone)"
