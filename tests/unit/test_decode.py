"""Decoding of record values into events or rejections."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskservice.consumers.decode import Event, Rejection, Skip, decode_record

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


def test_exh_ignores_headers() -> None:
    event = decode_record(VALID_EXH, [("ce_id", b"\xff"), ("content-type", b"text/plain")], "exh", 10_000)
    assert isinstance(event, Event)
    assert event.key == "exh:e1"


@pytest.mark.parametrize("topic_format", ["exh", "cloudevents"])
def test_null_value_rejected_outside_debezium(topic_format: str) -> None:
    result = decode_record(None, [], topic_format, 10_000)  # type: ignore[arg-type]
    assert isinstance(result, Rejection)
    assert result.reason == "no_value"


def test_cloudevents_topic_accepts_any_type() -> None:
    body = {"specversion": "1.0", "id": "g1", "source": "/billing", "type": "com.example.invoice.paid",
            "data": {"amount": 5}}
    event = decode_record(orjson.dumps(body), [], "cloudevents", 10_000)
    assert isinstance(event, Event)
    assert event.type == "com.example.invoice.paid"
    assert event.document == body


HEADER_NAMES = st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type",
                                "CE_ID", "ce_", "ce_data", "other"])
HEADER_VALUES = st.one_of(st.none(), st.binary(max_size=20), st.sampled_from([b"1.0", b"application/json",
                                                                               b"text/plain", b"x"]))


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=200), st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=10,
    ).map(orjson.dumps)),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6),
    topic_format=st.sampled_from(["exh", "cloudevents", "debezium"]),
)
def test_decoding_never_raises(value: bytes | None, headers: list, topic_format: str) -> None:
    result = decode_record(value, headers, topic_format, 150)  # type: ignore[arg-type]
    assert isinstance(result, (Event, Rejection, Skip))
