"""Decoding of Debezium change events, with and without the schema wrapper."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from taskservice.consumers.decode import Event, Rejection, Skip, decode_record

SOURCE = {
    "version": "2.7.0.Final", "connector": "postgresql", "name": "shop", "ts_ms": 1_798_804_800_000,
    "snapshot": "false", "db": "shop", "schema": "public", "table": "orders", "txId": 771, "lsn": 24_023_128,
}
CREATE = {
    "before": None,
    "after": {"id": 7, "status": "new", "total": 12.5},
    "source": SOURCE,
    "op": "c",
    "ts_ms": 1_798_804_800_120,
    "transaction": None,
}
UPDATE = {**CREATE, "op": "u", "before": {"id": 7, "status": "new", "total": 12.5},
          "after": {"id": 7, "status": "paid", "total": 12.5}, "source": {**SOURCE, "lsn": 24_023_200}}
DELETE = {**CREATE, "op": "d", "before": {"id": 7, "status": "paid", "total": 12.5}, "after": None,
          "source": {**SOURCE, "lsn": 24_023_300}}
MYSQL_SOURCE = {"connector": "mysql", "name": "shop", "ts_ms": 1_798_804_800_000, "db": "shop", "table": "orders",
                "server_id": 223344, "file": "mysql-bin.000003", "pos": 805, "row": 0}
SCHEMA = {"type": "struct", "name": "shop.public.orders.Envelope", "optional": False, "fields": []}


def decode(body: Any) -> Event | Rejection | Skip:
    value = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    return decode_record(value, [], "debezium", 100_000)


def test_create_normalised_document() -> None:
    event = decode(CREATE)
    assert isinstance(event, Event)
    assert event.type == "orders.created"
    assert event.key == f"debezium:{event.event_id}"
    assert len(event.event_id) == 64
    assert event.document == {
        "id": event.event_id,
        "type": "orders.created",
        "time": "2027-01-01T12:00:00.000Z",
        "op": "c",
        "db": "shop",
        "schema": "public",
        "table": "orders",
        "before": None,
        "after": CREATE["after"],
        "data": CREATE["after"],
        "source": SOURCE,
        "transaction": None,
        "ts_ms": 1_798_804_800_120,
    }
    assert event.original == CREATE
    assert event.time is not None and event.time.isoformat() == "2027-01-01T12:00:00+00:00"


@pytest.mark.parametrize(
    ("op", "verb", "data_from"),
    [("c", "created", "after"), ("u", "updated", "after"), ("r", "read", "after"), ("d", "deleted", "before")],
)
def test_operation_type_and_data(op: str, verb: str, data_from: str) -> None:
    body = {**UPDATE, "op": op}
    event = decode(body)
    assert isinstance(event, Event)
    assert event.type == f"orders.{verb}"
    assert event.document["op"] == op
    assert event.document["data"] == body[data_from]


def test_truncate_has_no_data() -> None:
    event = decode({**CREATE, "op": "t", "after": None})
    assert isinstance(event, Event)
    assert event.type == "orders.truncated"
    assert event.document["data"] is None


def test_delete_data_is_before() -> None:
    event = decode(DELETE)
    assert isinstance(event, Event)
    assert event.type == "orders.deleted"
    assert event.document["data"] == DELETE["before"]


def test_schema_wrapper_is_unwrapped() -> None:
    bare = decode(CREATE)
    wrapped = decode({"schema": SCHEMA, "payload": CREATE})
    assert isinstance(bare, Event) and isinstance(wrapped, Event)
    assert wrapped.document == bare.document
    assert wrapped.key == bare.key
    assert wrapped.original["schema"] == SCHEMA


def test_mysql_source_without_schema() -> None:
    event = decode({**CREATE, "source": MYSQL_SOURCE})
    assert isinstance(event, Event)
    assert event.document["schema"] is None
    assert event.document["source"]["file"] == "mysql-bin.000003"


def test_time_falls_back_to_connector_time() -> None:
    source = {key: value for key, value in SOURCE.items() if key != "ts_ms"}
    event = decode({**CREATE, "source": source})
    assert isinstance(event, Event)
    assert event.document["time"] == "2027-01-01T12:00:00.120Z"
    no_time = decode({key: value for key, value in {**CREATE, "source": source}.items() if key != "ts_ms"})
    assert isinstance(no_time, Event)
    assert no_time.time is None
    assert no_time.document["time"] is None


def test_identity_stable_across_key_order() -> None:
    reordered = orjson.dumps(dict(reversed(list(CREATE.items()))))
    first, second = decode(CREATE), decode(reordered)
    assert isinstance(first, Event) and isinstance(second, Event)
    assert first.key == second.key


def test_identity_ignores_processing_time() -> None:
    # A connector restart emits the same change again, processed at a later time.
    first = decode(CREATE)
    again = decode({**CREATE, "ts_ms": CREATE["ts_ms"] + 60_000, "ts_us": 1})
    assert isinstance(first, Event) and isinstance(again, Event)
    assert first.key == again.key


def test_identity_distinct_per_change() -> None:
    keys = set()
    for body in (CREATE, UPDATE, DELETE, {**CREATE, "source": {**SOURCE, "lsn": 1}}, {**CREATE, "op": "r"}):
        event = decode(body)
        assert isinstance(event, Event)
        keys.add(event.key)
    assert len(keys) == 5


@pytest.mark.parametrize("value", [None, b'{"schema": null, "payload": null}', b'{"payload": null}'])
def test_tombstones_are_skipped(value: bytes | None) -> None:
    result = decode_record(value, [], "debezium", 1_000)
    assert isinstance(result, Skip)
    assert "tombstone" in result.detail


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    target = changed
    for name in path[:-1]:
        target = target[name]
    del target[path[-1]]
    return changed


@pytest.mark.parametrize(
    ("body", "reason", "fragment"),
    [
        (_without(CREATE, "op"), "schema_mismatch", "op: Field required"),
        ({**CREATE, "op": "x"}, "schema_mismatch", "op"),
        ({**CREATE, "op": "m"}, "schema_mismatch", "op"),
        ({**CREATE, "op": None}, "schema_mismatch", "op"),
        ({**UPDATE, "after": None}, "schema_mismatch", "op 'u' (updated) needs after"),
        ({**CREATE, "after": None}, "schema_mismatch", "op 'c' (created) needs after"),
        ({**CREATE, "op": "r", "after": None}, "schema_mismatch", "needs after"),
        ({**DELETE, "before": None}, "schema_mismatch", "needs before"),
        ({**CREATE, "after": "not a row"}, "schema_mismatch", "after"),
        ({**CREATE, "before": [1, 2]}, "schema_mismatch", "before"),
        ({**CREATE, "source": "shop.orders"}, "schema_mismatch", "source"),
        (_without(CREATE, "source"), "schema_mismatch", "source: Field required"),
        (_without(CREATE, "source", "table"), "schema_mismatch", "source.table"),
        (_without(CREATE, "source", "db"), "schema_mismatch", "source.db"),
        ({**CREATE, "source": {**SOURCE, "table": 5}}, "schema_mismatch", "source.table"),
        ({**CREATE, "source": {**SOURCE, "ts_ms": "noon"}}, "schema_mismatch", "source.ts_ms"),
        ({**CREATE, "ts_ms": 1.5}, "schema_mismatch", "ts_ms"),
        ({**CREATE, "transaction": "tx-1"}, "schema_mismatch", "transaction"),
        ({"schema": SCHEMA, "payload": "not an object"}, "schema_mismatch", "payload"),
        ({"schema": SCHEMA, "payload": [CREATE]}, "schema_mismatch", "payload"),
        ({"schema": SCHEMA, "payload": _without(CREATE, "op")}, "schema_mismatch", "payload.op"),
        ({"schema": SCHEMA, "payload": CREATE, "extra": 1}, "schema_mismatch", "extra"),
        ({"schema": "struct", "payload": CREATE}, "schema_mismatch", "schema"),
        (b"[1, 2]", "not_an_object", "JSON object"),
        (b'{"op": "c", ', "invalid_json", "not valid JSON"),
        (b"\xff\xfe", "not_utf8", "UTF-8"),
    ],
)
def test_bad_change_events_are_rejected(body: Any, reason: str, fragment: str) -> None:
    result = decode(body)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert fragment in result.detail


def test_too_large_checked_before_parsing() -> None:
    result = decode_record(orjson.dumps(CREATE), [], "debezium", 100)
    assert isinstance(result, Rejection)
    assert result.reason == "too_large"
