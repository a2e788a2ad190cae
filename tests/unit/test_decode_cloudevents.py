"""Decoding of CloudEvents records in structured and binary content mode."""

from __future__ import annotations

import base64

import orjson
import pytest

from taskservice.consumers.decode import Event, Rejection, decode_record

ATTRIBUTES = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"order-1"),
    ("ce_source", b"/shop/orders"),
    ("ce_type", b"com.example.order.created"),
    ("ce_time", b"2027-01-01T12:00:00Z"),
]
JSON_DATA = [*ATTRIBUTES, ("content-type", b"application/json")]
STRUCTURED = {
    "specversion": "1.0", "id": "order-1", "source": "/shop/orders", "type": "com.example.order.created",
    "time": "2027-01-01T12:00:00Z", "datacontenttype": "application/json", "data": {"total": 12},
}
DOCUMENT_DATA = {"schemaId": "s1", "documentId": "d1", "data": {"systolic": 120}}


def decode(value: bytes | None, headers: list[tuple[str, bytes]]) -> Event | Rejection:
    result = decode_record(value, headers, "cloudevents", 10_000)
    assert not isinstance(result, Rejection) or result.detail, "a rejection needs a detail"
    return result  # type: ignore[return-value]


def without(name: str, headers: list[tuple[str, bytes]] = JSON_DATA) -> list[tuple[str, bytes]]:
    return [header for header in headers if header[0] != name]


def replaced(name: str, value: bytes, headers: list[tuple[str, bytes]] = JSON_DATA) -> list[tuple[str, bytes]]:
    return [*without(name, headers), (name, value)]


# Binary mode -------------------------------------------------------------------------------


def test_binary_event_normalises_to_structured() -> None:
    event = decode(b'{"total": 12}', JSON_DATA)
    assert isinstance(event, Event)
    assert event.document == STRUCTURED
    assert event.key == "ce:/shop/orders:order-1"
    assert event.event_id == "order-1"
    assert event.type == "com.example.order.created"
    assert event.time is not None and event.time.isoformat() == "2027-01-01T12:00:00+00:00"


def test_binary_and_structured_share_identity() -> None:
    binary = decode(b'{"total": 12}', JSON_DATA)
    structured = decode(orjson.dumps(STRUCTURED), [])
    assert isinstance(binary, Event) and isinstance(structured, Event)
    assert binary.key == structured.key
    assert binary.document == structured.document


def test_binary_original_keeps_headers() -> None:
    event = decode(b'{"total": 12}', JSON_DATA)
    assert isinstance(event, Event)
    assert event.original["headers"]["ce_id"] == "order-1"
    assert event.original["headers"]["content-type"] == "application/json"
    assert event.original["data"] == {"total": 12}


def test_binary_extensions_become_attributes() -> None:
    event = decode(b"{}", [*JSON_DATA, ("ce_traceparent", b"00-4bf9-00f0-01"), ("ce_subject", b"order-1"),
                           ("other", b"\xff not read")])
    assert isinstance(event, Event)
    assert event.document["traceparent"] == "00-4bf9-00f0-01"
    assert event.document["subject"] == "order-1"
    assert "other" not in event.document


def test_binary_header_names_ignore_case() -> None:
    headers = [(name.upper(), value) for name, value in JSON_DATA]
    event = decode(b"{}", headers)
    assert isinstance(event, Event)
    assert event.document["id"] == "order-1"
    assert event.document["datacontenttype"] == "application/json"


def test_binary_time_is_optional() -> None:
    event = decode(b"{}", without("ce_time"))
    assert isinstance(event, Event)
    assert event.time is None
    assert "time" not in event.document


@pytest.mark.parametrize(
    ("content_type", "value", "member", "expected"),
    [
        (None, b'{"total": 12}', "data", {"total": 12}),
        (b"application/json; charset=utf-8", b"[1, 2]", "data", [1, 2]),
        (b"application/vnd.shop.order+json", b'"just a string"', "data", "just a string"),
        (b"text/plain", "caf\u00e9".encode(), "data", "caf\u00e9"),
        (b"application/xml", b"<order/>", "data", "<order/>"),
        (b"application/csv; charset=UTF-8", b"a,b", "data", "a,b"),
        (b"application/octet-stream", b"\x00\xff", "data_base64", base64.b64encode(b"\x00\xff").decode()),
        (b"application/avro", b"\x02ab", "data_base64", base64.b64encode(b"\x02ab").decode()),
    ],
)
def test_binary_data_by_content_type(content_type: bytes | None, value: bytes, member: str,
                                     expected: object) -> None:
    headers = ATTRIBUTES if content_type is None else [*ATTRIBUTES, ("content-type", content_type)]
    event = decode(value, headers)
    assert isinstance(event, Event)
    assert event.document[member] == expected
    other = "data_base64" if member == "data" else "data"
    assert other not in event.document


def test_binary_without_value_has_no_data() -> None:
    event = decode(None, JSON_DATA)
    assert isinstance(event, Event)
    assert "data" not in event.document
    assert "data_base64" not in event.document


def test_binary_document_change_validated() -> None:
    headers = replaced("ce_type", b"document.created")
    event = decode(orjson.dumps(DOCUMENT_DATA), headers)
    assert isinstance(event, Event)
    assert event.type == "document.created"
    result = decode(orjson.dumps({"documentId": "d1"}), headers)
    assert isinstance(result, Rejection)
    assert result.reason == "schema_mismatch"
    assert "document-change" in result.detail
    assert "schemaId" in result.detail


