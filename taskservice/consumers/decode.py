"""Decoding of Kafka record values into normalised events, by the topic's format.

A record that cannot become an event yields a Rejection with a reason code and a detail
that names what is wrong. Ingest sends it to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from taskservice.config import TopicFormat
from taskservice.schemas.events import DocumentChangeEvent, ExhEvent
from taskservice.schemas.results import DeadLetterReason


@dataclass(frozen=True, slots=True)
class Event:
    """An input event in the form dispatchers match, with the original body kept."""

    key: str                    # identity for exactly-once task creation
    event_id: str
    type: str
    time: datetime | None
    document: dict[str, Any]    # the normalised event: filters and paths read it, tasks get it as data.event
    original: dict[str, Any]    # the event as received, before normalisation


@dataclass(frozen=True, slots=True)
class Rejection:
    """The reason code and description of a record that could not be decoded."""

    reason: DeadLetterReason
    detail: str


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        location = ".".join(str(item) for item in error["loc"]) or "(root)"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - 3
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _parse_json(value: bytes) -> dict[str, Any] | Rejection:
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            return Rejection("not_utf8", f"value is not UTF-8 text: {utf8_error}")
        return Rejection("invalid_json", f"value is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return Rejection("not_an_object", f"value must be a JSON object, got {type(body).__name__}")
    return body


def _epoch_ms_to_datetime(value: int | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def decode_exh(body: dict[str, Any]) -> Event:
    """Validate an ExtraHorizon event; raises ValidationError."""
    event = ExhEvent.model_validate(body)
    return Event(
        key=f"exh:{event.id}",
        event_id=event.id,
        type=event.type,
        time=_epoch_ms_to_datetime(event.creation_timestamp),
        document=body,
        original=body,
    )


def decode_cloudevent(body: dict[str, Any]) -> Event:
    """Validate a document-change CloudEvent; raises ValidationError.

    CloudEvents ids are unique per source, so the identity combines both.
    """
    event = DocumentChangeEvent.model_validate(body)
    return Event(
        key=f"ce:{event.source}:{event.id}",
        event_id=event.id,
        type=event.type,
        time=event.time,
        document=body,
        original=body,
    )


_DECODERS = {"exh": decode_exh, "cloudevents": decode_cloudevent}


Headers = Sequence[tuple[str, bytes]]


def decode_record(
    value: bytes | None, headers: Headers, topic_format: TopicFormat, max_bytes: int
) -> Event | Rejection:
    """Turn one record into an Event, or into a Rejection that gives the reason.

    headers are the record headers as aiokafka returns them: (name, value bytes) pairs.
    """
    if value is None:
        return Rejection("no_value", "record has no value (a tombstone); events need a JSON object")
    if len(value) > max_bytes:
        return Rejection("too_large", f"value has {len(value)} bytes, more than the limit of {max_bytes}")
    body = _parse_json(value)
    if isinstance(body, Rejection):
        return body
    try:
        return _DECODERS[topic_format](body)
    except ValidationError as exc:
        return Rejection("schema_mismatch", f"not a valid {topic_format} event: {_summarise(exc)}")
