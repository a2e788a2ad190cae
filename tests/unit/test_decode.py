"""Decoding of record values into events or rejections."""

import orjson
import pytest

from taskservice.consumers.decode import Event, Rejection, decode_record

VALID_EXH = orjson.dumps({"id": "e1", "type": "user_deleted", "content": {"id": "u1"}, "creation_timestamp": 1})
VALID_DOCUMENT = orjson.dumps({
    "specversion": "1.0", "id": "c1", "source": "/data/v1/bp", "type": "document.created",
    "data": {"schemaId": "s1", "documentId": "d1", "data": {"systolic": 120}},
})


def test_exh_event_decodes() -> None:
    event = decode_record(VALID_EXH, (), "exh", 10_000)
    assert isinstance(event, Event)
    assert event.key == "exh:e1"
    assert event.type == "user_deleted"
    assert event.original["content"] == {"id": "u1"}


def test_cloudevent_identity_includes_source() -> None:
    event = decode_record(VALID_DOCUMENT, (), "cloudevents", 10_000)
    assert isinstance(event, Event)
    assert event.key == "ce:/data/v1/bp:c1"
    assert event.type == "document.created"


@pytest.mark.parametrize(
    ("value", "topic_format", "reason"),
    [
        (None, "exh", "no_value"),
        (b'{"event_id":"P1","table":"orders",', "exh", "invalid_json"),
        (b"\xff\xfe\x00", "exh", "not_utf8"),
        (b'{"event_id":"P3","table":42,"op":null}', "exh", "schema_mismatch"),
        (b"[1,2,3]", "exh", "not_an_object"),
        (b'{"id":"P5","type":"user_deleted","content":"a string"}', "exh", "schema_mismatch"),
        (b'"just a string"', "cloudevents", "not_an_object"),
        (VALID_EXH, "cloudevents", "schema_mismatch"),
        (b"x" * 2_000, "exh", "too_large"),
    ],
)
def test_bad_records_are_rejected(value: bytes | None, topic_format: str, reason: str) -> None:
    result = decode_record(value, (), topic_format, 1_000)  # type: ignore[arg-type]
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_transition_needs_statuses() -> None:
    body = orjson.loads(VALID_DOCUMENT)
    body["type"] = "document.transitioned"
    result = decode_record(orjson.dumps(body), (), "cloudevents", 10_000)
    assert isinstance(result, Rejection)
    assert "fromStatus" in result.detail
    body["data"]["fromStatus"] = "new"
    body["data"]["toStatus"] = "analyzed"
    assert isinstance(decode_record(orjson.dumps(body), (), "cloudevents", 10_000), Event)


def test_rejection_detail_names_field() -> None:
    result = decode_record(b'{"id": "x", "type": ""}', (), "exh", 10_000)
    assert isinstance(result, Rejection)
    assert "type" in result.detail