@pytest.mark.parametrize(
    ("headers", "value", "reason", "fragment"),
    [
        (without("ce_id"), b"{}", "schema_mismatch", "ce_id"),
        (without("ce_source"), b"{}", "schema_mismatch", "ce_source"),
        (without("ce_type"), b"{}", "schema_mismatch", "ce_type"),
        (without("ce_specversion"), b"{}", "schema_mismatch", "no ce_specversion header"),
        (replaced("ce_specversion", b"0.3"), b"{}", "schema_mismatch", "ce_specversion"),
        (replaced("ce_id", b""), b"{}", "schema_mismatch", "ce_id"),
        (replaced("ce_time", b"yesterday"), b"{}", "schema_mismatch", "ce_time"),
        (replaced("ce_time", b"2027-01-01"), b"{}", "schema_mismatch", "RFC 3339"),
        (replaced("ce_time", b"2027-01-01T12:00:00"), b"{}", "schema_mismatch", "RFC 3339"),
        (replaced("ce_time", b"2027-13-01T12:00:00Z"), b"{}", "schema_mismatch", "ce_time"),
        (replaced("ce_id", b"\xffbad"), b"{}", "invalid_header", "ce_id"),
        (replaced("content-type", b"text/\xff"), b"{}", "invalid_header", "content-type"),
        ([*JSON_DATA, ("ce_id", b"order-2")], b"{}", "invalid_header", "more than once"),
        ([*JSON_DATA, ("ce_datacontenttype", b"text/plain")], b"{}", "invalid_header", "ce_datacontenttype"),
        ([*JSON_DATA, ("ce_data", b"{}")], b"{}", "invalid_header", "ce_data"),
        ([*JSON_DATA, ("ce_subject", None)], b"{}", "invalid_header", "no value"),
        (JSON_DATA, b'{"total": ', "invalid_json", "application/json"),
        (without("content-type"), b"plain words", "invalid_json", "implied"),
        (JSON_DATA, b"", "invalid_json", "not valid JSON"),
        (JSON_DATA, b'"\xff"', "not_utf8", "UTF-8"),
        (replaced("content-type", b"text/plain"), b"\xffcaf", "not_utf8", "text/plain"),
        (replaced("content-type", b"text/plain; charset=iso-8859-1"), b"caf", "unsupported_content_type",
         "iso-8859-1"),
    ],
)
def test_bad_binary_records_are_rejected(headers: list[tuple[str, bytes]], value: bytes, reason: str,
                                         fragment: str) -> None:
    result = decode(value, headers)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert fragment in result.detail


def test_binary_document_without_value_rejected() -> None:
    headers = replaced("ce_type", b"document.created", without("content-type"))
    result = decode(None, headers)
    assert isinstance(result, Rejection)
    assert result.reason == "schema_mismatch"
    assert "data (the record value)" in result.detail


# Structured mode ---------------------------------------------------------------------------


def test_structured_event_of_any_type() -> None:
    event = decode(orjson.dumps(STRUCTURED), [("content-type", b"application/cloudevents+json; charset=UTF-8")])
    assert isinstance(event, Event)
    assert event.document == STRUCTURED
    assert event.original == STRUCTURED
    assert event.type == "com.example.order.created"


def test_structured_wins_over_binary_headers() -> None:
    # Structured mode may repeat the attributes as ce_ headers; the value is the event.
    headers = [("content-type", b"application/cloudevents+json"), *replaced("ce_id", b"other", ATTRIBUTES)]
    event = decode(orjson.dumps(STRUCTURED), headers)
    assert isinstance(event, Event)
    assert event.event_id == "order-1"


def test_structured_base64_data() -> None:
    body = {**STRUCTURED, "datacontenttype": "application/octet-stream", "data_base64": "AAE="}
    del body["data"]
    event = decode(orjson.dumps(body), [])
    assert isinstance(event, Event)
    assert event.document["data_base64"] == "AAE="


@pytest.mark.parametrize(
    ("change", "reason", "fragment"),
    [
        ({"specversion": "0.3"}, "schema_mismatch", "specversion"),
        ({"time": "yesterday"}, "schema_mismatch", "time"),
        ({"time": 1_700_000_000}, "schema_mismatch", "RFC 3339"),
        ({"type": 5}, "schema_mismatch", "type"),
        ({"data_base64": "AAE="}, "schema_mismatch", "not both"),
        ({"data_base64": "not base64!"}, "schema_mismatch", "data_base64"),
        ({"type": "document.unknown"}, "schema_mismatch", "document-change"),
        ({"type": "document.created", "datacontenttype": "text/plain"}, "schema_mismatch", "datacontenttype"),
    ],
)
def test_bad_structured_events_are_rejected(change: dict, reason: str, fragment: str) -> None:
    result = decode(orjson.dumps({**STRUCTURED, **change}), [])
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert fragment in result.detail


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (None, [], "no_value"),
        (b"[1]", [], "not_an_object"),
        (b"{", [("content-type", b"application/cloudevents+json")], "invalid_json"),
        (orjson.dumps(STRUCTURED), [("content-type", b"application/cloudevents+avro")], "unsupported_content_type"),
        (orjson.dumps([STRUCTURED]), [("content-type", b"application/cloudevents-batch+json")],
         "unsupported_content_type"),
        (orjson.dumps(STRUCTURED), [("content-type", b"application/cloudevents+json"), ("ce_id", b"\xff")],
         "invalid_header"),
    ],
)
def test_bad_structured_records_are_rejected(value: bytes | None, headers: list[tuple[str, bytes]],
                                             reason: str) -> None:
    result = decode(value, headers)
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_document_change_with_json_charset() -> None:
    body = {**STRUCTURED, "type": "document.updated", "datacontenttype": "application/json; charset=utf-8",
            "data": DOCUMENT_DATA}
    event = decode(orjson.dumps(body), [])
    assert isinstance(event, Event)
    assert event.type == "document.updated"
